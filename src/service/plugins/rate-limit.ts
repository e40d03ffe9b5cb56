/**
 * A token bucket per client address for routes marked `rateLimited` (POST /sync): an
 * orchestrator retrying in a loop gets a clear 429 instead of queueing cycles forever.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { sendProblem } from './errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    rateLimited?: boolean;
  }
}

interface Bucket {
  tokens: number;
  at: number;
}

const MAX_CLIENTS = 10_000;

export default fp(
  async (app: FastifyInstance, options: { perSecond: number }) => {
    const buckets = new Map<string, Bucket>();
    const capacity = options.perSecond * 2;
    app.addHook('onRequest', async (request, reply) => {
      if (!request.routeOptions.config?.rateLimited || options.perSecond <= 0) return;
      const now = Date.now();
      const key = request.ip;
      const bucket = buckets.get(key) ?? { tokens: capacity, at: now };
      bucket.tokens = Math.min(
        capacity,
        bucket.tokens + ((now - bucket.at) / 1000) * options.perSecond,
      );
      bucket.at = now;
      if (bucket.tokens < 1) {
        const retry = Math.ceil((1 - bucket.tokens) / options.perSecond);
        reply.header('retry-after', String(retry));
        buckets.set(key, bucket);
        return sendProblem(reply, {
          status: 429,
          code: 'SLOTSYNC_RATE_LIMITED',
          detail: `too many POST /sync from ${key}: at most ${options.perSecond} per second (bursts of ${capacity}); retry after ${retry} s`,
        });
      }
      bucket.tokens -= 1;
      if (buckets.size >= MAX_CLIENTS && !buckets.has(key)) buckets.clear();
      buckets.set(key, bucket);
    });
  },
  { name: 'slotsync-rate-limit' },
);
