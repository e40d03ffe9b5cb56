/**
 * Issue 10 on real PostgreSQL 17 and 18, deterministically at each step boundary of staging
 * and publication (CyclePoint in src/engine/apply.ts):
 * - kill -9 there: the cycle never runs another statement, the server ends its sessions,
 *   and a new engine on the same state folder recovers: ownership intact, no slot owned by
 *   nobody, the copy published once ready, invariants 1-8 hold after every cycle;
 * - the standby promoted there, slotsync running: a creation finishing after the promotion
 *   leaves nothing under the subscriber's name, and a publication finishing after it hands
 *   the consumer every change after its own position, no more, no less.
 */
import assert from 'node:assert/strict';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { APPLICATION_NAME } from '../../src/db/pools.js';
import type { CyclePoint } from '../../src/engine/apply.js';
import { runCycle } from '../../src/engine/cycle.js';
import type { Engine } from '../../src/engine/engine.js';
import { stagingNameOf } from '../../src/sync/names.js';
import {
  advancePrimarySlot,
  consume,
  createPrimarySlot,
  dropEverySlot,
  openEngine,
  slotRow,
  writeRows,
} from '../helpers/harness.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';
import { type Cluster, startCluster } from '../support/cluster.js';
import { InvariantChecker } from '../support/invariants.js';

const SLOT = 'crash_a';
const STAGING = stagingNameOf(SLOT);

/** Points of the first cycle (creation) and of the second (advance and publication). */
const CREATION: CyclePoint[] = ['creation_intent', 'created'];
const PUBLICATION: CyclePoint[] = [
  'advance_target',
  'advanced',
  'publication_intent',
  'published',
  'staging_dropped',
];

/** The slots on the standby when the process dies at each point. */
const LEFT: Record<string, string[]> = {
  creation_intent: [],
  created: [STAGING],
  advance_target: [STAGING],
  advanced: [STAGING],
  publication_intent: [STAGING],
  published: [SLOT, STAGING],
  staging_dropped: [SLOT],
  dropped: [],
};

/**
 * Makes the next cycle of `engine` stop for good at `point`, as kill -9 would stop the
 * process there; resolves when it got there.
 */
function stopAt(engine: Engine, point: CyclePoint): { reached: Promise<void>; resume: () => void } {
  let resume!: () => void;
  const gate = new Promise<void>((resolve) => {
    resume = resolve;
  });
  const reached = new Promise<void>((resolve) => {
    engine.deps.pauseAt = async (p) => {
      if (p !== point) return;
      engine.deps.pauseAt = undefined;
      resolve();
      await gate;
    };
  });
  return { reached, resume };
}

/** The server's half of a kill -9: every session of slotsync's engines ends. */
async function endSessions(cluster: Cluster): Promise<void> {
  for (const server of [cluster.primary, cluster.standby]) {
    if (!server.running) continue;
    await server.sql(
      'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = ANY($1)',
      [Object.values(APPLICATION_NAME)],
    );
  }
}

async function logicalSlots(cluster: Cluster): Promise<string[]> {
  const rows = await cluster.standby.sql<{ slot_name: string }>(
    `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1`,
  );
  return rows.map((r) => r.slot_name);
}

async function registryOf(stateDir: string): Promise<Record<string, { state: string }>> {
  const file = JSON.parse(await readFile(join(stateDir, 'registry.json'), 'utf8'));
  return Object.fromEntries(
    (file.slots as { name: string; state: string }[]).map((e) => [e.name, e]),
  );
}

/** Ids of rows of the `load` table a test_decoding stream inserted. */
function insertedIds(rows: { data: string }[]): number[] {
  return rows
    .map((r) => /^table public\.load: INSERT: id\[bigint\]:(\d+)/.exec(r.data)?.[1])
    .filter((id): id is string => id !== undefined)
    .map(Number);
}

async function maxLoadId(cluster: Cluster): Promise<number> {
  const [row] = await cluster.primary.sql<{ max: number }>(
    'SELECT coalesce(max(id), 0)::int AS max FROM load',
  );
  return row?.max ?? 0;
}

