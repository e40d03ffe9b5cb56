/**
 * SLOTSYNC_ENGINE=builtin: PostgreSQL copies the slots, slotsync answers "safe" with the same
 * definition, says why the server's sync is stuck, and switches engines on a live standby.
 * Real subscriptions, a primary written to all the time, PostgreSQL 17 and 18.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  assertExactlyOnce,
  type Node,
  prePromoteHook,
  Scenario,
  stopAndSettle,
  stopStreaming,
} from '../helpers/failover.js';
import { replicationCommandOn, waitFor } from '../helpers/harness.js';
import { MAJORS } from '../support/binaries.js';
import type { PgServer } from '../support/server.js';
import {
  countRows,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../support/workload.js';

interface SlotRow {
  slot_name: string;
  synced: boolean;
  temporary: boolean;
}

/** The logical slots on `server`. */
async function logicalSlots(server: PgServer): Promise<SlotRow[]> {
  return server.sql<SlotRow>(
    `SELECT slot_name::text, synced, temporary FROM pg_replication_slots
      WHERE slot_type = 'logical' ORDER BY slot_name`,
  );
}

/**
 * How long a copy may take to be safe: PostgreSQL's worker makes it persistent once the
 * remote slot passed it (a running-xacts record or two), longer on 2 busy cores.
 */
const SAFE_MS = 120_000;

async function turnWorkerOn(standby: PgServer): Promise<void> {
  await standby.sql(`ALTER SYSTEM SET sync_replication_slots = on`);
  await standby.sql('SELECT pg_reload_conf()');
}

