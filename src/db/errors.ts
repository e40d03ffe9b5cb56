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
 * TLS failures: OpenSSL's certificate verification results as Node.js names them, its
 * handshake errors (ERR_SSL_*), and Node's own checks (ERR_TLS_*, e.g. a host name the
 * certificate does not list).
 */
const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'HOSTNAME_MISMATCH',
]);

function isTlsCode(code: string): boolean {
  return TLS_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_');
}

/**
 * Whether a connection failed: a socket error, a server SQLSTATE of that kind, or one of
 * node-postgres's own client-side errors (which carry no code; their wording is the
 * library's, not the server's, so it does not depend on lc_messages).
 */
export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (SOCKET_CODES.has(code) || isTlsCode(code))) return true;
  if (isConnectionState(sqlStateOf(error))) return true;
  return /timeout exceeded when trying to connect|Connection terminated|connect ECONNREFUSED|Query read timeout|The server does not support SSL connections/i.test(
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
