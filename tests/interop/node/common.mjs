// Shared helpers of the interop scripts. The harness copies this folder into a prepared copy
// of the TypeScript build (`<copy>/interop/`), so `mongodb` resolves from `<copy>/node_modules`
// and the library is `<copy>/dist/index.mjs`.
//
// Protocol: the input is one plain JSON document on stdin (uri, db, and script arguments).
// BSON-typed values (job data) travel inside it as canonical extended JSON strings
// (`dataEjson`), decoded with `EJSON.parse(text, { relaxed: false })` so int64, dates, doubles
// and nested documents keep their exact BSON types. Output is one line (or one line per event
// for long-running scripts) of canonical extended JSON on stdout.
import { BSON, MongoClient, ObjectId } from 'mongodb';
import { Monque } from '../dist/index.mjs';

export const { EJSON } = BSON;
export { BSON, Monque, ObjectId };

export async function readInput() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  return text ? JSON.parse(text) : {};
}

/** Decode a canonical extended JSON string (undefined stays undefined). */
export function fromEjson(text) {
  if (text === undefined || text === null) {
    return undefined;
  }
  return EJSON.parse(text, { relaxed: false });
}

/** Canonical extended JSON of any value (undefined becomes null). */
export function toEjson(value) {
  return EJSON.stringify(value === undefined ? null : value, { relaxed: false });
}

/** Print one output line. */
export function emit(value) {
  process.stdout.write(`${toEjson(value)}\n`);
}

export async function connect(input) {
  if (!input.uri || !input.db) {
    throw new Error('input needs "uri" and "db"');
  }
  const client = new MongoClient(input.uri, { serverSelectionTimeoutMS: 15000 });
  await client.connect();
  return { client, db: client.db(input.db) };
}

/** Monque constructor options from the harness' names (instanceId is schedulerInstanceId). */
export function monqueOptions(options = {}) {
  const result = { ...options };
  if (result.instanceId !== undefined) {
    result.schedulerInstanceId = result.instanceId;
    delete result.instanceId;
  }
  return result;
}

export function errorInfo(error) {
  const info = { name: error?.name ?? 'Error', message: String(error?.message ?? error) };
  if (error?.currentStatus !== undefined) {
    info.currentStatus = error.currentStatus;
  }
  return info;
}

/** A Date from an ISO string, epoch milliseconds, or undefined. */
export function toDate(value) {
  if (value === undefined || value === null) {
    return undefined;
  }
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) {
    throw new Error(`not a date: ${JSON.stringify(value)}`);
  }
  return date;
}

/** Enqueue options of TS Monque from one job spec of the harness. */
export function enqueueOptions(spec) {
  const options = {};
  if (spec.uniqueKey !== undefined) {
    options.uniqueKey = spec.uniqueKey;
  }
  if (spec.priority !== undefined) {
    throw new Error('@monque/core 1.10.1 has no job priority');
  }
  if (spec.runAt !== undefined && spec.delayMs !== undefined) {
    throw new Error('pass runAt or delayMs, not both');
  }
  if (spec.runAt !== undefined) {
    options.runAt = toDate(spec.runAt);
  }
  if (spec.delayMs !== undefined) {
    // TS Monque has no delay option: the delay is turned into runAt here.
    options.runAt = new Date(Date.now() + spec.delayMs);
  }
  return options;
}

/**
 * Run `main` (async, gets the input), print its result, exit non-zero on an error.
 *
 * Exits explicitly once the output is flushed: TS Monque's stop() leaves its shutdownTimeout
 * timer (30 s by default) running after the jobs drained, which would keep Node alive.
 */
export async function runScript(main) {
  let code = 0;
  try {
    const input = await readInput();
    const result = await main(input);
    emit(result);
  } catch (error) {
    process.stderr.write(`${error?.stack ?? error}\n`);
    code = 1;
  }
  process.stdout.write('', () => process.exit(code));
}
