/** POST /sync and POST /shutdown: the calls an orchestrator makes. */
import type { Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import {
  CycleReport,
  problemResponse,
  ShutdownBody,
  ShutdownResponse,
  SyncBody,
  SyncQuery,
} from '../schemas.js';
import type { SlotSyncService } from '../service.js';

/** The API token; without one, loopback callers only (no Origin, a loopback Host). */
const WRITE_SECURITY: { [scheme: string]: string[] }[] = [{ bearer: [] }, {}];

const problems = {
  400: problemResponse('Malformed request: bad JSON, unknown field, wrong type'),
  401: problemResponse('Missing or wrong bearer token'),
  403: problemResponse('No token configured and the API listens beyond loopback'),
  409: problemResponse('Promotion has started, or another sync runs (nowait)'),
  413: problemResponse('Body larger than 16 KiB'),
  415: problemResponse('Body is not application/json'),
  429: problemResponse('Too many POST /sync from this client'),
  500: problemResponse('Unexpected failure'),
  503: problemResponse(
    'The setup is invalid, a server is unreachable, or the wait for an in-flight cycle timed out',
  ),
};

export default async function syncRoutes(
  app: FastifyInstance,
  options: { service: SlotSyncService },
) {
  const { service } = options;

  app.post<{ Body: Static<typeof SyncBody> | undefined; Querystring: Static<typeof SyncQuery> }>(
    '/sync',
    {
      schema: {
        summary: 'Run one sync cycle now and answer its report',
        description:
          'Waits for an in-flight cycle (bounded by timeoutMs) and then runs its own. With nowait it answers 409 "cannot synchronize replication slots concurrently" at once; after POST /shutdown it answers 409 "cannot synchronize replication slots when standby promotion is ongoing". With waitReady it keeps cycling until every required slot is sync-ready or the time is up, and adds `readiness`.',
        body: SyncBody,
        security: WRITE_SECURITY,
        querystring: SyncQuery,
        response: { 200: CycleReport, ...problems },
      },
      config: { rateLimited: true },
    },
    async (request) => {
      const nowait = request.body?.nowait ?? request.query.nowait ?? false;
      // A caller may wait less than SLOTSYNC_SYNC_WAIT_MS, never more.
      const waitMs = Math.min(
        request.body?.timeoutMs ?? service.config.syncWaitMs,
        service.config.syncWaitMs,
      );
      const waitReady = request.body?.waitReady;
      if (waitReady !== undefined && !nowait) return service.syncUntilReady(waitReady, waitMs);
      const result = await service.context.syncShared({ waitMs, nowait });
      return result.report;
    },
  );

  app.post<{ Body: Static<typeof ShutdownBody> | undefined }>(
    '/shutdown',
    {
      schema: {
        summary: 'Stop syncing for promotion',
        description:
          'Stops the worker, waits for an in-flight cycle, refuses every later sync, drops every copy that is not sync-ready and answers the final state of every slot. Idempotent. finalSync runs one last cycle first.',
        body: ShutdownBody,
        security: WRITE_SECURITY,
        response: { 200: ShutdownResponse, ...problems },
      },
    },
    async (request) => service.shutdown({ finalSync: request.body?.finalSync ?? false }),
  );
}
