import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { nextRecord } from '../../src/engine/facts.js';
import type { SlotSyncError } from '../../src/errors.js';
import { Registry } from '../../src/registry/registry.js';
import { parseLsn } from '../../src/sync/lsn.js';
import { stagingNameOf } from '../../src/sync/names.js';
import { entry } from '../helpers/slots.js';

const dirs: string[] = [];
async function freshDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'slotsync-registry-'));
  dirs.push(dir);
  return dir;
}
after(async () => {
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

describe('ownership registry', () => {
  it('starts empty, round-trips entries with LSNs over 64 bits', async () => {
    const dir = await freshDir();
    const registry = await Registry.open(dir);
    assert.equal(registry.entries.size, 0);
    const e = entry('a"b\\c', 'sync_ready', {
      confirmedFlushLsn: parseLsn('FFFFFFFF/1'),
      catalogXmin: 4294967290,
    });
    await registry.write(new Map([[e.name, e]]));
    const reopened = await Registry.open(dir);
    assert.deepEqual(reopened.entries.get('a"b\\c'), e);
    assert.deepEqual(await readdir(dir), ['registry.json'], 'no temporary file is left behind');
  });

  it('makes its folder 0700, and refuses one others may write to or that belongs to someone else', async () => {
    const parent = await freshDir();
    const made = join(parent, 'state');
    await Registry.open(made);
    assert.equal((await stat(made)).mode & 0o777, 0o700);
    const open = join(parent, 'open');
    await mkdir(open);
    await chmod(open, 0o777);
    await assert.rejects(Registry.open(open), (error: SlotSyncError) => {
      assert.equal(error.code, 'SLOTSYNC_CONFIG');
      assert.match(
        error.message,
        /^SLOTSYNC_STATE_DIR: .* may be written by group or others \(mode 777\)/,
      );
      return true;
    });
    assert.deepEqual(await readdir(open), [], 'nothing written there');
    if (process.getuid?.() === 0) {
      const foreign = join(parent, 'foreign');
      await mkdir(foreign, { mode: 0o700 });
      await chown(foreign, 65534, 65534);
      await assert.rejects(Registry.open(foreign), /belongs to user 65534/);
    }
  });

  it('refuses corrupt content with a clear message instead of replacing it', async () => {
    const dir = await freshDir();
    await writeFile(
      join(dir, 'registry.json'),
      '{"format":"slotsync-registry","version":1,"slots":[{"name":',
    );
    await assert.rejects(Registry.open(dir), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'SLOTSYNC_REGISTRY_CORRUPT');
      assert.match(error.message, /registry\.json is corrupt: it is not JSON/);
      return true;
    });
    await writeFile(
      join(dir, 'registry.json'),
      '{"format":"slotsync-registry","version":1,"slots":[{"name":"x"}]}',
    );
    await assert.rejects(Registry.open(dir), /is corrupt: \/slots\/0/);
    await writeFile(
      join(dir, 'registry.json'),
      JSON.stringify({
        format: 'slotsync-registry',
        version: 1,
        slots: [
          {
            ...entry('x', 'sync_ready'),
            createdLsn: 'nope',
            confirmedFlushLsn: null,
            restartLsn: null,
          },
        ],
      }),
    );
    await assert.rejects(Registry.open(dir), /is corrupt: invalid input syntax for type pg_lsn/);
    assert.match(
      await readFile(join(dir, 'registry.json'), 'utf8'),
      /nope/,
      'the corrupt file is kept for the operator',
    );
  });

  it('sees a write made by another process (refresh)', async () => {
    const dir = await freshDir();
    const one = await Registry.open(dir);
    const two = await Registry.open(dir);
    await one.write(new Map([['a', entry('a', 'staging')]]));
    await two.refresh();
    assert.equal(two.entries.get('a')?.state, 'staging');
  });

  it('a kill -9 during writes leaves the old or the new content, never a broken file', async () => {
    const dir = await freshDir();
    const script = `
      import { Registry } from ${JSON.stringify(new URL('../../src/registry/registry.ts', import.meta.url).pathname)};
      const registry = await Registry.open(${JSON.stringify(dir)});
      const big = (n) => new Map(Array.from({ length: 2000 }, (_, i) => ['slot' + i, {
        name: 'slot' + i, database: 'postgres', plugin: 'pgoutput', twoPhase: false, state: 'sync_ready',
        createdLsn: 1n, createdAt: null, confirmedFlushLsn: BigInt(n), restartLsn: null, catalogXmin: n,
        remoteInvalidation: null, updatedAt: 'x' }]));
      process.stdout.write('ready\\n');
      for (let n = 1; ; n++) await registry.write(big(n));
    `;
    for (let round = 0; round < 5; round++) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 150 + round * 37));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const reopened = await Registry.open(dir);
      assert.ok(
        reopened.entries.size === 0 || reopened.entries.size === 2000,
        `round ${round}: ${reopened.entries.size}`,
      );
    }
    const final = await Registry.open(dir);
    assert.equal(final.entries.size, 2000, 'at least one write completed');
  });

  it('a failed write (read-only folder) keeps the old content and says why', async () => {
    if (process.getuid?.() === 0) {
      // root ignores permissions: use a path that cannot be a folder instead
      const dir = await freshDir();
      const registry = await Registry.open(dir);
      await registry.write(new Map([['a', entry('a', 'staging')]]));
      await rm(dir, { recursive: true });
      await writeFile(dir, 'not a folder');
      await assert.rejects(registry.write(new Map()), /could not write the ownership registry/);
      assert.equal(registry.entries.size, 1);
      await rm(dir);
      return;
    }
    const dir = await freshDir();
    const registry = await Registry.open(dir);
    await registry.write(new Map([['a', entry('a', 'staging')]]));
    const { chmod } = await import('node:fs/promises');
    await chmod(dir, 0o500);
    await assert.rejects(registry.write(new Map()), /could not write the ownership registry/);
    await chmod(dir, 0o700);
    assert.equal((await Registry.open(dir)).entries.size, 1);
  });

  it('reads a version 1 file: not-ready copies under the remote name are retired, ready ones kept', async () => {
    const dir = await freshDir();
    const v1 = (name: string, state: string) => ({
      name,
      database: 'postgres',
      plugin: 'pgoutput',
      twoPhase: false,
      state,
      createdLsn: '0/1000',
      createdAt: null,
      confirmedFlushLsn: '0/1000',
      restartLsn: null,
      catalogXmin: null,
      remoteInvalidation: null,
      updatedAt: 'x',
    });
    await writeFile(
      join(dir, 'registry.json'),
      JSON.stringify({
        format: 'slotsync-registry',
        version: 1,
        slots: [v1('t', 'temporary'), v1('c', 'creating'), v1('r', 'sync_ready')],
      }),
    );
    const registry = await Registry.open(dir);
    assert.equal(registry.entries.get('t')?.state, 'retiring');
    assert.equal(registry.entries.get('c')?.state, 'retiring');
    assert.equal(registry.entries.get('r')?.state, 'sync_ready');
    assert.equal(registry.entries.get('r')?.stagingName, stagingNameOf('r'));
    assert.equal(registry.node, null, 'bound to the standby by the first cycle');
  });

  it('keeps the node binding, and a registry that vanished after it was written is an error', async () => {
    const dir = await freshDir();
    const registry = await Registry.open(dir);
    const node = { marker: 'slotsync_node_x', systemIdentifier: '42', timeline: 1 };
    await registry.write(new Map([['a', entry('a', 'staging')]]), { node });
    assert.deepEqual((await Registry.open(dir)).node, node);
    await rm(join(dir, 'registry.json'));
    await assert.rejects(
      registry.refresh(),
      /SLOTSYNC_STATE_DIR: .* vanished after it was written/,
    );
  });
});

