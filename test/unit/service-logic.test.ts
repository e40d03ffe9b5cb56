import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Mutex } from '../../src/service/mutex.js';
import { nextNaptime } from '../../src/service/naptime.js';
import { isLoopback, tokenMatches } from '../../src/service/plugins/auth.js';
import { buildSlotViews } from '../../src/sync/view.js';
import { entry, local, remote, stage } from '../helpers/slots.js';

describe('wait_for_slot_activity naptime', () => {
  it('doubles while nothing changes, up to the maximum, and resets on change', () => {
    let nap = 200;
    const seen: number[] = [];
    for (let i = 0; i < 10; i++) {
      nap = nextNaptime(nap, false, 200, 30_000);
      seen.push(nap);
    }
    assert.deepEqual(seen, [400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
    assert.equal(nextNaptime(30_000, true, 200, 30_000), 200);
  });
});

describe('sync mutex', () => {
  it('serializes holders in order and bounds the wait', async () => {
    const mutex = new Mutex();
    const order: number[] = [];
    const release1 = await mutex.acquire();
    const second = mutex.acquire().then((release) => {
      order.push(2);
      release();
    });
    await assert.rejects(
      mutex.acquire(20, () => new Error('waited too long')),
      /waited too long/,
    );
    order.push(1);
    release1();
    await second;
    assert.deepEqual(order, [1, 2]);
    assert.equal(mutex.locked, false);
  });
});

describe('API token', () => {
  it('matches only the exact token, whatever the lengths', () => {
    assert.equal(tokenMatches('a-long-secret-token', 'a-long-secret-token'), true);
    assert.equal(tokenMatches('a-long-secret-tokenX', 'a-long-secret-token'), false);
    assert.equal(tokenMatches('', 'a-long-secret-token'), false);
  });

  it('knows loopback addresses', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost'])
      assert.equal(isLoopback(host), true, host);
    for (const host of ['0.0.0.0', '10.0.0.1', '::', 'example.org'])
      assert.equal(isLoopback(host), false, host);
  });
});

describe('slot views', () => {
  it('shows sync_ready only for owned, ready copies, with lag in bytes', () => {
    const views = buildSlotViews(
      [remote('a', '0/3000'), remote('b', '0/3000'), remote('c', '0/3000')],
      [local('a', '0/2000'), local(stage('b'), '0/2000'), local('c', '0/2000')],
      new Map([
        ['a', entry('a', 'sync_ready')],
        ['b', entry('b', 'staging')],
      ]),
      [{ name: 'c', action: 'conflict', state: 'conflict', reason: 'same name' }],
    );
    const byName = Object.fromEntries(views.map((v) => [v.name, v]));
    assert.equal(byName.a?.sync_ready, true);
    assert.equal(byName.a?.lag_bytes, 0x1000);
    assert.equal(byName.b?.sync_ready, false);
    assert.equal(byName.b?.state, 'temporary');
    assert.equal(byName.b?.staging_name, stage('b'), 'both names shown while staging');
    assert.equal(byName.a?.staging_name, null);
    assert.equal(byName.c?.state, 'conflict');
    assert.equal(byName.c?.sync_ready, false);
    assert.equal(byName.c?.lag_bytes, null);
  });

  it('never shows as ready a copy the standby shows invalidated now', () => {
    const [view] = buildSlotViews(
      [remote('a', '0/3000')],
      [local('a', '0/2000', { invalidationReason: 'rows_removed' })],
      new Map([['a', entry('a', 'sync_ready')]]),
      [],
    );
    assert.equal(view?.sync_ready, false);
  });
});
