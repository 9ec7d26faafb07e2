// The next runs of many cron expressions as the TypeScript Monque computes them
// (getNextCronDate: CronExpressionParser.parse(expr, {currentDate}).next(), repeated).
// Input: {exprs: [...], refs: [iso...], n}. Output: {expr: {ok, runs: [[iso...] per ref]} or
// {ok: false, error}}. Run with TZ=UTC: cron-parser reads fields in the process's zone.
import { CronExpressionParser } from 'cron-parser';
import { emit, readInput } from './common.mjs';

const input = await readInput();
const out = {};
for (const expr of input.exprs) {
  try {
    const runs = input.refs.map((ref) => {
      let current = new Date(ref);
      const seq = [];
      for (let i = 0; i < input.n; i++) {
        current = CronExpressionParser.parse(expr, { currentDate: current }).next().toDate();
        seq.push(current.toISOString());
      }
      return seq;
    });
    out[expr] = { ok: true, runs };
  } catch (error) {
    out[expr] = { ok: false, error: String(error?.message ?? error) };
  }
}
emit(out); // no process.exit(): it would cut a large write to a pipe