describe('the primary’s facts (primary.json)', () => {
  const facts = (waits: boolean) => ({
    standbySlot: 'standby_slot',
    waitsForStandby: waits,
    failoverSlots: ['a'],
    ahead: [],
    quorumSilentMs: null,
    diverged: null,
    unprotected: null,
    otherTimeline: null,
    standbyTimeline: 1,
  });
  const node = {
    marker: 'slotsync_node_0123456789abcdef01234567',
    systemIdentifier: '42',
    timeline: 1,
  };

  it('a process that does not hold the copies records facts without writing back an older list of them', async () => {
    const dir = await freshDir();
    const cycle = await Registry.open(dir);
    await cycle.write(new Map(), { node });
    const readiness = await Registry.open(dir); // the gate, or /ready in another process
    await cycle.write(new Map([['a', entry('a', 'sync_ready')]]));
    await readiness.writePrimary(() => ({ facts: facts(false), since: 1_000 }));
    const reopened = await Registry.open(dir);
    assert.equal(reopened.entries.get('a')?.state, 'sync_ready', 'the copies are untouched');
    assert.equal(reopened.primary?.facts.waitsForStandby, false);
    assert.equal(reopened.primary?.facts.standbyTimeline, 1);
    await cycle.refresh();
    assert.equal(cycle.primary?.facts.waitsForStandby, false, 'seen by the other process');
  });

  it('the update runs on the facts as they are on disk; facts of another binding are not this node’s; unbound: memory only', async () => {
    const dir = await freshDir();
    const one = await Registry.open(dir);
    await one.write(new Map(), { node });
    const two = await Registry.open(dir);
    await one.writePrimary(() => ({ facts: facts(false), since: 2_000 }));
    let seen: boolean | undefined;
    await two.writePrimary((current) => {
      seen = current?.facts.waitsForStandby;
      return undefined;
    });
    assert.equal(seen, false, 'two saw what one wrote before deciding');
    await one.write(new Map(), {
      node: { ...node, marker: 'slotsync_node_ffffffffffffffffffffffff' },
    });
    assert.equal((await Registry.open(dir)).primary, null, 'another marker: not this node’s facts');
    const unbound = await Registry.open(await freshDir());
    await unbound.writePrimary(() => ({ facts: facts(true), since: 1 }));
    assert.equal(unbound.primary?.facts.waitsForStandby, true);
    assert.equal(unbound.exists, false, 'nothing written for a folder bound to no node');
  });

  it('keeps the builtin engine’s past-remote evidence with the facts: a restart still knows it, a new read of the facts keeps it', async () => {
    const dir = await freshDir();
    const one = await Registry.open(dir);
    await one.write(new Map(), { node });
    const pastRemote = new Map([
      ['sub', { copy: parseLsn('1/00000200'), remote: parseLsn('1/00000100') }],
    ]);
    await one.writePrimary(() => ({ facts: facts(true), since: 1_000, pastRemote }));
    const restarted = await Registry.open(dir);
    assert.deepEqual(restarted.primary?.pastRemote, pastRemote);
    // A later read whose facts differ is recorded as facts alone: the evidence stays.
    await restarted.writePrimary((recorded) =>
      nextRecord(recorded, {
        facts: facts(false),
        at: 2_000,
        positions: null,
      }),
    );
    const again = await Registry.open(dir);
    assert.equal(again.primary?.facts.waitsForStandby, false);
    assert.deepEqual(again.primary?.pastRemote, pastRemote);
  });
});
