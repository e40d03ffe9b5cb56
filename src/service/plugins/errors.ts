/**
 * One error handler: every error becomes application/problem+json with a stable code and,
 * where slotsync.c has one, PostgreSQL's wording in `detail`. Bad requests are 4xx.
 */
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
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

export interface ProblemInput {
  status: number;
  /** One of ErrorCode, or a 4xx code of fastify's own (FST_ERR_…) passed through. */
  code: ErrorCode | `FST_${string}`;
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
        return sendProblem(reply, {
          status,
          code: fastifyError.code?.startsWith('FST_')
            ? (fastifyError.code as `FST_${string}`)
            : 'SLOTSYNC_BAD_REQUEST',
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
    app.setNotFoundHandler((request, reply) =>
      sendProblem(reply, {
        status: 404,
        code: 'SLOTSYNC_NOT_FOUND',
        detail: `no route ${request.method} ${request.url.split('?')[0]}`,
      }),
    );
  },
  { name: 'slotsync-errors' },
);
