import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nextNaptime } from '../../src/service/naptime.js';

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
