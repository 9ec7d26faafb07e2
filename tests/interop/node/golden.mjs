// Writes one document of each status the way TS Monque stores it, by running the library:
// {uri, db} (a fresh database) -> {docs: {<file stem>: <stored document>}, indexes: [...]}.
// `python -m tests.interop.regenerate_golden` runs it and writes tests/interop/golden/.
import { BSON, Monque, connect, runScript } from './common.mjs';

const { Int32, Long, Double } = BSON;

/** The job data of every golden document (plus a `case` field naming the file). */
export function payload(name) {
  return {
    case: name,
    text: 'golden ✓ 漢字 🚀 émoji',
    int32: new Int32(42),
    int64: Long.fromString('9007199254740993'),
    double: new Double(2.5),
    flag: true,
    nothing: null,
    when: new Date('2024-01-02T03:04:05.678Z'),
    nested: { list: [new Int32(1), 'two', { three: new Int32(3) }], empty: {} },
  };
}

const INSTANCE = 'golden-ts-worker';
const DELAYED_RUN_AT = new Date('2099-01-01T00:00:00.000Z');

async function waitFor(what, probe, timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) {
      return value;
    }
    if (Date.now() > end) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function gate() {
  let open;
  const promise = new Promise((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

await runScript(async (input) => {
  const { client, db } = await connect(input);
  const jobs = db.collection('monque_jobs');
  const byId = (id) => jobs.findOne({ _id: id });
  const statusOf = async (id) => (await byId(id))?.status;
  try {
    const admin = new Monque(db, {});
    await admin.initialize();
    const ids = {};

    // Pending documents nobody works on.
    ids['pending'] = (await admin.enqueue('golden-pending', payload('pending')))._id;
    ids['pending-delayed'] = (
      await admin.enqueue('golden-delayed', payload('pending-delayed'), { runAt: DELAYED_RUN_AT })
    )._id;
    ids['pending-unique'] = (
      await admin.enqueue('golden-unique', payload('pending-unique'), {
        uniqueKey: 'golden-unique-key',
      })
    )._id;
    ids['pending-cron'] = (
      await admin.schedule('*/5 * * * *', 'golden-cron', payload('pending-cron'))
    )._id;
    ids['cancelled'] = (await admin.enqueue('golden-cancelled', payload('cancelled')))._id;
    await admin.cancelJob(ids['cancelled'].toString());

    // Finished documents: a worker completes one and fails two for good (3 attempts).
    const finisher = new Monque(db, {
      schedulerInstanceId: INSTANCE,
      pollInterval: 50,
      heartbeatInterval: 1000,
      maxRetries: 3,
      baseRetryInterval: 10,
    });
    await finisher.initialize();
    finisher.register('golden-completed', async () => {});
    const fail = async () => {
      throw new Error('golden failure: boom ✗');
    };
    finisher.register('golden-failed', fail);
    finisher.register('golden-retried', fail);
    ids['completed'] = (await admin.enqueue('golden-completed', payload('completed')))._id;
    ids['failed'] = (await admin.enqueue('golden-failed', payload('failed')))._id;
    ids['pending-retried'] = (
      await admin.enqueue('golden-retried', payload('pending-retried'))
    )._id;
    finisher.start();
    await waitFor('completed', async () => (await statusOf(ids['completed'])) === 'completed');
    await waitFor('failed', async () => (await statusOf(ids['failed'])) === 'failed');
    await waitFor('retried', async () => (await statusOf(ids['pending-retried'])) === 'failed');
    await finisher.stop();
    // A failed job retried through the API: pending again, fresh attempts.
    await admin.retryJob(ids['pending-retried'].toString());

    // Running documents: held by a worker (one slot per name) until released.
    const holder = new Monque(db, {
      schedulerInstanceId: INSTANCE,
      pollInterval: 50,
      heartbeatInterval: 500,
    });
    await holder.initialize();
    const release = gate();
    holder.register('golden-processing', () => release.promise, { concurrency: 1 });
    holder.register('golden-recovered', () => release.promise, { concurrency: 1 });
    ids['processing'] = (await admin.enqueue('golden-processing', payload('processing')))._id;
    ids['pending-recovered'] = (
      await admin.enqueue('golden-recovered', payload('pending-recovered'))
    )._id;
    holder.start();
    // Wait for a heartbeat after the claim: lastHeartbeat moves, lockedAt does not.
    const processing = await waitFor('a heartbeat', async () => {
      const doc = await byId(ids['processing']);
      const held = doc?.status === 'processing' && doc.lastHeartbeat > doc.lockedAt;
      return held ? doc : null;
    });
    await waitFor('recovered claim', async () => {
      return (await statusOf(ids['pending-recovered'])) === 'processing';
    });
    // Another instance starting with a lock timeout shorter than the claims' age recovers
    // every processing job (recovery only runs in initialize()).
    await new Promise((resolve) => setTimeout(resolve, 20));
    const recoverer = new Monque(db, { lockTimeout: 10 });
    await recoverer.initialize();
    const recovered = await byId(ids['pending-recovered']);
    const stopping = holder.stop();
    release.open();
    await stopping;

    const docs = {};
    for (const [stem, id] of Object.entries(ids)) {
      docs[stem] = await byId(id);
    }
    docs['processing'] = processing;
    docs['pending-recovered'] = recovered;
    const indexes = await jobs.indexes();
    return { docs, indexes };
  } finally {
    await client.close();
  }
});
