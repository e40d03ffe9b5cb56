/**
 * The state folder read-only or full, under a running `slotsync` process on real
 * PostgreSQL 17 and 18: the cycle fails with a clear error (log, /health, POST /sync,
 * metrics), no copy is made that the registry would not own, the registry file is never
 * damaged, and syncing resumes by itself once the folder is writable again.
 *
 * Read-only is a chmod, so when the tests run as root the process runs as the unprivileged
 * server user (root ignores permissions). Full is a file size limit set on the running
 * process with prlimit (util-linux): the kernel answers EFBIG, as it answers ENOSPC on a
 * full disk, and Node ignores SIGXFSZ.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { stagingNameOf } from '../../src/sync/names.js';
import { type Running, startProcess } from '../helpers/cli.js';
import {
  advancePrimarySlot,
  createPrimarySlot,
  dropEverySlot,
  type Harness,
  startHarness,
  waitFor,
} from '../helpers/harness.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';

const execFileAsync = promisify(execFile);

for (const major of MAJORS) {
  describe(`the state folder read-only or full on PostgreSQL ${major}`, () => {
    let h: Harness;
    let dir: string;
    let env: Record<string, string>;
    before(async () => {
      h = await startHarness({ major });
      dir = await tempDir('statedir');
      env = {
        SLOTSYNC_PRIMARY_URL: h.cluster.primary.url('postgres', 'state-secret-pw'),
        SLOTSYNC_STANDBY_URL: h.cluster.standby.url('postgres', 'state-secret-pw'),
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_NAPTIME_MIN_MS: '20',
        SLOTSYNC_NAPTIME_MAX_MS: '200',
        SLOTSYNC_RESTART_INTERVAL_MS: '100',
      };
    });
    after(async () => {
      await h?.close();
      await rm(dir, { recursive: true, force: true });
    });

    async function stateDir(name: string): Promise<string> {
      const path = join(dir, name);
      await mkdir(path, { mode: 0o700 });
      return path;
    }

    /** The copy of `name` made and recorded (the view lists primary slots without copies too). */
    async function copied(p: Running, name: string): Promise<boolean> {
      const body = await (await fetch(`${p.base}/slots`)).json();
      const state = body.slots.find((v: { name: string }) => v.name === name)?.state;
      return state === 'temporary' || state === 'sync_ready';
    }

    /** A copy of `name` on the standby, staged or published. */
    async function standbyHas(name: string): Promise<boolean> {
      const rows = await h.cluster.standby.sql(
        `SELECT 1 FROM pg_replication_slots WHERE slot_name = ANY($1)`,
        [[name, stagingNameOf(name)]],
      );
      return rows.length > 0;
    }

    /** While the registry cannot be written: every surface says so, nothing changes. */
    async function expectRegistryFault(p: Running, pattern: RegExp): Promise<void> {
      await waitFor('the worker reporting the registry write failure', async () => {
        const health = await fetch(`${p.base}/health`);
        const body = await health.json();
        return health.status === 503 && pattern.test(body.checks.last_cycle?.detail ?? '');
      });
      const sync = await fetch(`${p.base}/sync`, { method: 'POST' });
      assert.equal(sync.status, 503);
      assert.match(sync.headers.get('content-type') ?? '', /application\/problem\+json/);
      const problem = await sync.json();
      assert.equal(problem.code, 'SLOTSYNC_REGISTRY_WRITE');
      assert.match(problem.detail, /could not write the (ownership registry|primary's facts)/);
      assert.match(problem.detail, pattern);
      const metrics = await (await fetch(`${p.base}/metrics`)).text();
      assert.match(metrics, /slotsync_cycles_total\{trigger="worker",outcome="error"\} [1-9]/);
      assert.match(p.output(), /could not write the (ownership registry|primary's facts)/);
    }

    it('read-only: a clear error, no copy the registry does not own, the file intact; writable again, syncing resumes', async () => {
      await dropEverySlot(h.cluster);
      const state = await stateDir('read-only');
      const p = await startProcess(
        { ...env, SLOTSYNC_STATE_DIR: state },
        { permissionsApply: true },
      );
      try {
        await createPrimarySlot(h.cluster, 'ro_before');
        await waitFor('the first copy', async () => copied(p, 'ro_before'));
        const registry = join(state, 'registry.json');
        const before = await readFile(registry, 'utf8');

        await chmod(state, 0o500);
        await createPrimarySlot(h.cluster, 'ro_after');
        await advancePrimarySlot(h.cluster, 'ro_before');
        await h.cluster.waitForReplay();
        await expectRegistryFault(p, /permission denied|EACCES/i);
        assert.equal(await standbyHas('ro_after'), false, 'no copy without its record');
        assert.equal(await readFile(registry, 'utf8'), before, 'the registry is untouched');
        assert.deepEqual(
          (await readdir(state)).filter((f) => f.endsWith('.tmp')),
          [],
          'no temporary file left',
        );

        await chmod(state, 0o700);
        await waitFor('the copy made once the folder is writable', async () =>
          standbyHas('ro_after'),
        );
        await waitFor('a cycle succeeding again', async () => {
          const body = await (await fetch(`${p.base}/health`)).json();
          return body.checks.last_cycle.status === 'pass';
        });
        const after = JSON.parse(await readFile(registry, 'utf8'));
        assert.deepEqual(after.slots.map((s: { name: string }) => s.name).sort(), [
          'ro_after',
          'ro_before',
        ]);
      } finally {
        await chmod(state, 0o700);
        assert.equal(await p.stop(), 0);
      }
      assert.doesNotMatch(p.output(), /state-secret-pw/);
    });

    it('full (the kernel answers EFBIG): a clear error, the registry never half-written; space back, syncing resumes', async () => {
      await dropEverySlot(h.cluster);
      const state = join(dir, 'full');
      // This process's own user: changing another user's limits needs CAP_SYS_RESOURCE.
      const p = await startProcess({ ...env, SLOTSYNC_STATE_DIR: state });
      const pid = String(p.child.pid);
      try {
        await createPrimarySlot(h.cluster, 'full_before');
        await waitFor('the first copy', async () => copied(p, 'full_before'));
        const registry = join(state, 'registry.json');
        const before = await readFile(registry, 'utf8');

        // Room for the current file, not for one more entry (~330 bytes); the soft limit only,
        // so it can be raised again.
        await execFileAsync('prlimit', ['--pid', pid, `--fsize=${before.length + 100}:`]);
        const names = Array.from({ length: 20 }, (_, i) => `full_after_${i}`);
        for (const name of names) await createPrimarySlot(h.cluster, name);
        await h.cluster.waitForReplay();
        await expectRegistryFault(p, /file too large|EFBIG/i);
        for (const name of names) assert.equal(await standbyHas(name), false, name);
        // Whole, and owning nothing new (what it records of the primary may have grown while
        // a write still fitted).
        const kept = JSON.parse(await readFile(registry, 'utf8'));
        assert.deepEqual(
          kept.slots.map((s: { name: string }) => s.name),
          JSON.parse(before).slots.map((s: { name: string }) => s.name),
          'the registry owns no copy of the new slots',
        );
        // A retry may be writing its temporary file right now: none stays.
        await waitFor('no temporary file left', async () => {
          const files = await readdir(state);
          return files.every((f) => f === 'registry.json' || f === 'primary.json');
        });

        await execFileAsync('prlimit', ['--pid', pid, '--fsize=unlimited:']);
        await waitFor('every copy made once there is room', async () => {
          const rows = await h.cluster.standby.sql(
            `SELECT 1 FROM pg_replication_slots WHERE slot_name = ANY($1)`,
            [names.map(stagingNameOf)],
          );
          return rows.length === names.length;
        });
        const after = JSON.parse(await readFile(registry, 'utf8'));
        assert.equal(after.slots.length, names.length + 1);
      } finally {
        await execFileAsync('prlimit', ['--pid', pid, '--fsize=unlimited:']).catch(() => undefined);
        assert.equal(await p.stop(), 0);
      }
    });
  });
}
