/**
 * What slotsync holds on the servers, against real PostgreSQL 17 and 18: the standby's
 * connections stay within one budget whatever the number of databases, and a stop cancels
 * the statements in flight instead of waiting for them.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { StandbyPools } from '../../src/db/standby-pools.js';
import { runCycle } from '../../src/engine/cycle.js';
import { createEngine, standbyBudget } from '../../src/engine/engine.js';
import { NODE_MARKER_PREFIX } from '../../src/sync/names.js';
import {
  createPrimarySlot,
  dropEverySlot,
  type Harness,
  holdConsistentPoint,
  startHarness,
  waitFor,
} from '../helpers/harness.js';
import { startService } from '../helpers/service.js';
import { tempDir, testConfig, testLogger } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';

const DATABASES = ['budget_a', 'budget_b', 'budget_c'];

for (const major of MAJORS) {
  describe(`connections on PostgreSQL ${major}`, () => {
    let h: Harness;
    before(async () => {
      h = await startHarness({ major });
      for (const database of DATABASES) await h.cluster.primary.sql(`CREATE DATABASE ${database}`);
    });
    after(async () => {
      await h?.close();
    });

    it('the standby connections of copies in three databases stay within one budget (2 × SLOTSYNC_CONCURRENCY + 2)', async () => {
      await dropEverySlot(h.cluster);
      for (const database of DATABASES) {
        for (const n of [1, 2, 3]) {
          await createPrimarySlot(h.cluster, `${database}_${n}`, { database });
        }
      }
      await h.cluster.waitForReplay();
      const stateDir = await tempDir('budget');
      const engine = await createEngine(
        testConfig(h.cluster, stateDir, { SLOTSYNC_CONCURRENCY: '1' }),
        testLogger(),
      );
      const budget = standbyBudget(1);
      // One session of its own, one query at a time: a sampler that opened a connection
      // every 20 ms piled them up on a busy machine (CI) until the standby refused slotsync.
      let most = 0;
      let samples = 0;
      let sampling = true;
      const sampler = h.cluster.standby.client();
      await sampler.connect();
      const sample = (async () => {
        while (sampling) {
          const { rows } = await sampler.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'slotsync-standby'`,
          );
          most = Math.max(most, rows[0]?.n ?? 0);
          samples += 1;
          await delay(20);
        }
      })().catch(() => {
        sampling = false;
      });
      try {
        await waitFor(
          'nine copies sync-ready',
          async () => {
            const result = await runCycle(engine.deps);
            if (result.report.slots.filter((s) => s.state === 'sync_ready').length === 9)
              return true;
            // The subscribers move on: a copy is ready once its remote passes where it began.
            for (const database of DATABASES) {
              await h.cluster.primary.sql(
                `SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn())
                 FROM pg_replication_slots WHERE database = current_database()`,
                [],
                database,
              );
            }
            await h.cluster.waitForReplay();
            return false;
          },
          90_000,
        );
        const { open, peak } = engine.deps.standby.size;
        assert.ok(peak <= budget, `at most ${budget} open at once, saw ${peak}`);
        assert.ok(open <= budget);
        assert.ok(peak >= 2, 'copies were made in parallel');
        const [row] = await h.cluster.standby.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'slotsync-standby'`,
        );
        assert.ok((row?.n ?? 0) <= budget, `the standby sees ${row?.n} sessions`);
        assert.ok(samples > 0, 'the sessions were sampled during the sync');
        assert.ok(most <= budget, `sampled during the sync: ${most} sessions, budget ${budget}`);
      } finally {
        sampling = false;
        await sample;
        await sampler.end().catch(() => undefined);
        await engine.close();
        await rm(stateDir, { recursive: true, force: true });
        await dropEverySlot(h.cluster);
      }
    });

    it('with the budget in use a statement waits for a connection: past SLOTSYNC_CONNECT_TIMEOUT_MS it fails clearly, within it it is served', async () => {
      const pools = new StandbyPools({
        url: h.cluster.standby.url(),
        budget: 1,
        statementTimeoutMs: 10_000,
        createTimeoutMs: 10_000,
        connectTimeoutMs: 2_000,
        logger: testLogger(),
      });
      try {
        // The only connection is opened first, so the times below do not include a login
        // (slow on a busy machine).
        await pools.main.query('SELECT 1');
        const busy = pools.main.query('SELECT pg_sleep(3)');
        // Waits 2 s for the only connection, then gives up.
        await assert.rejects(
          pools.main.query('SELECT 1'),
          /timeout exceeded when trying to connect/,
        );
        // Waits too; the connection frees at 3 s, before this one's deadline (4 s).
        const served = await pools.main.query<{ n: number }>('SELECT 2 AS n');
        assert.equal(served.rows[0]?.n, 2);
        await busy;
        assert.equal(pools.size.peak, 1);
      } finally {
        await pools.end();
      }
    });

    it('a stop cancels a copy creation in flight instead of waiting for its timeout; nothing is left half-made', {
      timeout: 60_000,
    }, async (t) => {
      await dropEverySlot(h.cluster);
      await createPrimarySlot(h.cluster, 'held_creation', { plugin: 'test_decoding' });
      const hold = await holdConsistentPoint(h.cluster, 'hold_creation');
      t.after(() => hold.commit().catch(() => undefined));
      await h.cluster.waitForReplay();
      const s = await startService(h.cluster, {
        SLOTSYNC_WORKER: 'on',
        // Far beyond the test's timeout: only a cancel ends the creation in time.
        SLOTSYNC_CREATE_TIMEOUT_MS: '600000',
      });
      const creating = `SELECT pid FROM pg_stat_activity WHERE application_name = 'slotsync-standby'
          AND query LIKE '%pg_create_logical_replication_slot%' AND state = 'active'`;
      await waitFor('the worker is inside the creation', async () => {
        return (await h.cluster.standby.sql(creating)).length > 0;
      });
      await s.close();
      assert.deepEqual(await h.cluster.standby.sql(creating), [], 'no creation left running');
      const slots = await h.cluster.standby.sql(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name NOT LIKE '${NODE_MARKER_PREFIX}%'`,
      );
      assert.deepEqual(slots, [], 'the cancelled creation left no slot');
      await hold.commit();
      await dropEverySlot(h.cluster);
    });
  });
}