for (const major of MAJORS) {
  describe(`crash points on PostgreSQL ${major}`, () => {
    let cluster: Cluster;
    const cleanups: (() => Promise<void>)[] = [];
    before(async () => {
      cluster = await startCluster({ major });
      await writeRows(cluster, 1);
    });
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
      await cluster?.stop();
    });

    /** A new deployment: no slot anywhere, a fresh state folder, an engine on it. */
    async function deploy(): Promise<{ stateDir: string; engine: Engine }> {
      await dropEverySlot(cluster);
      const stateDir = await tempDir('crash');
      cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
      const engine = await openEngine(cluster, stateDir);
      cleanups.push(() => engine.close());
      return { stateDir, engine };
    }

    for (const point of [...CREATION, ...PUBLICATION, 'dropped' as const]) {
      it(`kill -9 at ${point}: the next start recovers, ownership intact, invariants hold`, async () => {
        const { stateDir, engine } = await deploy();
        const invariants = new InvariantChecker(cluster, stateDir);
        const cycle = async (e: Engine) => {
          const result = await runCycle(e.deps);
          await invariants.check();
          return result;
        };
        await createPrimarySlot(cluster, SLOT, { plugin: 'test_decoding' });
        await cluster.waitForReplay();
        if (!CREATION.includes(point)) {
          await cycle(engine); // staged
          await writeRows(cluster, 10);
          await advancePrimarySlot(cluster, SLOT);
          await cluster.waitForReplay();
        }
        if (point === 'dropped') {
          await cycle(engine); // published
          assert.deepEqual(await logicalSlots(cluster), [SLOT]);
          await cluster.primary.sql('SELECT pg_drop_replication_slot($1)', [SLOT]);
          await cluster.waitForReplay();
        }

        const crash = stopAt(engine, point);
        void runCycle(engine.deps).catch(() => undefined);
        await crash.reached;
        await endSessions(cluster);
        assert.deepEqual(await logicalSlots(cluster), LEFT[point], 'what the dead process left');
        // What it left must already be safe: a copy under the name is ready.
        await invariants.check();

        const restarted = await openEngine(cluster, stateDir);
        cleanups.push(() => restarted.close());
        if (point === 'dropped') {
          await cycle(restarted);
          assert.deepEqual(await logicalSlots(cluster), [], 'the copy of the dropped slot is gone');
          assert.equal((await registryOf(stateDir))[SLOT], undefined, 'and forgotten');
          return;
        }
        await cycle(restarted);
        await writeRows(cluster, 10);
        await advancePrimarySlot(cluster, SLOT);
        await cluster.waitForReplay();
        const last = await cycle(restarted);
        const report = last.report.slots.find((s) => s.name === SLOT);
        assert.equal(report?.state, 'sync_ready', JSON.stringify(last.report.slots));
        assert.deepEqual(
          await logicalSlots(cluster),
          [SLOT],
          'one copy, published; no staging slot left',
        );
        assert.equal((await registryOf(stateDir))[SLOT]?.state, 'sync_ready');
        const [copy, remote] = [
          await slotRow(cluster.standby, SLOT),
          await slotRow(cluster.primary, SLOT),
        ];
        assert.equal(copy?.confirmed_flush_lsn, remote?.confirmed_flush_lsn);
      });
    }
  });

  describe(`binding a state folder, killed half way, on PostgreSQL ${major}`, () => {
    let cluster: Cluster;
    const cleanups: (() => Promise<void>)[] = [];
    before(async () => {
      cluster = await startCluster({ major });
    });
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
      await cluster?.stop();
    });

    for (const point of ['binding_intent', 'binding_marker'] as const) {
      it(`kill -9 at ${point}: the next start completes the binding, with no SLOTSYNC_RESET_STATE`, async () => {
        await dropEverySlot(cluster);
        const stateDir = await tempDir('bind');
        cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
        const engine = await openEngine(cluster, stateDir);
        cleanups.push(() => engine.close());
        const crash = stopAt(engine, point);
        void runCycle(engine.deps).catch(() => undefined);
        await crash.reached;
        await endSessions(cluster);
        const markers = async () =>
          (
            await cluster.standby.sql<{ slot_name: string }>(
              `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'slotsync\\_node\\_%'`,
            )
          ).map((r) => r.slot_name);
        const intent = JSON.parse(await readFile(join(stateDir, 'registry.json'), 'utf8')).node;
        assert.equal(intent.pending, true, 'the intent is written before the marker');
        assert.deepEqual(await markers(), point === 'binding_intent' ? [] : [intent.marker]);

        const restarted = await openEngine(cluster, stateDir);
        cleanups.push(() => restarted.close());
        await runCycle(restarted.deps);
        const bound = JSON.parse(await readFile(join(stateDir, 'registry.json'), 'utf8')).node;
        assert.equal(bound.marker, intent.marker, 'the intended marker, now bound');
        assert.equal(bound.pending, undefined);
        assert.deepEqual(await markers(), [intent.marker]);
        await runCycle(restarted.deps); // and it stays bound
      });
    }
  });

  describe(`promotion in the middle of a cycle on PostgreSQL ${major}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    });

    async function setUp(): Promise<{ cluster: Cluster; engine: Engine }> {
      const cluster = await startCluster({ major });
      cleanups.push(() => cluster.stop());
      const stateDir = await tempDir('promote');
      cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
      const engine = await openEngine(cluster, stateDir);
      cleanups.push(() => engine.close());
      await writeRows(cluster, 1);
      await createPrimarySlot(cluster, SLOT, { plugin: 'test_decoding' });
      return { cluster, engine };
    }

    /** The primary dies and the standby is promoted; no POST /shutdown. */
    async function failOver(cluster: Cluster): Promise<void> {
      await cluster.waitForReplay();
      await cluster.primary.stop('immediate');
      await cluster.standby.promote();
    }

    it('during a creation: the staging slot made after the promotion is never published, and the next cycle drops it', async () => {
      const { cluster, engine } = await setUp();
      await writeRows(cluster, 50); // not consumed: a copy made now could not serve them
      await cluster.waitForReplay();
      const hold = stopAt(engine, 'creation_intent');
      const cycle = runCycle(engine.deps);
      await hold.reached;
      await failOver(cluster);
      hold.resume();
      await cycle; // the creation runs on the promoted server, under the staging name
      assert.deepEqual(await logicalSlots(cluster), [STAGING]);
      await assert.rejects(
        cluster.standby.sql(`SELECT * FROM pg_logical_slot_get_changes($1, NULL, NULL)`, [SLOT]),
        { code: '42704' },
        'the consumer gets "does not exist", never a stream with a gap',
      );
      await assert.rejects(runCycle(engine.deps), /can only be synchronized to a standby/);
      assert.deepEqual(await logicalSlots(cluster), [], 'the next cycle dropped the staging slot');
    });

    it('during a publication: the copy published after the promotion gives the consumer every change after its position', async () => {
      const { cluster, engine } = await setUp();
      await cluster.waitForReplay();
      await runCycle(engine.deps); // staged
      await writeRows(cluster, 50);
      const consumed = await maxLoadId(cluster);
      // The consumer receives these rows and confirms them.
      const received = await consume(cluster.primary, SLOT);
      assert.equal(insertedIds(received).at(-1), consumed);
      await writeRows(cluster, 50); // committed, not yet received by the consumer
      const written = await maxLoadId(cluster);
      await cluster.waitForReplay();
      const hold = stopAt(engine, 'publication_intent');
      const cycle = runCycle(engine.deps);
      await hold.reached;
      await failOver(cluster);
      hold.resume();
      await cycle;
      assert.deepEqual(await logicalSlots(cluster), [SLOT], 'published; staging slot dropped');
      const after = await consume(cluster.standby, SLOT);
      const expected = Array.from({ length: written - consumed }, (_, i) => consumed + 1 + i);
      assert.deepEqual(insertedIds(after), expected);
      await assert.rejects(runCycle(engine.deps), /can only be synchronized to a standby/);
      assert.deepEqual(await logicalSlots(cluster), [SLOT], 'the published copy is kept');
    });
  });
}
