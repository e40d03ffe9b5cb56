/** GET routes: slots, health, liveness, metrics. Cheap: they read the last cycle's snapshot. */
import type { Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { slotList } from '../../sync/select.js';
import {
  HealthResponse,
  LiveResponse,
  problemResponse,
  ReadyQuery,
  ReadyResponse,
  SlotsResponse,
} from '../schemas.js';
import type { SlotSyncService } from '../service.js';

/** Open, or a bearer token (SLOTSYNC_READ_TOKEN or SLOTSYNC_API_TOKEN) once a read token is set. */
const READ_SECURITY: { [scheme: string]: string[] }[] = [{}, { bearer: [] }];

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
        security: READ_SECURITY,
        response: { 200: SlotsResponse, 500: problemResponse('Unexpected failure') },
      },
    },
    async (_request, reply) => {
      const { lastResult, lastResultAt } = service.context.snapshot;
      const slots = JSON.stringify(service.slotViews());
      const body = `{"slots":${slots},"generated_at":${JSON.stringify(
        lastResultAt === undefined ? null : new Date(lastResultAt).toISOString(),
      )},"age_ms":${lastResultAt === undefined ? null : Date.now() - lastResultAt},"standby_replay_lsn":${JSON.stringify(
        lastResult?.standbyReplayLsn ?? null,
      )}}`;
      return reply
        .type('application/json; charset=utf-8')
        .serializer((payload) => payload as string)
        .send(body);
    },
  );

  app.get<{ Querystring: Static<typeof ReadyQuery> }>(
    '/ready',
    {
      schema: {
        summary:
          'Promotion readiness: is every required slot safe to promote onto this standby (200) or not (503)',
        description:
          'Read at the moment of asking: the copies on the standby, then the primary if it answers. A slot is safe when its copy is published and sync-ready, unmoved, and no consumer can be ahead of the WAL this standby holds (synchronized_standby_slots names its slot, or a fresh read while the primary answers). Required: ?slots=a,b, else SLOTSYNC_REQUIRED_SLOTS, else every failover slot of the primary and every copy. Each verdict names its facts and their age.',
        querystring: ReadyQuery,
        response: { 200: ReadyResponse, 503: ReadyResponse },
      },
    },
    async (request, reply) => {
      const answer = await service.readiness(
        slotList(request.query.slots),
        request.query.max_age_ms,
      );
      return reply.code(answer.ready ? 200 : 503).send(answer);
    },
  );

  app.get(
    '/health',
    {
      schema: {
        summary: 'Whether the service can do its job, check by check (200 or 503)',
        description:
          'With SLOTSYNC_READ_TOKEN set, a caller without a token gets the status and the check names, not their details.',
        security: READ_SECURITY,
        response: { 200: HealthResponse, 503: HealthResponse },
      },
    },
    async (request, reply) => {
      const report = await service.health.report(service);
      const code = report.status === 'pass' ? 200 : 503;
      if (service.config.readToken === undefined || request.authenticated) {
        return reply.code(code).send(report);
      }
      // With SLOTSYNC_READ_TOKEN, callers without it get the status and the check names only.
      const checks = Object.fromEntries(
        Object.entries(report.checks).map(([name, check]) => [
          name,
          { status: check.status, detail: 'details need a bearer token' },
        ]),
      );
      return reply.code(code).send({ status: report.status, checks });
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
        security: READ_SECURITY,
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
