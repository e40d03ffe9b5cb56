/**
 * The HTTP app, built around one SlotSyncService it owns: `app.close()` closes the service
 * too (the `slotsync-service` plugin's onClose), so a test or the process entry (server.ts,
 * which owns listening and signals) closes one thing.
 */
import swagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Logger } from 'pino';
import { secretsOf } from '../config.js';
import auth from './plugins/auth.js';
import errors from './plugins/errors.js';
import rateLimit from './plugins/rate-limit.js';
import readRoutes from './routes/read.js';
import syncRoutes from './routes/sync.js';
import { Problem } from './schemas.js';
import type { SlotSyncService } from './service.js';

export const BODY_LIMIT_BYTES = 16 * 1024;
/**
 * No request lives longer: POST /sync with waitReady may take its 600 s, plus the wait for
 * the lock; idle keep-alive connections close after 5 s.
 */
const REQUEST_TIMEOUT_MS = 660_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;

export interface AppOptions {
  service: SlotSyncService;
  logger?: Logger;
  /** POST /sync per client and second (bucket refills at this rate, bursts of twice it). */
  syncRatePerSecond?: number;
  /** Serve HTTPS with this certificate and key (PEM) instead of HTTP. */
  https?: TlsFiles;
}

/** A certificate (chain) and its private key, PEM. */
export interface TlsFiles {
  cert: string;
  key: string;
}

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { service } = options;
  const app = Fastify({
    loggerInstance: (options.logger ??
      service.logger.child({ component: 'http' })) as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT_BYTES,
    requestTimeout: REQUEST_TIMEOUT_MS,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
    return503OnClosing: true,
    ...(options.https ? { https: { ...options.https, minVersion: 'TLSv1.2' as const } } : {}),
  }) as unknown as FastifyInstance;
  await app.register(
    fp(
      async (instance) => {
        // After the HTTP server stopped taking requests: the in-flight cycle ends, then pools.
        // Before the server stops taking requests: a POST /sync waiting for readiness
        // answers now instead of holding the close for its whole wait.
        instance.addHook('preClose', async () => {
          service.beginClose();
        });
        instance.addHook('onClose', async () => {
          await service.close();
        });
      },
      { name: 'slotsync-service' },
    ),
  );
  app.addSchema(Problem);
  // Bodies are JSON or nothing: anything else is 415, not a string validated as an object.
  app.removeContentTypeParser('text/plain');
  // A POST without a body means "no options": validate it as an empty object.
  app.addHook('preValidation', async (request) => {
    if (request.method === 'POST' && request.body == null) request.body = {};
  });
  await app.register(swagger, {
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'slotsync',
        description:
          "Keeps a PostgreSQL physical standby ready to take over logical replication: copies the primary's failover slots and keeps them in step.",
        version: '0.1.0',
      },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      },
      security: [],
    },
  });
  await app.register(errors, { secrets: () => secretsOf(service.config) });
  await app.register(auth, {
    token: () => service.config.apiToken,
    host: () => service.config.host,
    readToken: () => service.config.readToken,
  });
  await app.register(rateLimit, {
    perSecond: () => options.syncRatePerSecond ?? service.config.syncRatePerSecond,
  });
  await app.register(syncRoutes, { service });
  await app.register(readRoutes, { service });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
