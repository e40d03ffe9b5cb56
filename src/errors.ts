/**
 * Errors with a stable `code` and, where slotsync.c has one, PostgreSQL's own wording.
 * One error handler maps codes to HTTP statuses (see service/errors.ts).
 */
export type ErrorCode =
  | 'SLOTSYNC_CONFIG'
  | 'SLOTSYNC_SETUP'
  | 'SLOTSYNC_PRIMARY_IN_RECOVERY'
  | 'SLOTSYNC_STANDBY_NOT_IN_RECOVERY'
  | 'SLOTSYNC_CONCURRENT'
  | 'SLOTSYNC_PROMOTION'
  | 'SLOTSYNC_LOCK_TIMEOUT'
  | 'SLOTSYNC_UNREACHABLE'
  | 'SLOTSYNC_REGISTRY_CORRUPT'
  | 'SLOTSYNC_REGISTRY_WRITE'
  | 'SLOTSYNC_NODE_MISMATCH'
  | 'SLOTSYNC_WRONG_PRIMARY'
  | 'SLOTSYNC_LOCK_LOST'
  | 'SLOTSYNC_SHUTDOWN_DROP'
  /** The process stops: statements in flight were cancelled, none starts. */
  | 'SLOTSYNC_STOPPING'
  /** A server answered something PostgreSQL never answers (no row, an LSN that is not one). */
  | 'SLOTSYNC_BAD_ANSWER'
  | 'SLOTSYNC_CYCLE'
  // Raised by the HTTP layer only.
  | 'SLOTSYNC_BAD_REQUEST'
  | 'SLOTSYNC_UNAUTHORIZED'
  | 'SLOTSYNC_FORBIDDEN'
  | 'SLOTSYNC_NOT_FOUND'
  | 'SLOTSYNC_METHOD_NOT_ALLOWED'
  | 'SLOTSYNC_BODY_TOO_LARGE'
  | 'SLOTSYNC_UNSUPPORTED_MEDIA_TYPE'
  | 'SLOTSYNC_RATE_LIMITED'
  | 'SLOTSYNC_INTERNAL';

export class SlotSyncError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SlotSyncError';
    this.code = code;
    this.hint = options?.hint;
  }
}

/** A server answered no row where PostgreSQL always answers one. */
export function noRowError(server: 'primary' | 'standby'): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_BAD_ANSWER', `the ${server} answered no row`);
}

export function setupError(message: string, hint?: string): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_SETUP', message, hint === undefined ? {} : { hint });
}

export const PROMOTION_MESSAGE =
  'cannot synchronize replication slots when standby promotion is ongoing';
export const CONCURRENT_MESSAGE = 'cannot synchronize replication slots concurrently';

/** The message of anything thrown, for reports and logs. */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
