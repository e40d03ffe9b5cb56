import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Book, copySlot, intentEntry } from '../../src/engine/apply.js';
import type { Registry } from '../../src/registry/registry.js';
import type { RegistryEntry } from '../../src/sync/types.js';
import { entry, remote, stage } from '../helpers/slots.js';

/** A book over `entries` whose registry counts writes; the lock is held while `held()`. */
function book(entries: RegistryEntry[], held = () => true) {
  const writes: Map<string, RegistryEntry>[] = [];
  const registry = {
    write: async (next: Map<string, RegistryEntry>) => {
      writes.push(new Map(next));
    },
  } as unknown as Registry;
  const b = new Book(new Map(entries.map((e) => [e.name, e])), registry, { pid: 1, held });
  return { book: b, writes };
}

describe('apply: the cycle book', () => {
  it('a copy created in this cycle stays reported as created through its first advance and publication', () => {
    const { book: b } = book([]);
    b.report('a', 'created', 'temporary', null);
    b.report('a', 'advanced', 'temporary', null);
    b.report('a', 'ready', 'sync_ready', 'caught up');
    assert.deepEqual(b.reports.get('a'), {
      name: 'a',
      action: 'created',
      state: 'sync_ready',
      reason: 'caught up',
    });
    b.report('a', 'failed', 'temporary', 'boom');
    assert.equal(b.reports.get('a')?.action, 'failed', 'a failure is never hidden');
  });

  it('writes the registry only when an entry changed, and never without the lock', async () => {
    let locked = true;
    const { book: b, writes } = book([entry('a', 'sync_ready')], () => locked);
    await b.persist();
    assert.equal(writes.length, 0, 'nothing changed: no write');
    b.set('a', { state: 'publishing' });
    await b.persist();
    assert.equal(writes.length, 1);
    assert.equal(writes[0]?.get('a')?.state, 'publishing');
    b.forget('a');
    locked = false;
    await assert.rejects(b.persist(), { code: 'SLOTSYNC_LOCK_LOST' });
    assert.equal(writes.length, 1, 'a cycle that lost the lock writes nothing');
  });

  it('a fresh intent names its staging slot and holds no position yet; a copy literal matches its record', () => {
    const r = remote('a', '0/20', { plugin: 'test_decoding', database: 'db1' });
    const intent = intentEntry(r, stage('a'), '2026-11-26T00:00:00.000Z');
    assert.equal(intent.state, 'creating');
    assert.equal(intent.stagingName, stage('a'));
    assert.equal(intent.confirmedFlushLsn, null);
    const copy = copySlot(stage('a'), intent, 0x20n);
    assert.deepEqual(
      [copy.name, copy.plugin, copy.database, copy.confirmedFlushLsn, copy.temporary],
      [stage('a'), 'test_decoding', 'db1', 0x20n, false],
    );
  });
});
