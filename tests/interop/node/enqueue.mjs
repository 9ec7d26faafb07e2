// Enqueue jobs with TS Monque: {uri, db, options?, jobs: [{name, dataEjson?, uniqueKey?,
// runAt? (ISO or epoch ms), delayMs?, now?: true}], parallel?: true (all calls at once)}
// -> {ids: [ObjectId], jobs: [PersistedJob]} in the order of `jobs`.
import { Monque, connect, enqueueOptions, fromEjson, monqueOptions, runScript } from './common.mjs';

await runScript(async (input) => {
  const { client, db } = await connect(input);
  try {
    const monque = new Monque(db, monqueOptions(input.options));
    await monque.initialize();
    const one = (spec) => {
      const data = fromEjson(spec.dataEjson);
      return spec.now
        ? monque.now(spec.name, data)
        : monque.enqueue(spec.name, data, enqueueOptions(spec));
    };
    const specs = input.jobs ?? [];
    let jobs = [];
    if (input.parallel) {
      jobs = await Promise.all(specs.map(one));
    } else {
      for (const spec of specs) {
        jobs.push(await one(spec));
      }
    }
    return { ids: jobs.map((job) => job._id), jobs };
  } finally {
    await client.close();
  }
});
