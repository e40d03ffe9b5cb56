/** Connection failures named by the variable that configured the server, password redacted. */
import { SlotSyncError } from '../errors.js';
import { redactSecrets, redactUrl } from '../redact.js';
import { isConnectionState, sqlStateOf } from './sqlstate.js';

/** Socket errors of Node.js. */
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'EAI_AGAIN',
  'EPIPE',
]);

/**
 * Whether a connection failed: a socket error, a server SQLSTATE of that kind, or one of
 * node-postgres's own client-side errors (which carry no code; their wording is the
 * library's, not the server's, so it does not depend on lc_messages).
 */
export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && SOCKET_CODES.has(code)) return true;
  if (isConnectionState(sqlStateOf(error))) return true;
  return /timeout exceeded when trying to connect|Connection terminated|connect ECONNREFUSED|Query read timeout/i.test(
    (error as { message?: string } | null)?.message ?? '',
  );
}

export function unreachable(variable: string, url: string, error: unknown): SlotSyncError {
  const message = redactSecrets((error as Error)?.message ?? String(error), []);
  return new SlotSyncError(
    'SLOTSYNC_UNREACHABLE',
    `${variable}: could not connect to ${redactUrl(url)}: ${message || (error as { code?: string })?.code || 'unknown error'}`,
    { cause: error },
  );
}