for (const major of MAJORS) {
  // The cases of one major side by side (most of their time is waiting); the majors one after
  // the other.
  describe(`SLOTSYNC_ENGINE=builtin on PostgreSQL ${major}`, { concurrency: true }, () => {
    const t = new Scenario(major);
    after(() => t.close());

    const health = async (node: Node) => (await t.get(node, '/health')).body.checks.builtin;

    it(`PostgreSQL ${major}: over PostgreSQL's worker, the primary killed: the gate passes from the standby alone, and after promotion the subscription has every row exactly once`, async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      await turnWorkerOn(c.standby);
      const node = await t.slotsync(c, { SLOTSYNC_ENGINE: 'builtin' });
      const writer = new Writer(5);
      writer.start(c.primary);
      await t.waitSafe(node, SUBSCRIPTION, SAFE_MS);
      // The copy is PostgreSQL's own; slotsync made no slot.
      assert.deepEqual(await logicalSlots(c.standby), [
        { slot_name: SUBSCRIPTION, synced: true, temporary: false },
      ]);
      await waitFor('the worker seen running', async () =>
        /worker running/.test((await health(node))?.detail ?? ''),
      );
      assert.equal((await health(node))?.status, 'pass');
      // /slots answers from the last reads in memory; it follows /ready within a read.
      let slots: { state: string; sync_ready: boolean }[] = [];
      await waitFor('/slots says sync_ready', async () => {
        slots = (await t.get(node, '/slots')).body.slots;
        return slots[0]?.sync_ready === true;
      }).catch((error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(slots)}`);
      });
      assert.equal(slots[0]?.state, 'sync_ready', JSON.stringify(slots));

      const last = await stopAndSettle(writer, subscriber, c);
      await c.primary.stop('immediate');
      const dir = await t.folder('builtin-hooks');
      const viaService = await prePromoteHook(dir, 'pre_promote', [
        '--wait',
        '10',
        '--url',
        node.p.base,
      ]);
      const standalone = await prePromoteHook(dir, 'validate', ['--wait', '10'], node.env);
      const now = await viaService();
      assert.equal(now.code, 0, now.stderr);
      assert.match(
        now.stdout,
        new RegExp(`${SUBSCRIPTION}: safe: .*synchronized_standby_slots names`),
      );
      assert.equal((await standalone()).code, 0);
      // POST /shutdown: the final verdict over PostgreSQL's copy; nothing of it dropped.
      const shut = await t.post(node, '/shutdown');
      assert.equal(shut.status, 200, JSON.stringify(shut.body));
      assert.equal(shut.body.readiness.ready, true, JSON.stringify(shut.body.readiness));
      assert.deepEqual(
        shut.body.slots.map((s: { name: string; state: string; sync_ready: boolean }) => [
          s.name,
          s.state,
          s.sync_ready,
        ]),
        [[SUBSCRIPTION, 'sync_ready', true]],
      );
      assert.deepEqual(shut.body.dropped, []);

      await c.standby.promote();
      await pointSubscriptionAt(subscriber, c.standby);
      writer.start(c.standby);
      await waitFor('rows on the new primary', async () => writer.lastCommitted >= last + 50);
      await assertExactlyOnce(c, await writer.stop());
    });

    it(`PostgreSQL ${major}: over PostgreSQL's worker (sync_replication_slots = on), a consumer ahead of the standby is never called safe`, async () => {
      // No synchronized_standby_slots: the primary does not wait for the standby.
      const c = await t.cluster({ subscriber: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      await turnWorkerOn(c.standby);
      const node = await t.slotsync(c, { SLOTSYNC_ENGINE: 'builtin' });
      const writer = new Writer(5);
      writer.start(c.primary);
      await t.waitSafe(node, SUBSCRIPTION, SAFE_MS);
      await waitFor('the worker seen running', async () =>
        /worker running/.test((await health(node))?.detail ?? ''),
      );

      // The standby's stream cut; the subscriber goes on receiving from the primary.
      const resume = await stopStreaming(c.standby);
      const before = writer.lastCommitted;
      await waitFor(
        'the subscriber receives past the standby',
        async () => (await countRows(subscriber)).count > before + 50,
        30_000,
      );
      await waitFor(
        'not safe',
        async () => (await t.get(node, `/ready?slots=${SUBSCRIPTION}`)).status === 503,
      );
      const answer = (await t.get(node, `/ready?slots=${SUBSCRIPTION}`)).body;
      assert.equal(answer.ready, false);
      assert.match(answer.not_ready[0].reason, /past|ahead|flushed/, JSON.stringify(answer));
      const stuck = await health(node);
      assert.equal(stuck?.status, 'fail', 'primary_conninfo cleared: the worker cannot run');
      await resume();
      await t.waitSafe(node, SUBSCRIPTION, SAFE_MS);
      await writer.stop();
    });

    it(`PostgreSQL ${major}: after a switchover the old primary's own slot stops PostgreSQL's sync: said in /health, /slots and /ready; SLOTSYNC_REPLACE_STALE=on replaces it and the sync resumes`, async () => {
      const c = await t.cluster({ subscriber: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      const first = await t.slotsync(c, { SLOTSYNC_ENGINE: 'builtin' });
      await t.waitSafe(first, SUBSCRIPTION, SAFE_MS);
      const [oldPrimary, newPrimary] = [c.primary, c.standby];
      await c.switchover({
        // The subscriber follows the new primary before the old one starts as a standby
        // (a subscription retrying there would use the slot, which is then not stale).
        beforeRejoin: () => pointSubscriptionAt(subscriber, newPrimary),
      });
      assert.equal(c.standby, oldPrimary);
      const [own] = await logicalSlots(c.standby);
      assert.deepEqual(own, { slot_name: SUBSCRIPTION, synced: false, temporary: false });
      await turnWorkerOn(c.standby);

      const stuck = await t.slotsync(c, { SLOTSYNC_ENGINE: 'builtin' });
      await waitFor(
        'the same-name slot is reported',
        async () => (await health(stuck))?.status === 'fail',
      );
      assert.match((await health(stuck)).detail, new RegExp(`same name slot "${SUBSCRIPTION}"`));
      const view = (await t.get(stuck, '/slots')).body.slots[0];
      assert.equal(view?.state, 'conflict', JSON.stringify(view));
      const ready = await t.get(stuck, `/ready?slots=${SUBSCRIPTION}`);
      assert.equal(ready.status, 503);
      assert.match(ready.body.not_ready[0].reason, /not synced by PostgreSQL/);
      assert.deepEqual(await logicalSlots(c.standby), [own], 'left alone without the setting');
      await stuck.p.stop();

      const replacing = await t.restart({
        ...stuck,
        env: { ...stuck.env, SLOTSYNC_REPLACE_STALE: 'on' },
      });
      // PostgreSQL starts its worker again once its postmaster wakes after the restart
      // interval: up to about a minute after the error on 17 and 18.
      const replacedAt = Date.now();
      await t.waitSafe(replacing, SUBSCRIPTION, 150_000);
      process.stdout.write(
        `# PostgreSQL ${major}: the stale slot replaced, safe again after ${Date.now() - replacedAt} ms\n`,
      );
      assert.deepEqual(await logicalSlots(c.standby), [
        { slot_name: SUBSCRIPTION, synced: true, temporary: false },
      ]);
    });

    it(`PostgreSQL ${major}: with the worker off, slotsync drives pg_sync_replication_slots() and the copy becomes PostgreSQL's persistent one (a quiet primary)`, async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      const node = await t.slotsync(c, { SLOTSYNC_ENGINE: 'builtin' });
      await t.waitSafe(node, SUBSCRIPTION, SAFE_MS);
      assert.deepEqual(await logicalSlots(c.standby), [
        { slot_name: SUBSCRIPTION, synced: true, temporary: false },
      ]);
      const check = await health(node);
      assert.equal(check?.status, 'pass', JSON.stringify(check));
      assert.match(check.detail, /slotsync calls pg_sync_replication_slots\(\)/);
      // Rows written afterwards reach the subscriber and the copy follows them.
      const writer = new Writer(5);
      writer.start(c.primary);
      await waitFor('rows written', async () => writer.lastCommitted >= 100);
      await stopAndSettle(writer, subscriber, c);
      const [remote] = await c.primary.sql<{ lsn: string }>(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = '${SUBSCRIPTION}'`,
      );
      await waitFor('the copy follows the remote', async () => {
        const [copy] = await c.standby.sql<{ at: boolean }>(
          `SELECT confirmed_flush_lsn >= '${remote?.lsn}'::pg_lsn AS at FROM pg_replication_slots WHERE slot_name = '${SUBSCRIPTION}'`,
        );
        return copy?.at === true;
      });
      await t.waitSafe(node, SUBSCRIPTION, SAFE_MS);
    });

    it(`PostgreSQL ${major}: a copy past its remote (the remote made again behind it) stays not safe after slotsync restarts with the primary gone`, async () => {
      const c = await t.cluster({ synchronizedStandbySlots: true });
      // A slot left behind, then the failover slot, made and moved later.
      await c.primary.sql(`SELECT pg_create_logical_replication_slot('behind', 'test_decoding')`);
      await c.primary.sql('CREATE TABLE moved_on (x int)');
      await c.primary.sql(
        `SELECT pg_create_logical_replication_slot('remade', 'test_decoding', false, false, true)`,
      );
      await c.primary.sql('INSERT INTO moved_on VALUES (1)');
      await c.primary.sql(`SELECT pg_replication_slot_advance('remade', pg_current_wal_lsn())`);
      await c.waitForReplay();
      // No worker of either kind: PostgreSQL's sync runs only in the cycles asked for here,
      // never between the drop below and the failover flag of the slot made again.
      const node = await t.slotsync(c, { SLOTSYNC_ENGINE: 'builtin', SLOTSYNC_WORKER: 'off' });
      // PostgreSQL keeps a copy only once the remote's catalog xmin passed the standby's: the
      // remote moves past a running-xacts record each time round.
      await waitFor(
        "PostgreSQL's persistent copy, safe",
        async () => {
          await c.primary.sql('INSERT INTO moved_on VALUES (2)');
          await c.primary.sql('SELECT pg_log_standby_snapshot()');
          await c.primary.sql(`SELECT pg_replication_slot_advance('remade', pg_current_wal_lsn())`);
          await c.waitForReplay();
          await t.post(node, '/sync');
          return (await t.get(node, '/ready?slots=remade')).status === 200;
        },
        SAFE_MS,
      );
      // The remote dropped and made again behind the copy (a copy of the slot left behind).
      await c.primary.sql(`SELECT pg_drop_replication_slot('remade')`);
      await c.primary.sql(`SELECT pg_copy_logical_replication_slot('behind', 'remade')`);
      await replicationCommandOn(c.primary, 'ALTER_REPLICATION_SLOT remade ( FAILOVER true )');
      await c.waitForReplay();
      const pastRemote = /the copy of "remade" is at .*, past its remote slot/;
      await waitFor('not safe: the copy is past its remote', async () => {
        await t.post(node, '/sync');
        const answer = await t.get(node, '/ready?slots=remade');
        return answer.status === 503 && pastRemote.test(answer.body.not_ready?.[0]?.reason ?? '');
      });
      const [copy] = await c.standby.sql<{ synced: boolean; temporary: boolean }>(
        `SELECT synced, temporary FROM pg_replication_slots WHERE slot_name = 'remade'`,
      );
      assert.deepEqual(
        copy,
        { synced: true, temporary: false },
        "PostgreSQL's copy is still there",
      );

      // The primary dies; slotsync restarts: what it found is not forgotten.
      await c.primary.stop('immediate');
      await node.p.stop();
      const again = await t.restart(node);
      const answer = await t.get(again, '/ready?slots=remade');
      assert.equal(answer.status, 503, JSON.stringify(answer.body));
      assert.match(answer.body.not_ready?.[0]?.reason ?? '', pastRemote);
    });

    it(`PostgreSQL ${major}: switching a live standby from sql to builtin never answers yes without PostgreSQL's persistent copy, and back to sql is refused with the synced slots named`, async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      const sql = await t.slotsync(c);
      const writer = new Writer(5);
      writer.start(c.primary);
      await t.waitSafe(sql, SUBSCRIPTION, SAFE_MS);
      assert.deepEqual(await logicalSlots(c.standby), [
        { slot_name: SUBSCRIPTION, synced: false, temporary: false },
      ]);
      await sql.p.stop();

      // The order that keeps "not safe" shortest: slotsync restarted with the builtin engine
      // first (it drops its own copies at its first cycle), then PostgreSQL's worker turned
      // on, which starts at once and finds nothing in its way. (The other way round the
      // worker stops at slotsync's copies and PostgreSQL starts it again only about a
      // minute later.)
      const switchedAt = Date.now();
      const env = { ...sql.env, SLOTSYNC_ENGINE: 'builtin' };
      const builtin = await t.restart({ ...sql, env });
      await waitFor('own copies dropped', async () =>
        (await logicalSlots(c.standby)).every((slot) => slot.synced),
      );
      await turnWorkerOn(c.standby);
      // Every "yes" during the switch rests on a persistent synced copy.
      let yes = 0;
      let no = 0;
      await waitFor(
        'safe again over PostgreSQL’s copy',
        async () => {
          const answer = await t.get(builtin, `/ready?slots=${SUBSCRIPTION}`);
          if (answer.status !== 200) {
            no++;
            return false;
          }
          const slots = await logicalSlots(c.standby);
          assert.deepEqual(
            slots,
            [{ slot_name: SUBSCRIPTION, synced: true, temporary: false }],
            'a yes with a synced, persistent copy',
          );
          yes++;
          return yes >= 3;
        },
        // PostgreSQL's copy is persistent once the remote passed it (seconds); should the
        // worker's start meet a pg_sync_replication_slots() call of slotsync's, PostgreSQL
        // starts it again about a minute later.
        120_000,
      ).catch(async (error) => {
        process.stdout.write(
          `# slots ${JSON.stringify((await t.get(builtin, '/slots')).body)}\n# health ${JSON.stringify((await t.get(builtin, '/health')).body.checks)}\n# standby log\n${await c.standby.logTail(30)}\n`,
        );
        throw error;
      });
      process.stdout.write(
        `# PostgreSQL ${major}: sql → builtin: not safe for ${Date.now() - switchedAt} ms (${no} "no" answers, then 3 "yes")\n`,
      );
      await builtin.p.stop();

      // Back to sql: refused, the synced slot named, nothing touched.
      await c.standby.sql(`ALTER SYSTEM RESET sync_replication_slots`);
      await c.standby.sql('SELECT pg_reload_conf()');
      const back = await t.restart({ ...sql, env: sql.env });
      await waitFor(
        'the refusal',
        async () => /SLOTSYNC_ENGINE=sql/.test(JSON.stringify((await t.get(back, '/health')).body)),
        30_000,
      );
      const refusal = JSON.stringify((await t.get(back, '/health')).body);
      assert.match(refusal, new RegExp(`synced = true\\): \\\\"${SUBSCRIPTION}\\\\"`));
      assert.match(refusal, /fresh base backup/);
      assert.equal((await t.get(back, `/ready?slots=${SUBSCRIPTION}`)).status, 503);
      assert.deepEqual(await logicalSlots(c.standby), [
        { slot_name: SUBSCRIPTION, synced: true, temporary: false },
      ]);
      await writer.stop();
    });
  });
}
