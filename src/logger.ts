/**
 * pino JSON logs; components take a child logger. Secrets are redacted by what they are,
 * wherever they appear (a password inside a connection string, the API token, a database
 * password), not by the name of the field: a request's `url` stays readable, so the log
 * tells `/sync` from `/shutdown`.
 */
import { type DestinationStream, type Logger, type LoggerOptions, pino } from 'pino';
import { redactSecrets } from './redact.js';

export const STDOUT = 1;
export const STDERR = 2;

/** Fields that hold nothing but a secret. */
const SECRET_FIELDS = [
  'password',
  '*.password',
  'token',
  'headers.authorization',
  'req.headers.authorization',
];
const CENSOR = '*****';
/** Nested objects are cleaned this deep (log objects are shallow; errors carry a cause). */
const MAX_DEPTH = 6;

function clean(value: unknown, secrets: readonly string[], depth: number): unknown {
  if (typeof value === 'string') return redactSecrets(value, secrets);
  if (depth >= MAX_DEPTH || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => clean(v, secrets, depth + 1));
  return Object.fromEntries(
    Object.entries(value).map(([key, v]) => [key, clean(v, secrets, depth + 1)]),
  );
}

/**
 * The access log's fields. fastify hands the logger its request and reply objects, whose
 * method, url and statusCode are getters: read here, before the formatter (which copies
 * own fields only, and runs before pino's serializers) would log `"req":{}`.
 */
function accessFields(object: Record<string, unknown>): Record<string, unknown> {
  const req = object.req as { method?: string; url?: string; ip?: string } | undefined;
  const res = object.res as { statusCode?: number } | undefined;
  if (req === undefined && res === undefined) return object;
  const out = { ...object };
  if (req !== undefined && typeof req === 'object') {
    out.req = { method: req.method, url: req.url, remoteAddress: req.ip };
  }
  if (res !== undefined && typeof res === 'object') out.res = { statusCode: res.statusCode };
  return out;
}

/** The logger's options; `secrets`: the API token and the databases' passwords. */
export function loggerOptions(level: string, secrets: readonly string[]): LoggerOptions {
  return {
    level,
    base: { service: 'slotsync' },
    redact: { paths: SECRET_FIELDS, censor: CENSOR },
    formatters: {
      log: (object) => clean(accessFields(object), secrets, 0) as Record<string, unknown>,
    },
    hooks: {
      logMethod(args, method) {
        const cleaned = args.map((a) => (typeof a === 'string' ? redactSecrets(a, secrets) : a));
        return method.apply(this, cleaned as Parameters<typeof method>);
      },
    },
  };
}

/** The service logs to stdout (`STDOUT`); one-shot commands keep stdout for their answer. */
export function createLogger(
  level = 'info',
  fd: typeof STDOUT | typeof STDERR = STDERR,
  secrets: readonly string[] = [],
  destination?: DestinationStream,
): Logger {
  return pino(
    loggerOptions(level, secrets),
    destination ?? pino.destination({ dest: fd, sync: fd === STDERR }),
  );
}
