/**
 * npm run chaos -- --seed N --minutes M --pg 17|18 [--engine sql|builtin] [--logs DIR]
 *
 * The randomized fault schedule and its checker (bench/chaos/run.ts). Prints the schedule as
 * it runs, then one line:
 *   RESULT chaos seed=N pg=V minutes=M operations=… faults=… promotions=… rows=… violations=… no=… errors=…
 * A violation prints the seed and the schedule, so that it replays; the exit code is 1.
 */
import { numberOption, option } from '../scripts/args.js';
import type { Major } from '../test/support/binaries.js';
import { runChaos } from './chaos/run.js';

const argv = process.argv.slice(2);
const seed = numberOption(argv, 'seed') ?? Math.floor(Math.random() * 2 ** 31);
const minutes = numberOption(argv, 'minutes') ?? 2;
const pg = option(argv, 'pg') ?? '17';
if (pg !== '17' && pg !== '18') {
  process.stderr.write(`--pg needs 17 or 18, got "${pg}"\n`);
  process.exit(2);
}
const engine = option(argv, 'engine') ?? 'sql';
if (engine !== 'sql' && engine !== 'builtin') {
  process.stderr.write(`--engine needs sql or builtin, got "${engine}"\n`);
  process.exit(2);
}
const log = (line: string) => process.stderr.write(`${line}\n`);
log(`chaos: seed ${seed}, ${minutes} min, PostgreSQL ${pg}, SLOTSYNC_ENGINE=${engine}`);
const logs = option(argv, 'logs');
const result = await runChaos({ seed, minutes, major: Number(pg) as Major, log, engine, logs });
const no = Object.values(result.no).reduce((a, b) => a + b, 0);
for (const [reason, count] of Object.entries(result.no)) log(`no (${count}×): ${reason}`);
for (const error of result.errors) log(`clear error: ${error}`);
if (result.violations.length > 0) {
  log(
    `\nVIOLATIONS (replay: npm run chaos -- --seed ${seed} --minutes ${minutes} --pg ${pg} --engine ${engine}):`,
  );
  for (const v of result.violations) log(`  ${v}`);
  log(`schedule:\n  ${result.schedule.join('\n  ')}`);
}
process.stdout.write(
  `RESULT chaos seed=${seed} pg=${pg} engine=${engine} minutes=${minutes} operations=${result.operations} faults=${result.faults} promotions=${result.promotions} rows=${result.rows} violations=${result.violations.length} no=${no} errors=${result.errors.length} stalled=${result.stalled}\n`,
);
process.exit(result.violations.length > 0 ? 1 : 0);
