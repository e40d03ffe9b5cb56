/**
 * A token bucket per client address for routes marked `rateLimited` (POST /sync): an
 * orchestrator retrying in a loop gets a clear 429 instead of queueing cycles forever.
 */
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { RecentMap } from '../../util.js';
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
  async (app: FastifyInstance, options: { perSecond: () => number }) => {
    // A full map forgets the client idle the longest, one at a time.
    const buckets = new RecentMap<string, Bucket>(MAX_CLIENTS);
    app.addHook('onRequest', async (request, reply) => {
      const perSecond = options.perSecond(); // SLOTSYNC_SYNC_RATE, as reloaded
      if (!request.routeOptions.config?.rateLimited || perSecond <= 0) return;
      const capacity = perSecond * 2;
      const now = Date.now();
      const key = request.ip;
      const bucket = buckets.get(key) ?? { tokens: capacity, at: now };
      bucket.tokens = Math.min(capacity, bucket.tokens + ((now - bucket.at) / 1000) * perSecond);
      bucket.at = now;
      buckets.set(key, bucket);
      if (bucket.tokens < 1) {
        const retry = Math.ceil((1 - bucket.tokens) / perSecond);
        reply.header('retry-after', String(retry));
        return sendProblem(reply, {
          status: 429,
          code: 'SLOTSYNC_RATE_LIMITED',
          detail: `too many POST /sync from ${key}: at most ${perSecond} per second (bursts of ${capacity}); retry after ${retry} s`,
        });
      }
      bucket.tokens -= 1;
    });
  },
  { name: 'slotsync-rate-limit' },
);
