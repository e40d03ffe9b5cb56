import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RecentMap } from '../../src/util.js';

describe('RecentMap (per-client state anyone can make grow)', () => {
  it('never holds more than its limit, forgetting the key set the longest ago, one at a time', () => {
    const map = new RecentMap<string, number>(3);
    for (const [key, value] of [
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ] as const)
      map.set(key, value);
    map.set('a', 10); // a becomes the most recent
    map.set('d', 4); // full: b, set the longest ago, goes
    assert.equal(map.size, 3);
    assert.equal(map.get('b'), undefined);
    assert.equal(map.get('a'), 10);
    assert.equal(map.get('c'), 3);
    assert.equal(map.get('d'), 4);
    map.set('e', 5);
    assert.equal(map.get('c'), undefined, 'then c');
    assert.equal(map.size, 3);
  });
});
