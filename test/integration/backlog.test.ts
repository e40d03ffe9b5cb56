/**
 * A long backlog (issue "The moment of truth", item 5): slotsync down while the primary
 * writes 2 GB and the consumer confirms it all. pg_replication_slot_advance() keeps nothing
 * when cancelled, so one advance over the whole backlog behind a 2 s statement timeout
 * would be cancelled again and again; slotsync moves the copy in steps that each fit,
 * keeps each, and reports the backlog falling. Real PostgreSQL 17 and 18.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import { parseLsn } from '../../src/sync/lsn.js';
import { advancePrimarySlot, createPrimarySlot, slotRow, waitFor } from '../helpers/harness.js';
import { type ServiceUnderTest, startService } from '../helpers/service.js';
import { MAJORS } from '../support/binaries.js';
import { type Cluster, startCluster } from '../support/cluster.js';
import { cpuSecondsOfTree } from '../support/proc.js';

const standbyCpuSeconds = (cluster: Cluster) => cpuSecondsOfTree(cluster.standby.pid ?? 0);

const BACKLOG_BYTES = 2 * 1024 ** 3;

/**
 * Writes `bytes` of WAL as one-column rows (many small records: decoding is not free), with
 * a running-xacts record every ~35 MB: a primary writing for hours logs one every 15 s,
 * which at a few MB/s is tens of MB apart (a copy's restart_lsn can only move to one).
 */
async function writeBacklog(cluster: Cluster, bytes: number): Promise<void> {
  await cluster.primary.sql('CREATE TABLE backlog (id bigint)');
  const [start] = await cluster.primary.sql<{ lsn: string }>(
    'SELECT pg_current_wal_lsn()::text AS lsn',
  );
  for (;;) {
    await cluster.primary.sql('INSERT INTO backlog SELECT g FROM generate_series(1, 500000) g');
    await cluster.primary.sql('SELECT pg_log_standby_snapshot()');
    const [row] = await cluster.primary.sql<{ n: string }>(
      'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text AS n',
      [start?.lsn],
    );
    if (Number(row?.n) >= bytes) return;
  }
}

for (const major of MAJORS) {
  describe(`a long backlog on PostgreSQL ${major}`, () => {
    let cluster: Cluster | undefined;
    let s: ServiceUnderTest | undefined;
    after(async () => {
      await s?.close();
      await cluster?.stop();
    });

    it('2 GB behind a 2 s statement timeout: caught up in kept steps, none cancelled, never past the remote, the backlog shown falling', async () => {
      cluster = await startCluster({ major, synchronizedStandbySlots: true });
      await createPrimarySlot(cluster, 'behind', { plugin: 'test_decoding' });
      await cluster.waitForReplay();
      s = await startService(cluster, { SLOTSYNC_STATEMENT_TIMEOUT_MS: '2000' });
      const api = () => request((s as ServiceUnderTest).app.server);
      await waitFor('the copy sync-ready', async () => {
        await advancePrimarySlot(cluster as Cluster, 'behind');
        await (cluster as Cluster).waitForReplay();
        const answer = await api().post('/sync').send({ waitReady: 1_000 });
        return answer.body.readiness?.ready === true;
      });

      // slotsync does not run while the primary writes 2 GB and the consumer confirms them.
      const written = Date.now();
      await writeBacklog(cluster, BACKLOG_BYTES);
      const target = await advancePrimarySlot(cluster, 'behind');
      await cluster.waitForReplay(120_000);
      const writtenMs = Date.now() - written;

      const started = Date.now();
      const cpuBefore = standbyCpuSeconds(cluster);
      let cycles = 0;
      let steps = 0;
      let lastLag = Number.POSITIVE_INFINITY;
      let sawHealth = false;
      let position = parseLsn((await slotRow(cluster.standby, 'behind'))?.confirmed_flush_lsn);
      while (position !== parseLsn(target)) {
        assert.ok(
          Date.now() - started < 240_000,
          `caught up within 4 minutes: ${cycles} cycles, ${steps} steps, at ${position}`,
        );
        const report = (await api().post('/sync').expect(200)).body;
        cycles++;
        const slot = report.slots.find((r: { name: string }) => r.name === 'behind');
        if (process.env.SLOTSYNC_TEST_VERBOSE)
          process.stdout.write(`# ${report.durationMs} ms ${JSON.stringify(slot)}\n`);
        assert.notEqual(slot?.action, 'failed', JSON.stringify(slot));
        if (/catching up/.test(slot?.reason ?? '')) {
          steps++;
          const views = (await api().get('/slots')).body.slots;
          const lag = views.find((v: { name: string }) => v.name === 'behind')?.lag_bytes;
          assert.ok(lag < lastLag, `the backlog falls (${lag} after ${lastLag})`);
          lastLag = lag;
          const health = (await api().get('/health')).body;
          if (/catching up: 1 copy/.test(health.checks.catch_up?.detail ?? '')) sawHealth = true;
        }
        const now = parseLsn((await slotRow(cluster.standby, 'behind'))?.confirmed_flush_lsn);
        assert.ok(now !== null && position !== null && now >= position, 'never backwards');
        assert.ok(now <= (parseLsn(target) ?? 0n), 'never past the remote');
        position = now;
      }
      const catchUpMs = Date.now() - started;
      const cpuSeconds = standbyCpuSeconds(cluster) - cpuBefore;
      assert.ok(steps >= 2, `moved in several kept steps (${steps})`);
      assert.ok(sawHealth, '/health said it was catching up');
      assert.doesNotMatch(
        await cluster.standby.logTail(5_000),
        /canceling statement due to statement timeout/,
        'no advance was cancelled',
      );
      const ready = await api().get('/ready').expect(200);
      assert.equal(ready.body.ready, true);
      process.stdout.write(
        `# PostgreSQL ${major}: 2 GB backlog written and consumed in ${writtenMs} ms; caught up in ${catchUpMs} ms, ${cycles} cycles, ${steps} bounded steps, standby CPU ${cpuSeconds.toFixed(1)} s\n`,
      );
    });
  });
}
