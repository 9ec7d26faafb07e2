// A long-running TS Monque worker:
// {uri, db, options?: {pollInterval, lockTimeout, heartbeatInterval, instanceId, maxRetries,
//  baseRetryInterval, workerConcurrency, shutdownTimeout, ...}, behaviours: {jobName: spec}}.
//
// spec: "ok"; "fail" or "fail:<message>" (throws Error(message)); "sleep:<ms>" (then ok).
// Every handler run is recorded in the `interop_runs` collection of the same database:
// inserted at start {jobId, name, side: "ts", pid, instanceId, startedAt, failCount,
// dataEjson} and updated at the end {endedAt, outcome: "ok" | "fail", error?}.
//
// stdout, one canonical-EJSON line each: {"ready": true, pid, instanceId} after start(), then
// {"event": "<monque event>", ...} for job:start/complete/fail/error, stale:recovered and
// changestream:*; {"stopped": true} after a graceful stop (SIGTERM or SIGINT).
import { Monque, connect, emit, errorInfo, monqueOptions, readInput, toEjson } from './common.mjs';

function behaviour(spec) {
  if (spec === 'ok') {
    return async () => {};
  }
  if (spec === 'fail' || spec.startsWith('fail:')) {
    const message = spec.length > 5 ? spec.slice(5) : 'interop failure';
    return async () => {
      throw new Error(message);
    };
  }
  if (spec.startsWith('sleep:')) {
    const ms = Number(spec.slice(6));
    if (!Number.isFinite(ms) || ms < 0) {
      throw new Error(`bad sleep in ${JSON.stringify(spec)}`);
    }
    return () => new Promise((resolve) => setTimeout(resolve, ms));
  }
  throw new Error(`unknown behaviour ${JSON.stringify(spec)}`);
}

const input = await readInput();
const { client, db } = await connect(input);
const options = monqueOptions(input.options);
const monque = new Monque(db, options);
const instanceId = monque.options.schedulerInstanceId;
const runs = db.collection('interop_runs');

for (const [name, spec] of Object.entries(input.behaviours ?? {})) {
  const act = behaviour(spec);
  monque.register(name, async (job) => {
    const started = await runs.insertOne({
      jobId: job._id,
      name: job.name,
      side: 'ts',
      pid: process.pid,
      instanceId,
      startedAt: new Date(),
      failCount: job.failCount,
      dataEjson: toEjson(job.data),
    });
    try {
      await act(job);
    } catch (error) {
      await runs.updateOne(
        { _id: started.insertedId },
        { $set: { endedAt: new Date(), outcome: 'fail', error: String(error?.message) } },
      );
      throw error;
    }
    await runs.updateOne(
      { _id: started.insertedId },
      { $set: { endedAt: new Date(), outcome: 'ok' } },
    );
  });
}

monque.on('job:start', (job) => emit({ event: 'job:start', jobId: job._id, name: job.name }));
monque.on('job:complete', ({ job, duration }) =>
  emit({ event: 'job:complete', jobId: job._id, status: job.status, duration }),
);
monque.on('job:fail', ({ job, error, willRetry }) =>
  emit({ event: 'job:fail', jobId: job._id, error: error.message, willRetry }),
);
monque.on('job:error', ({ error, job }) =>
  emit({ event: 'job:error', error: errorInfo(error), jobId: job?._id ?? null }),
);
monque.on('stale:recovered', ({ count }) => emit({ event: 'stale:recovered', count }));
monque.on('changestream:connected', () => emit({ event: 'changestream:connected' }));
monque.on('changestream:fallback', ({ reason }) =>
  emit({ event: 'changestream:fallback', reason }),
);

let stopping = false;
async function shutdown() {
  if (stopping) {
    return;
  }
  stopping = true;
  try {
    await monque.stop();
    emit({ stopped: true });
  } finally {
    await client.close();
    process.exit(0);
  }
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

await monque.initialize();
monque.start();
emit({ ready: true, pid: process.pid, instanceId });
