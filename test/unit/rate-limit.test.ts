import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import rateLimit from '../../src/service/plugins/rate-limit.js';

async function appWith(perSecond: () => number) {
  const app = Fastify();
  await app.register(rateLimit, { perSecond });
  app.post('/sync', { config: { rateLimited: true } }, async () => ({ ok: true }));
  app.get('/slots', async () => ({ ok: true }));
  await app.ready();
  const post = (remoteAddress = '10.0.0.1') =>
    app.inject({ method: 'POST', url: '/sync', remoteAddress }).then((r) => r.statusCode);
  return { app, post };
}

describe('POST /sync rate limit', () => {
  it('allows bursts of twice the rate per client, then 429; other routes and clients are free', async () => {
    const { app, post } = await appWith(() => 1);
    assert.deepEqual([await post(), await post(), await post()], [200, 200, 429]);
    assert.equal(await post('10.0.0.2'), 200);
    assert.equal((await app.inject({ method: 'GET', url: '/slots' })).statusCode, 200);
  });

  it('follows a reloaded rate at once', async () => {
    let rate = 1;
    const { post } = await appWith(() => rate);
    await post();
    await post();
    assert.equal(await post(), 429);
    rate = 0; // SLOTSYNC_SYNC_RATE=0: unlimited
    assert.equal(await post(), 200);
  });
});
