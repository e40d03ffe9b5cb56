/**
 * `slotsync sync --once` against real servers: setup validation with slotsync.c's messages,
 * configuration errors, and kill -9 in the middle of cycles.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runCli, spawnCli } from '../helpers/cli.js';
import {
  consume,
  createPrimarySlot,
  dropRemotesAndSync,
  type Harness,
  startHarness,
  waitFor,
  writeRows,
} from '../helpers/harness.js';
import { MAJORS } from '../support/binaries.js';
import { unownedCopies } from '../support/invariants.js';

const SECRET = 'pw-that-must-not-leak';

for (const major of MAJORS) {
  describe(`slotsync sync --once on PostgreSQL ${major}`, () => {
    let h: Harness;
    let env: Record<string, string>;
    before(async () => {
      h = await startHarness({ major });
      env = {
        SLOTSYNC_PRIMARY_URL: h.cluster.primary.url('postgres', SECRET),
        SLOTSYNC_STANDBY_URL: h.cluster.standby.url('postgres', SECRET),
        SLOTSYNC_STATE_DIR: h.stateDir,
      };
    });
    after(async () => {
      await h?.close();
    });

    async function standbySetting(name: string, value: string | null): Promise<void> {
      if (value === null) await h.cluster.standby.sql(`ALTER SYSTEM RESET ${name}`);
      else await h.cluster.standby.sql(`ALTER SYSTEM SET ${name} = '${value}'`);
      await h.cluster.standby.sql('SELECT pg_reload_conf()');
      await waitFor(`${name} reloaded`, async () => {
        const [row] = await h.cluster.standby.sql<{ v: string }>(
          `SELECT current_setting('${name}') AS v`,
        );
        return value === null ? true : row?.v === value;
      });
    }

    async function expectRefusal(
      pattern: RegExp,
      extraEnv: Record<string, string> = {},
      exitCode = 1,
    ) {
      const result = await runCli(['sync', '--once'], { ...env, ...extraEnv });
      assert.equal(result.code, exitCode, result.stderr);
      assert.match(result.stderr, pattern);
      assert.doesNotMatch(result.stderr + result.stdout, new RegExp(SECRET));
      assert.equal(result.stdout, '');
    }

    it('runs one cycle and prints the report as JSON', async () => {
      await createPrimarySlot(h.cluster, 'cli_slot', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      const result = await runCli(['sync', '--once'], env);
      assert.equal(result.code, 0, result.stderr);
      const report = JSON.parse(result.stdout);
      assert.equal(report.ok, true);
      assert.equal(typeof report.durationMs, 'number');
      assert.equal(report.updated, true);
      assert.deepEqual(report.slots, [
        { name: 'cli_slot', action: 'created', state: 'temporary', reason: null },
      ]);
      const registry = JSON.parse(await readFile(join(h.stateDir, 'registry.json'), 'utf8'));
      assert.equal(registry.slots[0].name, 'cli_slot');
      await dropRemotesAndSync(h);
    });

    it('refuses a source that is itself a standby', async () => {
      await expectRefusal(/cannot synchronize replication slots from a standby server/, {
        SLOTSYNC_PRIMARY_URL: h.cluster.standby.url('postgres', SECRET),
      });
    });

    it('refuses missing hot_standby_feedback, primary_slot_name, or a physical slot that does not exist', async () => {
      await standbySetting('hot_standby_feedback', 'off');
      try {
        await expectRefusal(
          /replication slot synchronization requires "hot_standby_feedback" to be enabled/,
        );
      } finally {
        await standbySetting('hot_standby_feedback', null);
      }
      await standbySetting('primary_slot_name', '');
      try {
        await expectRefusal(
          /replication slot synchronization requires "primary_slot_name" to be set/,
        );
      } finally {
        await standbySetting('primary_slot_name', null);
      }
      await standbySetting('primary_slot_name', 'no_such_slot');
      try {
        await expectRefusal(
          /replication slot "no_such_slot" specified by "primary_slot_name" does not exist on primary server/,
        );
      } finally {
        await standbySetting('primary_slot_name', null);
      }
    });

    it("refuses to run beside PostgreSQL's own worker (sync_replication_slots = on)", async () => {
      await standbySetting('sync_replication_slots', 'on');
      try {
        await expectRefusal(/sync_replication_slots/);
      } finally {
        await standbySetting('sync_replication_slots', null);
      }
    });

    it('names the variable of a URL without a database or of a server it cannot reach', async () => {
      const noDb = h.cluster.primary.url('postgres', SECRET).replace(/\/postgres$/, '');
      await expectRefusal(
        /SLOTSYNC_PRIMARY_URL must name a database: replication slot synchronization requires "dbname"/,
        { SLOTSYNC_PRIMARY_URL: noDb },
        2,
      );
      await expectRefusal(
        /SLOTSYNC_STANDBY_URL: could not connect to postgres:\/\/postgres:\*\*\*\*\*@127\.0\.0\.1:1\/postgres/,
        {
          SLOTSYNC_STANDBY_URL: `postgres://postgres:${SECRET}@127.0.0.1:1/postgres`,
        },
      );
      await expectRefusal(/SLOTSYNC_PRIMARY_URL: could not connect/, {
        SLOTSYNC_PRIMARY_URL: `postgres://postgres:${SECRET}@127.0.0.1:1/postgres`,
      });
      await expectRefusal(/SLOTSYNC_PRIMARY_URL is required/, { SLOTSYNC_PRIMARY_URL: '' }, 2);
    });

    it('kill -9 in the middle of cycles loses no ownership record and breaks no invariant', async () => {
      const names = Array.from({ length: 40 }, (_, i) => `kill_${i}`);
      for (const name of names)
        await createPrimarySlot(h.cluster, name, { plugin: 'test_decoding' });
      await writeRows(h.cluster, 100);
      await h.cluster.waitForReplay();
      let killed = 0;
      const killDuring = async (moment: () => Promise<boolean>) => {
        const child = spawnCli(['sync', '--once'], env);
        const exited = new Promise<NodeJS.Signals | null>((resolve) =>
          child.once('exit', (_code, signal) => resolve(signal)),
        );
        await waitFor(
          'the moment to kill',
          async () => child.exitCode !== null || (await moment()),
          20_000,
        );
        child.kill('SIGKILL');
        if ((await exited) === 'SIGKILL') killed++;
      };
      const creating = async () => {
        const rows = await h.cluster.standby.sql(
          `SELECT 1 FROM pg_stat_activity WHERE application_name = 'slotsync-standby' AND query LIKE '%pg_create_logical%' AND state = 'active'`,
        );
        return rows.length > 0;
      };
      // 1. during copy creation
      await killDuring(creating);
      // 2.-5. at moments spread over the cycle, with the primary slots moving meanwhile
      for (const ms of [40, 120, 250, 400]) {
        await writeRows(h.cluster, 50);
        for (const name of names.slice(0, 20)) {
          await consume(h.cluster.primary, name);
        }
        await h.cluster.waitForReplay();
        const started = Date.now();
        await killDuring(async () => Date.now() - started >= ms);
        // A new cycle after every kill: every copy on the standby is still ours. (The dead
        // process's lock session ends once the server sees its socket closed.)
        let result: Awaited<ReturnType<typeof h.cycle>> | undefined;
        await waitFor('the dead process’s sync lock released', async () => {
          result = await h.cycle().catch((error: { code?: string }) => {
            if (error.code !== 'SLOTSYNC_CONCURRENT') throw error;
            return undefined;
          });
          return result !== undefined;
        });
        assert.ok(result);
        const conflicts = result.report.slots.filter((s) => s.action === 'conflict');
        assert.deepEqual(conflicts, [], `after a kill at ${ms} ms`);
        assert.deepEqual(await unownedCopies(h.cluster, h.stateDir), [], 'every copy is recorded');
      }
      assert.ok(killed >= 3, `${killed} of 5 processes were killed before they finished`);
      // Syncing carries on: every slot becomes sync-ready once its consumer catches up.
      for (const name of names) await consume(h.cluster.primary, name);
      await h.cluster.waitForReplay();
      await h.cycle();
      const final = await h.cycle();
      for (const name of names) assert.equal(h.slot(final, name).state, 'sync_ready', name);
      await dropRemotesAndSync(h);
    });
  });
}
