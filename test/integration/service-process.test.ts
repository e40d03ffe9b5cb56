/**
 * `slotsync` as a process: two processes against one standby never sync at the same time,
 * SIGHUP re-reads the configuration, SIGTERM stops gracefully, bad starts say why.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { runCli, startProcess } from '../helpers/cli.js';
import {
  createPrimarySlot,
  dropEverySlot,
  type Harness,
  holdConsistentPoint,
  startHarness,
  waitFor,
} from '../helpers/harness.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';

const majors = process.env.SLOTSYNC_TEST_MAJORS
  ? MAJORS.filter((m) => process.env.SLOTSYNC_TEST_MAJORS?.includes(String(m)))
  : MAJORS;

for (const major of majors) {
  describe(`slotsync processes on PostgreSQL ${major}`, () => {
    let h: Harness;
    let dir: string;
    let env: Record<string, string>;
    before(async () => {
      h = await startHarness({ major });
      dir = await tempDir('proc');
      env = {
        SLOTSYNC_PRIMARY_URL: h.cluster.primary.url('postgres', 'proc-secret-pw'),
        SLOTSYNC_STANDBY_URL: h.cluster.standby.url('postgres', 'proc-secret-pw'),
        SLOTSYNC_NAPTIME_MIN_MS: '20',
        SLOTSYNC_NAPTIME_MAX_MS: '200',
        SLOTSYNC_RESTART_INTERVAL_MS: '200',
      };
    });
    after(async () => {
      await h?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('two processes against one standby never sync at the same time', async () => {
      await dropEverySlot(h.cluster);
      const a = await startProcess({
        ...env,
        SLOTSYNC_WORKER: 'off',
        SLOTSYNC_STATE_DIR: join(dir, 'a'),
      });
      const b = await startProcess({
        ...env,
        SLOTSYNC_WORKER: 'off',
        // One state folder shared by both (a registry belongs to one standby node).
        SLOTSYNC_STATE_DIR: join(dir, 'a'),
      });
      try {
        // A's cycle is held inside a copy creation: a prepared transaction keeps the copy
        // from reaching a consistent point until it is committed.
        await createPrimarySlot(h.cluster, 'held', { plugin: 'test_decoding' });
        const hold = await holdConsistentPoint(h.cluster, 'hold_a');
        await h.cluster.waitForReplay();
        const aAnswer = fetch(`${a.base}/sync`, { method: 'POST' });
        await waitFor('A holds the sync lock inside its cycle', async () => {
          const rows = await h.cluster.standby.sql(
            `SELECT 1 FROM pg_stat_activity WHERE application_name = 'slotsync-standby' AND query LIKE '%pg_create_logical%' AND state = 'active'`,
          );
          return rows.length > 0;
        });
        const bAnswer = await fetch(`${b.base}/sync`, { method: 'POST' });
        assert.equal(bAnswer.status, 409);
        assert.equal(
          (await bAnswer.json()).detail,
          'cannot synchronize replication slots concurrently',
        );
        await hold.commit();
        const aReport = await (await aAnswer).json();
        assert.equal(aReport.slots[0].action, 'created');
        const bLater = await fetch(`${b.base}/sync`, { method: 'POST' });
        assert.equal(bLater.status, 200, 'B syncs once A is done');
      } finally {
        assert.equal(await a.stop(), 0);
        assert.equal(await b.stop(), 0);
      }
      assert.match(a.output(), /"msg":"stopped"/);
      assert.doesNotMatch(a.output() + b.output(), /proc-secret-pw/);
    });

    it('SIGHUP with a changed standby URL restarts the worker with it', async () => {
      await dropEverySlot(h.cluster);
      await createPrimarySlot(h.cluster, 'after_hup', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      const envFile = join(dir, 'slotsync.env');
      const { SLOTSYNC_STANDBY_URL: goodStandby, ...rest } = env;
      await writeFile(
        envFile,
        'SLOTSYNC_STANDBY_URL=postgres://postgres:proc-secret-pw@127.0.0.1:1/postgres\n',
      );
      const c = await startProcess({
        ...rest,
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_STATE_DIR: join(dir, 'c'),
        SLOTSYNC_ENV_FILE: envFile,
      });
      try {
        await waitFor('the worker failing on the wrong standby', async () => {
          const health = await (await fetch(`${c.base}/health`)).json();
          return (
            health.checks.worker.status === 'fail' &&
            /SLOTSYNC_STANDBY_URL/.test(health.checks.worker.detail)
          );
        });
        await writeFile(envFile, `# fixed\nSLOTSYNC_STANDBY_URL="${goodStandby}"\n`);
        c.child.kill('SIGHUP');
        await waitFor('the copy made through the new standby URL', async () => {
          const slots = await (await fetch(`${c.base}/slots`)).json();
          return slots.slots.some(
            (v: { name: string; state: string }) =>
              v.name === 'after_hup' && v.state === 'temporary',
          );
        });
        const health = await fetch(`${c.base}/health`);
        assert.equal(health.status, 200, JSON.stringify(await health.json()));
        const metrics = await (await fetch(`${c.base}/metrics`)).text();
        assert.match(metrics, /slotsync_worker_restarts_total\{reason="configuration"\} 1/);
        assert.match(c.output(), /will restart because of a parameter change/);

        // A bad reload is refused and the running configuration kept.
        await writeFile(envFile, 'SLOTSYNC_NAPTIME_MIN_MS=soon\n');
        c.child.kill('SIGHUP');
        await waitFor('the refusal logged', async () =>
          /configuration reload refused/.test(c.output()),
        );
        assert.match(c.output(), /SLOTSYNC_NAPTIME_MIN_MS must be an integer/);
        assert.equal((await fetch(`${c.base}/health`)).status, 200);
      } finally {
        assert.equal(await c.stop(), 0);
      }
      assert.doesNotMatch(c.output(), /proc-secret-pw/);
    });

    it('SIGTERM during a copy creation: HTTP closes, the creation is cancelled after 1 s, a SIGHUP meanwhile is ignored, exit 0', async () => {
      await dropEverySlot(h.cluster);
      await createPrimarySlot(h.cluster, 'held_at_stop', { plugin: 'test_decoding' });
      const hold = await holdConsistentPoint(h.cluster, 'hold_at_stop');
      await h.cluster.waitForReplay();
      const envFile = join(dir, 'stop.env');
      await writeFile(envFile, 'SLOTSYNC_NAPTIME_MIN_MS=20\n');
      const p = await startProcess({
        ...env,
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_CREATE_TIMEOUT_MS: '600000',
        SLOTSYNC_STATE_DIR: join(dir, 'stop'),
        SLOTSYNC_ENV_FILE: envFile,
      });
      try {
        await waitFor('the worker inside the creation', async () => {
          const rows = await h.cluster.standby.sql(
            `SELECT 1 FROM pg_stat_activity WHERE application_name = 'slotsync-standby' AND query LIKE '%pg_create_logical%' AND state = 'active'`,
          );
          return rows.length > 0;
        });
        p.child.kill('SIGTERM');
        await waitFor('the stop begun', async () => /stopping: finishing/.test(p.output()));
        await writeFile(envFile, 'SLOTSYNC_NAPTIME_MIN_MS=30\n');
        p.child.kill('SIGHUP');
        assert.equal(await p.exited, 0, p.output());
        assert.match(p.output(), /statements in flight cancelled/);
        assert.doesNotMatch(p.output(), /configuration reload/);
        // The creation no longer runs (the harness's own sessions stay: not this process's).
        await waitFor('no creation left running on the standby', async () => {
          const left = await h.cluster.standby.sql(
            `SELECT 1 FROM pg_stat_activity WHERE application_name = 'slotsync-standby' AND query LIKE '%pg_create_logical%' AND state = 'active'`,
          );
          return left.length === 0;
        });
      } finally {
        await p.stop();
        await hold.commit().catch(() => undefined);
        await dropEverySlot(h.cluster);
      }
    });

    it('an uncaught error stops the process gracefully (exit 1), logged with its stack, the password redacted', async () => {
      const p = await startProcess(
        {
          ...env,
          SLOTSYNC_WORKER: 'off',
          SLOTSYNC_STATE_DIR: join(dir, 'uncaught'),
          THROW_SECRET: 'proc-secret-pw',
        },
        {
          nodeArgs: [
            '--import',
            fileURLToPath(new URL('../helpers/throw-on-signal.ts', import.meta.url)),
          ],
        },
      );
      p.child.kill('SIGWINCH');
      assert.equal(await p.exited, 1, p.output());
      const line = p
        .output()
        .split('\n')
        .find((l) => l.includes('stopping after an error'));
      assert.ok(line, p.output());
      const logged = JSON.parse(line);
      assert.match(logged.err, /^boom from a test: could not use postgres:\/\/postgres:\*{5}@/);
      assert.match(logged.stack, /throw-on-signal\.ts/);
      assert.match(p.output(), /"msg":"stopped"/);
      assert.doesNotMatch(p.output(), /proc-secret-pw/);
    });

    it('refuses to start beyond loopback without a token, or on a busy port, naming the variable', async () => {
      const open = await runCli([], {
        ...env,
        SLOTSYNC_HOST: '0.0.0.0',
        SLOTSYNC_STATE_DIR: join(dir, 'd'),
      });
      assert.equal(open.code, 2);
      assert.match(
        open.stderr,
        /SLOTSYNC_API_TOKEN is required when SLOTSYNC_HOST \(0\.0\.0\.0\) is not a loopback address/,
      );
      const first = await startProcess({
        ...env,
        SLOTSYNC_WORKER: 'off',
        SLOTSYNC_STATE_DIR: join(dir, 'e'),
      });
      try {
        const port = new URL(first.base).port;
        const busy = await runCli([], {
          ...env,
          SLOTSYNC_WORKER: 'off',
          SLOTSYNC_PORT: port,
          SLOTSYNC_STATE_DIR: join(dir, 'f'),
        });
        assert.equal(busy.code, 2);
        assert.match(
          busy.stderr,
          new RegExp(`SLOTSYNC_PORT ${port} on 127\\.0\\.0\\.1 is already in use`),
        );
      } finally {
        await first.stop();
      }
    });
  });
}
