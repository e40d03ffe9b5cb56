import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { createLogger, STDERR } from '../../src/logger.js';
import { passwordsOf, redactSecrets } from '../../src/redact.js';

/** A logger writing into an array of parsed lines. */
function captured(secrets: string[]) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: createLogger('info', STDERR, secrets, sink), lines };
}

describe('the access log', () => {
  it("has a real request's method, URL, status and duration, secrets still redacted", async () => {
    const secrets = ['tok-0123456789abcdef'];
    const { logger, lines } = captured(secrets);
    const app = Fastify({ loggerInstance: logger as FastifyBaseLogger });
    app.get('/health/live', async () => ({ status: 'pass' }));
    await app.inject({ method: 'GET', url: '/health/live?token=tok-0123456789abcdef' });
    await app.close();
    const done = lines.find((l) => l.msg === 'request completed');
    assert.ok(done, JSON.stringify(lines));
    const incoming = lines.find((l) => l.msg === 'incoming request');
    assert.deepEqual(
      {
        method: (incoming?.req as { method?: string } | undefined)?.method,
        url: (incoming?.req as { url?: string } | undefined)?.url,
      },
      { method: 'GET', url: '/health/live?token=*****' },
    );
    assert.equal((done.res as { statusCode?: number }).statusCode, 200);
    assert.equal(typeof done.responseTime, 'number');
  });
});

describe('logs redact secrets by what they are', () => {
  it('keeps request URLs readable, so /sync and /shutdown can be told apart', () => {
    const { logger, lines } = captured(['tok-0123456789abcdef']);
    logger.info({ req: { method: 'POST', url: '/shutdown' } }, 'incoming request');
    assert.equal((lines[0]?.req as { url?: string } | undefined)?.url, '/shutdown');
  });

  it('redacts a connection string password, the token and a database password anywhere', () => {
    const secrets = ['tok-0123456789abcdef', ...passwordsOf('postgres://u:db%20pw@h/d')];
    assert.deepEqual(secrets.slice(1), ['db pw']);
    const { logger, lines } = captured(secrets);
    logger.error(
      {
        err: 'connect to postgres://u:other-pw@h/d failed; host=h password=kw-pw',
        nested: { deeper: ['token tok-0123456789abcdef', 'password was db pw'] },
        headers: { authorization: 'Bearer x' },
      },
      'message with tok-0123456789abcdef',
    );
    const text = JSON.stringify(lines[0]);
    for (const secret of ['other-pw', 'kw-pw', 'tok-0123456789abcdef', 'db pw', 'Bearer x']) {
      assert.doesNotMatch(text, new RegExp(secret), secret);
    }
    assert.match(text, /postgres:\/\/u:\*\*\*\*\*@h\/d/);
  });

  it('redactSecrets leaves texts without secrets alone', () => {
    assert.equal(redactSecrets('POST /sync 200', ['tok']), 'POST /sync 200');
  });
});
