/**
 * While copies are being created, logs a running-xacts record on the primary every so
 * often, so creations waiting on the standby return at once; one record serves every
 * creation waiting at that moment. Never runs outside creations: every record makes every
 * later advance re-read it (DESIGN.md, measured facts).
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { logStandbySnapshot } from '../db/primary.js';
import { hasSqlState, SQLSTATE } from '../db/sqlstate.js';
import { messageOf } from '../errors.js';

const FIRST_DELAY_MS = 10;
const INTERVAL_MS = 25;

export class SnapshotPump {
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  #refused = false;

  constructor(
    private readonly primary: pg.Pool,
    private readonly logger: Logger,
    private readonly onRefused: ((message: string) => void) | undefined,
  ) {}

  start(): void {
    this.#schedule(FIRST_DELAY_MS);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(ms: number): void {
    if (this.#stopped || this.#refused) return;
    this.#timer = setTimeout(() => void this.#tick(), ms);
  }

  async #tick(): Promise<void> {
    try {
      await logStandbySnapshot(this.primary);
    } catch (error) {
      const message = messageOf(error);
      if (hasSqlState(error, SQLSTATE.insufficientPrivilege)) {
        // Without the grant copies are still made, at the next running-xacts record (≤ 15 s).
        this.#refused = true;
        this.onRefused?.(message);
      }
      this.logger.warn({ err: message }, 'could not log a standby snapshot on the primary');
    }
    this.#schedule(INTERVAL_MS);
  }
}
