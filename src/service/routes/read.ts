/** GET routes: slots, health, liveness, metrics. Cheap: they read the last cycle's snapshot. */
import type { FastifyInstance } from 'fastify';
import { checkHealth } from '../health.js';
import { HealthResponse, LiveResponse, problemResponse, SlotsResponse } from '../schemas.js';
import type { SlotSyncService } from '../service.js';

export default async function readRoutes(
  app: FastifyInstance,
  options: { service: SlotSyncService },
) {
  const { service } = options;

  app.get(
    '/slots',
    {
      schema: {
        summary: 'Every failover slot of the primary and its copy, as of the last cycle',
        response: { 200: SlotsResponse, 500: problemResponse('Unexpected failure') },
      },
    },
    async () => {
      const { lastResult, lastResultAt } = service.context.snapshot;
      return {
        slots: lastResult?.views ?? [],
        generated_at: lastResultAt === undefined ? null : new Date(lastResultAt).toISOString(),
        age_ms: lastResultAt === undefined ? null : Date.now() - lastResultAt,
        standby_replay_lsn: lastResult?.standbyReplayLsn ?? null,
      };
    },
  );

  app.get(
    '/health',
    {
      schema: {
        summary: 'Whether the service can do its job, check by check (200 or 503)',
        response: { 200: HealthResponse, 503: HealthResponse },
      },
    },
    async (_request, reply) => {
      const report = await checkHealth(service);
      return reply.code(report.status === 'pass' ? 200 : 503).send(report);
    },
  );

  app.get(
    '/health/live',
    { schema: { summary: 'Liveness: the process answers', response: { 200: LiveResponse } } },
    async () => ({ status: 'pass' as const }),
  );

  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics (text exposition format), names prefixed slotsync_',
        produces: ['text/plain'],
        response: { 200: { type: 'string' } },
      },
    },
    async (_request, reply) => {
      const text = await service.metrics.registry.metrics();
      return reply.type(service.metrics.registry.contentType).send(text);
    },
  );
}
