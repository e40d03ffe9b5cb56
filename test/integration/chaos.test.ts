/**
 * The chaos schedule in CI: a fixed seed, a short schedule on PostgreSQL 17 and 18 (faults
 * drawn from every class, and always a final failover onto what `slotsync candidates`
 * names once the gate says yes). The checker must find no violation; `npm run chaos` runs
 * longer schedules (docs/reliability.md).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runChaos } from '../../bench/chaos/run.js';
import { MAJORS } from '../support/binaries.js';

const SEED = 20261206;

for (const major of MAJORS) {
  describe(`chaos on PostgreSQL ${major}`, () => {
    it(`seed ${SEED}, 0.75 minutes: every promotion made on a "safe" loses nothing`, async () => {
      const lines: string[] = [];
      const result = await runChaos({
        seed: SEED,
        minutes: 0.75,
        major,
        log: (line) => lines.push(line),
      });
      const context = `${lines.join('\n')}\nviolations: ${result.violations.join('; ')}`;
      assert.deepEqual(result.violations, [], context);
      assert.ok(result.operations >= 5, context);
      assert.ok(result.rows > 0, context);
      // The final failover either promoted (and was checked) or found no safe candidate and
      // said why: never silent.
      assert.ok(result.promotions + Object.keys(result.no).length > 0, context);
    });
  });
}
