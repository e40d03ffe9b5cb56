/**
 * POST routes change the standby: they need the bearer token (compared in constant time),
 * or, without a token, a loopback listener (the server refuses other addresses then).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { sendProblem } from './errors.js';

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Constant time whatever the lengths: both sides are hashed to 32 bytes first. */
export function tokenMatches(presented: string, expected: string): boolean {
  return timingSafeEqual(digest(presented), digest(expected));
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export interface AuthOptions {
  token: () => string | undefined;
  host: () => string;
}

export default fp(
  async (app: FastifyInstance, options: AuthOptions) => {
    app.addHook('onRequest', async (request: FastifyRequest, reply) => {
      if (request.method !== 'POST') return;
      const expected = options.token();
      if (expected === undefined) {
        if (isLoopback(options.host())) return;
        return sendProblem(reply, {
          status: 403,
          code: 'SLOTSYNC_FORBIDDEN',
          detail: 'POST routes need SLOTSYNC_API_TOKEN when the API listens beyond loopback',
        });
      }
      const header = request.headers.authorization ?? '';
      const match = /^Bearer\s+(.+)$/i.exec(header);
      if (!match || !tokenMatches(match[1]?.trim() ?? '', expected)) {
        reply.header('www-authenticate', 'Bearer realm="slotsync"');
        return sendProblem(reply, {
          status: 401,
          code: 'SLOTSYNC_UNAUTHORIZED',
          detail: 'a valid bearer token is required (Authorization: Bearer <SLOTSYNC_API_TOKEN>)',
        });
      }
    });
  },
  { name: 'slotsync-auth' },
);
