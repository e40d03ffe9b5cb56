import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Mutex } from '../../src/service/mutex.js';

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
