import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import auth, { isLoopback, tokenMatches } from '../../src/service/plugins/auth.js';

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

async function authApp(token: string | undefined) {
  const app = Fastify();
  await app.register(auth, { token: () => token, host: () => '127.0.0.1' });
  app.post('/shutdown', async () => ({ stopped: true }));
  await app.ready();
  return app;
}

describe('POST without a token on loopback: local clients only', () => {
  it('refuses a browser (Origin header) or a name that is not loopback (DNS rebinding)', async () => {
    const app = await authApp(undefined);
    const post = (headers: Record<string, string>) =>
      app.inject({ method: 'POST', url: '/shutdown', headers }).then((r) => r.statusCode);
    assert.equal(await post({ origin: 'https://evil.example' }), 403);
    assert.equal(await post({ host: 'evil.example:8432' }), 403);
    assert.equal(await post({ host: '127.0.0.1:8432' }), 200);
    assert.equal(await post({ host: '[::1]:8432' }), 200);
    assert.equal(await post({ host: 'localhost' }), 200);
  });

  it('a client that keeps failing is refused for a minute, even with the right token; others are not', async () => {
    const app = await authApp('right-token-0123456789');
    const post = (token: string, remoteAddress = '10.0.0.9') =>
      app
        .inject({
          method: 'POST',
          url: '/shutdown',
          remoteAddress,
          headers: { authorization: `Bearer ${token}` },
        })
        .then((r) => r.statusCode);
    for (let i = 0; i < 30; i++) assert.equal(await post('wrong'), 401);
    assert.equal(await post('right-token-0123456789'), 429);
    assert.equal(await post('right-token-0123456789', '10.0.0.10'), 200);
  });
});
