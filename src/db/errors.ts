/** Connection failures named by the variable that configured the server, password redacted. */
import { SlotSyncError } from '../errors.js';
import { redactSecrets, redactUrl } from '../redact.js';

const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'EAI_AGAIN',
  'EPIPE',
  '57P01',
  '57P02',
  '57P03',
  '28P01',
  '28000',
  '3D000',
  '08006',
  '08001',
  '08004',
]);

export function isConnectionError(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  if (e?.code && CONNECTION_CODES.has(e.code)) return true;
  return /timeout exceeded when trying to connect|Connection terminated|connect ECONNREFUSED|the database system is (starting up|shutting down)|Query read timeout/i.test(
    e?.message ?? '',
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
