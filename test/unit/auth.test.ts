import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isLoopback, tokenMatches } from '../../src/service/plugins/auth.js';

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
