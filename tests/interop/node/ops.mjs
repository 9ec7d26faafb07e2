// Management operations of TS Monque, run in order:
// {uri, db, options?, initialize?: true, ops: [{op, ...args}]} -> {results: [{ok, value | error}]}.
//
// ops: getJob {id}, findRaw {id} (the stored document, every field), getJobs {filter},
// retryJob {id}, cancelJob {id}, rescheduleJob {id, runAt}, deleteJob {id},
// enqueue {name, dataEjson?, uniqueKey?, runAt?, delayMs?}, now {name, dataEjson?},
// schedule {cron, name, dataEjson?, uniqueKey?}, getQueueStats {name?},
// validateJobName {name}, validateUniqueKey {key}, validateCron {expression},
// nextCronDate {expression, currentDate?}, indexes {}.
// A library error (JobStateError, InvalidCronError...) is a result {ok: false, error: {name,
// message}}; anything else fails the script.
import {
  Monque,
  ObjectId,
  connect,
  enqueueOptions,
  errorInfo,
  fromEjson,
  monqueOptions,
  runScript,
  toDate,
} from './common.mjs';
import {
  MonqueError,
  getNextCronDate,
  validateCronExpression,
  validateJobName,
  validateUniqueKey,
} from '../dist/index.mjs';

function oid(value) {
  return value instanceof ObjectId ? value : new ObjectId(String(value));
}

async function apply(monque, db, collectionName, spec) {
  switch (spec.op) {
    case 'getJob':
      return monque.getJob(oid(spec.id));
    case 'findRaw':
      return db.collection(collectionName).findOne({ _id: oid(spec.id) });
    case 'getJobs':
      return monque.getJobs(spec.filter ?? {});
    case 'retryJob':
      return monque.retryJob(String(spec.id));
    case 'cancelJob':
      return monque.cancelJob(String(spec.id));
    case 'rescheduleJob':
      return monque.rescheduleJob(String(spec.id), toDate(spec.runAt));
    case 'deleteJob':
      return monque.deleteJob(String(spec.id));
    case 'enqueue':
      return monque.enqueue(spec.name, fromEjson(spec.dataEjson), enqueueOptions(spec));
    case 'now':
      return monque.now(spec.name, fromEjson(spec.dataEjson));
    case 'schedule': {
      const options = spec.uniqueKey === undefined ? {} : { uniqueKey: spec.uniqueKey };
      return monque.schedule(spec.cron, spec.name, fromEjson(spec.dataEjson), options);
    }
    case 'getQueueStats':
      return monque.getQueueStats(spec.name === undefined ? undefined : { name: spec.name });
    case 'validateJobName':
      validateJobName(spec.name);
      return true;
    case 'validateUniqueKey':
      validateUniqueKey(spec.key);
      return true;
    case 'validateCron':
      validateCronExpression(spec.expression);
      return true;
    case 'nextCronDate':
      return getNextCronDate(spec.expression, toDate(spec.currentDate));
    case 'indexes':
      return db.collection(collectionName).indexes();
    default:
      throw new Error(`unknown op ${JSON.stringify(spec.op)}`);
  }
}

await runScript(async (input) => {
  const { client, db } = await connect(input);
  try {
    const options = monqueOptions(input.options);
    const monque = new Monque(db, options);
    if (input.initialize !== false) {
      await monque.initialize();
    }
    const collectionName = options.collectionName ?? 'monque_jobs';
    const results = [];
    for (const spec of input.ops ?? []) {
      try {
        const value = await apply(monque, db, collectionName, spec);
        results.push({ ok: true, value: value === undefined ? null : value });
      } catch (error) {
        if (!(error instanceof MonqueError)) {
          throw error;
        }
        results.push({ ok: false, error: errorInfo(error) });
      }
    }
    return { results };
  } finally {
    await client.close();
  }
});
