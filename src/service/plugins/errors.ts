/**
 * One error handler: every error becomes application/problem+json with a stable code and,
 * where slotsync.c has one, PostgreSQL's wording in `detail`. Bad requests are 4xx.
 */
import type { FastifyError, FastifyInstance, FastifyReply, HTTPMethods } from 'fastify';
import fp from 'fastify-plugin';
import { type ErrorCode, SlotSyncError } from '../../errors.js';
import { redactSecrets } from '../../redact.js';

const STATUS: Record<ErrorCode, number> = {
  SLOTSYNC_CONFIG: 400,
  SLOTSYNC_SETUP: 503,
  SLOTSYNC_PRIMARY_IN_RECOVERY: 503,
  SLOTSYNC_STANDBY_NOT_IN_RECOVERY: 503,
  SLOTSYNC_CONCURRENT: 409,
  SLOTSYNC_PROMOTION: 409,
  SLOTSYNC_LOCK_TIMEOUT: 503,
  SLOTSYNC_UNREACHABLE: 503,
  SLOTSYNC_REGISTRY_CORRUPT: 503,
  SLOTSYNC_REGISTRY_WRITE: 503,
  SLOTSYNC_NODE_MISMATCH: 503,
  SLOTSYNC_WRONG_PRIMARY: 503,
  SLOTSYNC_LOCK_LOST: 503,
  SLOTSYNC_SHUTDOWN_DROP: 503,
  SLOTSYNC_STOPPING: 503,
  SLOTSYNC_BAD_ANSWER: 502,
  SLOTSYNC_CYCLE: 500,
  SLOTSYNC_BAD_REQUEST: 400,
  SLOTSYNC_UNAUTHORIZED: 401,
  SLOTSYNC_FORBIDDEN: 403,
  SLOTSYNC_NOT_FOUND: 404,
  SLOTSYNC_METHOD_NOT_ALLOWED: 405,
  SLOTSYNC_BODY_TOO_LARGE: 413,
  SLOTSYNC_UNSUPPORTED_MEDIA_TYPE: 415,
  SLOTSYNC_RATE_LIMITED: 429,
  SLOTSYNC_INTERNAL: 500,
};

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  429: 'Too Many Requests',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

/**
 * fastify's own 4xx errors, as slotsync's stable codes (its FST_ERR_… codes are fastify's to
 * rename; any other 4xx of fastify is SLOTSYNC_BAD_REQUEST).
 */
const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'SLOTSYNC_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'SLOTSYNC_BAD_REQUEST',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'SLOTSYNC_BAD_REQUEST',
  FST_ERR_CTP_BODY_TOO_LARGE: 'SLOTSYNC_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'SLOTSYNC_UNSUPPORTED_MEDIA_TYPE',
};

export interface ProblemInput {
  status: number;
  code: ErrorCode;
  detail: string;
  hint?: string | undefined;
}

export function sendProblem(reply: FastifyReply, problem: ProblemInput): FastifyReply {
  const body: Record<string, unknown> = {
    type: `urn:slotsync:error:${problem.code.toLowerCase()}`,
    title: TITLES[problem.status] ?? 'Error',
    status: problem.status,
    detail: problem.detail,
    code: problem.code,
  };
  if (problem.hint) body.hint = problem.hint;
  return reply.code(problem.status).type('application/problem+json').send(body);
}

export default fp(
  async (app: FastifyInstance, options: { secrets: () => string[] }) => {
    app.setErrorHandler((error: FastifyError | SlotSyncError | Error, request, reply) => {
      const secrets = options.secrets();
      if (error instanceof SlotSyncError) {
        const status = STATUS[error.code] ?? 500;
        if (error.code === 'SLOTSYNC_LOCK_TIMEOUT') reply.header('retry-after', '1');
        return sendProblem(reply, {
          status,
          code: error.code,
          detail: redactSecrets(error.message, secrets),
          hint: error.hint,
        });
      }
      const fastifyError = error as FastifyError;
      if (fastifyError.validation) {
        return sendProblem(reply, {
          status: 400,
          code: 'SLOTSYNC_BAD_REQUEST',
          detail:
            `${fastifyError.validationContext ?? 'request'} ${error.message.replace(/^(body|querystring|params|headers) ?/, '')}`.trim(),
        });
      }
      const status = fastifyError.statusCode;
      if (typeof status === 'number' && status >= 400 && status < 500) {
        const code = FASTIFY_CODES[fastifyError.code] ?? 'SLOTSYNC_BAD_REQUEST';
        return sendProblem(reply, {
          status: STATUS[code] === 400 ? status : STATUS[code],
          code,
          detail: error.message,
        });
      }
      request.log.error({ err: redactSecrets(error.message, secrets) }, 'request failed');
      return sendProblem(reply, {
        status: 500,
        code: 'SLOTSYNC_INTERNAL',
        detail: redactSecrets(error.message, secrets),
      });
    });
    app.setNotFoundHandler((request, reply) => {
      const path = request.url.split('?')[0] ?? '/';
      // A route that exists under other methods: 405 with the methods it takes.
      const allowed = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'].filter(
        (method) => method !== request.method && routeExists(app, method, path),
      );
      if (allowed.length > 0) {
        reply.header('allow', allowed.join(', '));
        return sendProblem(reply, {
          status: 405,
          code: 'SLOTSYNC_METHOD_NOT_ALLOWED',
          detail: `${request.method} is not allowed on ${path}: use ${allowed.join(' or ')}`,
        });
      }
      return sendProblem(reply, {
        status: 404,
        code: 'SLOTSYNC_NOT_FOUND',
        detail: `no route ${request.method} ${path}`,
      });
    });
  },
  { name: 'slotsync-errors' },
);

/**
 * Whether a route answers `method` on this request path. hasRoute() reads its url as a route
 * pattern: a path from a client with `*` inside (`/a*b`) throws there ("Wildcard must be
 * the last character"), and is no route of ours.
 */
function routeExists(app: FastifyInstance, method: string, path: string): boolean {
  try {
    return app.hasRoute({ method: method as HTTPMethods, url: path });
  } catch {
    return false;
  }
}
