/**
 * POST routes change the standby: they need the bearer token (compared in constant time),
 * or, without a token, a loopback listener (the server refuses other addresses then).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { RecentMap } from '../../util.js';
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

/** The host of a Host header (`127.0.0.1:8432`, `[::1]:8432`, `localhost`), without its port. */
export function hostOf(header: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(header);
  if (bracketed) return bracketed[1] as string;
  return header.replace(/:\d+$/, '');
}

export interface AuthOptions {
  token: () => string | undefined;
  host: () => string;
  /** SLOTSYNC_READ_TOKEN: when set, reads need it (or the API token); see READ_PROTECTED. */
  readToken?: () => string | undefined;
}

/** Reads that need a token when SLOTSYNC_READ_TOKEN is set; /health/live stays open. */
export const READ_PROTECTED = ['/slots', '/metrics', '/ready', '/openapi.json'];

declare module 'fastify' {
  interface FastifyRequest {
    /** Whether the caller presented a valid read or API token (GET /health details). */
    authenticated: boolean;
  }
}

function bearerOf(request: FastifyRequest): string | undefined {
  const match = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
  return match?.[1]?.trim();
}

/** Failed attempts allowed per client and minute before every POST of it gets 429. */
const FAILURES_PER_MINUTE = 30;
const FAILURE_WINDOW_MS = 60_000;
/** Clients remembered; the one idle the longest is forgotten first. */
const MAX_CLIENTS = 10_000;

export default fp(
  async (app: FastifyInstance, options: AuthOptions) => {
    const failures = new RecentMap<string, { count: number; since: number }>(MAX_CLIENTS);
    const refuse = (request: FastifyRequest, why: string) => {
      const now = Date.now();
      const seen = failures.get(request.ip);
      const fresh = seen === undefined || now - seen.since > FAILURE_WINDOW_MS;
      const next = fresh ? { count: 1, since: now } : { ...seen, count: seen.count + 1 };
      failures.set(request.ip, next);
      request.log.warn({ ip: request.ip, url: request.url, why }, 'refused a POST');
    };

    app.decorateRequest('authenticated', false);
    app.addHook('onRequest', async (request: FastifyRequest, reply) => {
      if (request.method !== 'POST') {
        const readToken = options.readToken?.();
        const presented = bearerOf(request);
        const apiToken = options.token();
        request.authenticated =
          presented !== undefined &&
          [readToken, apiToken].some((t) => t !== undefined && tokenMatches(presented, t));
        if (readToken === undefined || request.authenticated) return;
        const path = request.url.split('?')[0] ?? '';
        if (!READ_PROTECTED.includes(path)) return;
        reply.header('www-authenticate', 'Bearer realm="slotsync"');
        return sendProblem(reply, {
          status: 401,
          code: 'SLOTSYNC_UNAUTHORIZED',
          detail: 'this read needs a bearer token (SLOTSYNC_READ_TOKEN or SLOTSYNC_API_TOKEN)',
        });
      }
      const seen = failures.get(request.ip);
      if (
        seen !== undefined &&
        seen.count >= FAILURES_PER_MINUTE &&
        Date.now() - seen.since <= FAILURE_WINDOW_MS
      ) {
        const retry = Math.ceil((seen.since + FAILURE_WINDOW_MS - Date.now()) / 1000);
        reply.header('retry-after', String(Math.max(1, retry)));
        return sendProblem(reply, {
          status: 429,
          code: 'SLOTSYNC_RATE_LIMITED',
          detail: `too many refused POST requests from ${request.ip}: at most ${FAILURES_PER_MINUTE} a minute`,
        });
      }
      const expected = options.token();
      if (expected === undefined) {
        if (!isLoopback(options.host())) {
          refuse(request, 'no token configured beyond loopback');
          return sendProblem(reply, {
            status: 403,
            code: 'SLOTSYNC_FORBIDDEN',
            detail: 'POST routes need SLOTSYNC_API_TOKEN when the API listens beyond loopback',
          });
        }
        // Without a token, loopback is the only guard: a web page in a browser on this
        // machine (or DNS rebinding) could reach it. Browsers always send Origin on a
        // cross-site POST and the name they resolved as Host; command-line clients do not.
        const host = request.headers.host;
        if (
          request.headers.origin !== undefined ||
          (host !== undefined && !isLoopback(hostOf(host)))
        ) {
          refuse(request, 'cross-site request without a token');
          return sendProblem(reply, {
            status: 403,
            code: 'SLOTSYNC_FORBIDDEN',
            detail:
              'POST without SLOTSYNC_API_TOKEN is accepted only from local clients: no Origin header, a loopback Host',
          });
        }
        return;
      }
      const header = request.headers.authorization ?? '';
      const match = /^Bearer\s+(.+)$/i.exec(header);
      if (!match || !tokenMatches(match[1]?.trim() ?? '', expected)) {
        refuse(request, header === '' ? 'no bearer token' : 'wrong bearer token');
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
