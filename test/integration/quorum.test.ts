/**
 * Quorum for synchronized_standby_slots (issue 19, item 3) on real PostgreSQL 17 and 18: a
 * primary with two standbys, a subscription written to all the time, one slotsync per node
 * with SLOTSYNC_STANDBY_SLOTS_QUORUM='ANY 1 (standby_slot, standby2_slot)'. The setting goes
 * from ALL to one standby; when that standby stops streaming, the other takes its place and
 * the consumers go on. The removal race: the removed standby's slotsync is held at the worst
 * moment (it read "the primary waits for me" and has not yet seen the removal): the manager
 * waits for it, and once the setting no longer names it, it has already recorded that it is
 * not safe to promote onto.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import { LOCK } from '../../src/db/quorum.js';
import { stopStreaming } from '../helpers/failover.js';
import { waitFor } from '../helpers/harness.js';
import { type ServiceUnderTest, startService } from '../helpers/service.js';
import { MAJORS } from '../support/binaries.js';
import { slotOf, startCluster } from '../support/cluster.js';
import type { PgServer } from '../support/server.js';
import { countRows, SUBSCRIPTION, setupSubscription, Writer } from '../support/workload.js';

const QUORUM = 'ANY 1 (standby_slot, standby2_slot)';

async function standbySlots(primary: PgServer): Promise<string[]> {
  const [row] = await primary.sql<{ s: string }>(
    `SELECT current_setting('synchronized_standby_slots') AS s`,
  );
  return (row?.s ?? '').split(',').filter(Boolean).sort();
}

for (const major of MAJORS) {
  describe(`quorum for synchronized_standby_slots on PostgreSQL ${major}`, () => {
    const cleanups: (() => Promise<unknown>)[] = [];
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    });

    it('ANY 1 of two standbys: one at a time, the stopped one replaced once its slotsync acknowledged, never called safe from a read older than its removal', async () => {
      const c = await startCluster({
        major,
        standbys: 2,
        subscriber: true,
        synchronizedStandbySlots: true,
      });
      cleanups.push(() => c.stop());
      const subscriber = c.subscriber as PgServer;
      await setupSubscription(c.primary, subscriber);
      assert.deepEqual(
        await standbySlots(c.primary),
        ['standby2_slot', 'standby_slot'],
        'ALL to start with',
      );
      const env = { SLOTSYNC_WORKER: 'on', SLOTSYNC_STANDBY_SLOTS_QUORUM: QUORUM };
      // The primary's own slotsync starts first: it takes the manager's lock.
      const onPrimary = await startService(c, env, { standby: c.primary });
      cleanups.push(() => onPrimary.close());
      await waitFor('a manager', async () => onPrimary.service.quorum.status.manager);
      const nodes = new Map<PgServer, ServiceUnderTest>();
      for (const standby of c.standbys) {
        const s = await startService(c, env, { standby });
        cleanups.push(() => s.close());
        nodes.set(standby, s);
        // Once it has acknowledged a removal, its next round waits (see below).
        s.service.quorum.pauseAt = () =>
          s.service.quorum.status.participant?.acknowledged ? acknowledged : Promise.resolve();
      }
      let releaseAcknowledged!: () => void;
      const acknowledged = new Promise<void>((resolve) => {
        releaseAcknowledged = resolve;
      });
      const writer = new Writer(5);
      writer.start(c.primary);
      cleanups.push(() => writer.stop());

      // From ALL to one standby, after the leaving one's slotsync acknowledged.
      await waitFor(
        'one standby in the setting',
        async () => (await standbySlots(c.primary)).length === 1,
        30_000,
      );
      const [memberSlot] = await standbySlots(c.primary);
      const member = c.standbys.find((s) => slotOf(s) === memberSlot) as PgServer;
      const other = c.standbys.find((s) => s !== member) as PgServer;
      const memberNode = nodes.get(member) as ServiceUnderTest;
      const otherNode = nodes.get(other) as ServiceUnderTest;
      // The left one acknowledged, then its session to the primary is lost before it saw the
      // removal applied (its ACK lock goes with the session): it must still find that the
      // announcement was withdrawn, and speak from the primary's reads again.
      const otherCache = otherNode.service.context.engine.deps.cache;
      assert.equal(otherCache.quorumPending, true, 'the left standby acknowledged its removal');
      await c.primary.sql(
        `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND classid = ${LOCK.ack}::oid AND objsubid = 2 AND objid = hashtext($1)::oid`,
        [slotOf(other)],
      );
      for (const node of nodes.values()) node.service.quorum.pauseAt = undefined;
      releaseAcknowledged();
      await waitFor(
        'the withdrawal seen after a lost session',
        async () => !otherCache.quorumPending,
      );
      await waitFor(
        'the member safe to promote onto',
        async () =>
          (await request(memberNode.app.server).get(`/ready?slots=${SUBSCRIPTION}`)).status === 200,
        60_000,
      );
      const notSafe = await request(otherNode.app.server).get(`/ready?slots=${SUBSCRIPTION}`);
      assert.equal(notSafe.status, 503, 'the standby outside the set is not safe');
      assert.match(JSON.stringify(notSafe.body.slots), /does not wait for this standby|ahead/);

      // The race: the member's slotsync is held (it read "the primary waits for me") while
      // the member stops streaming and the manager wants it out.
      let release!: () => void;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      memberNode.service.quorum.pauseAt = () => held;
      const restore = await stopStreaming(member);
      const stoppedAt = Date.now();
      await waitFor(
        'the other standby added at once (adding makes no one wait)',
        async () => (await standbySlots(c.primary)).includes(slotOf(other)),
        10_000,
      );
      // The member stays in the setting while its slotsync has not acknowledged: consumers
      // wait for it, so its own "safe" answer stays true.
      while (Date.now() - stoppedAt < 3_000) {
        assert.ok(
          (await standbySlots(c.primary)).includes(memberSlot as string),
          'not removed before the acknowledgement',
        );
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const health = await request(onPrimary.app.server).get('/health');
      assert.match(
        health.body.checks.standby_slots_quorum.detail,
        new RegExp(`removal of ${memberSlot} waiting for acknowledgement`),
      );

      // Released: it records that it is not protected, then acknowledges; then it is removed.
      memberNode.service.quorum.pauseAt = undefined;
      release();
      await waitFor(
        'the member removed',
        async () => !(await standbySlots(c.primary)).includes(memberSlot as string),
        20_000,
      );
      const recorded = JSON.parse(
        await readFile(join(memberNode.stateDir, 'primary.json'), 'utf8'),
      );
      assert.equal(
        recorded.primary.waitsForStandby,
        false,
        'recorded before the removal was applied',
      );
      const after = await request(memberNode.app.server).get(`/ready?slots=${SUBSCRIPTION}`);
      assert.equal(after.status, 503, 'the removed standby is not safe to promote onto');
      assert.equal(after.body.primary.waits_for_standby, false);

      // The consumers go on with the member stopped.
      const before = (await countRows(subscriber)).count;
      await waitFor(
        'the subscriber receives with one standby stopped',
        async () => (await countRows(subscriber)).count > before + 50,
        20_000,
      );
      await waitFor(
        'the other standby safe to promote onto',
        async () =>
          (await request(otherNode.app.server).get(`/ready?slots=${SUBSCRIPTION}`)).status === 200,
        30_000,
      );
      const changes = await onPrimary.service.metrics.registry.getSingleMetricAsString(
        'slotsync_standby_slots_changes_total',
      );
      assert.match(changes, / [2-9]$/m, 'each change counted');

      // The member streams again and catches up, but the other holds the one place: it is not
      // put back (no flapping) and stays not safe.
      await restore();
      await waitFor('the member streaming again', async () => {
        const rows = await member.sql('SELECT 1 FROM pg_stat_wal_receiver');
        return rows.length > 0;
      });
      for (let i = 0; i < 10; i++) {
        assert.deepEqual(await standbySlots(c.primary), [slotOf(other)], 'no flapping back');
        const ready = await request(memberNode.app.server).get(`/ready?slots=${SUBSCRIPTION}`);
        assert.equal(ready.status, 503, 'back and caught up, but outside the set: not safe');
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      // The other stops streaming: the member is back in the set, and called safe only from a
      // read of the primary that names it, with every consumer at or behind its WAL.
      const restoreOther = await stopStreaming(other);
      await waitFor(
        'the member safe again',
        async () => {
          const ready = await request(memberNode.app.server).get(`/ready?slots=${SUBSCRIPTION}`);
          if (ready.status !== 200) return false;
          assert.equal(ready.body.primary.waits_for_standby, true);
          assert.ok(
            (await standbySlots(c.primary)).includes(memberSlot as string),
            'called safe only once back in the set',
          );
          for (const slot of ready.body.slots) assert.equal(slot.consumer_ahead, false);
          return true;
        },
        30_000,
      );
      await restoreOther();
      await writer.stop();
    });
  });
}
