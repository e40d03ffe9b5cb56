/**
 * The standby session that holds slotsync's advisory lock for the length of a cycle. It is
 * one dedicated connection, so releasing the lock need not be waited for: the next cycle's
 * lock request queues behind the release on the same connection. A lost connection releases
 * the lock on the server; the next cycle opens a new one.
 *
 * The worker keeps the lock between cycles due soon (keep()): as PostgreSQL's own worker
 * holds `syncing` for its whole life, another process cannot sync this standby meanwhile,
 * and a busy standby is spared an unlock and a lock per cycle. Kept at most the time given;
 * any other caller releases it at once.
 */
import type pg from 'pg';
import { APPLICATION_NAME, createClient, type PoolOptions } from './pools.js';
import { lockAndReadStandby, type StandbyState, unlockSync } from './standby.js';

export class LockSession {
  #client: pg.Client | undefined;
  #connecting: Promise<pg.Client> | undefined;
  /** The client that holds the lock now, if any: cleared when its connection is lost. */
  #holder: pg.Client | undefined;
  /** Set while the lock is kept between cycles: releases it when no cycle came. */
  #keeping: NodeJS.Timeout | undefined;

  constructor(private readonly options: PoolOptions) {}

  async #connection(): Promise<pg.Client> {
    if (this.#client) return this.#client;
    if (!this.#connecting) {
      const client = createClient(this.options, APPLICATION_NAME.lock);
      client.on('error', () => this.#discard(client));
      client.on('end', () => this.#discard(client));
      this.#connecting = client
        .connect()
        .then(() => {
          this.#client = client;
          return client;
        })
        .finally(() => {
          this.#connecting = undefined;
        });
    }
    return this.#connecting;
  }

  #discard(client: pg.Client): void {
    if (this.#holder === client) this.#stopKeeping();
    if (this.#client === client) this.#client = undefined;
    if (this.#holder === client) this.#holder = undefined;
    client.end().catch(() => undefined);
  }

  /** Takes the lock and reads the standby (see lockAndReadStandby). */
  async lockAndRead(knownFingerprint: string | null): Promise<StandbyState> {
    const client = await this.#connection();
    const kept = this.#keeping !== undefined && this.held;
    this.#stopKeeping();
    try {
      const state = await lockAndReadStandby(client, knownFingerprint, kept);
      this.#holder = state.locked ? client : undefined;
      return state;
    } catch (error) {
      this.#discard(client);
      throw error;
    }
  }

  /**
   * Whether the lock taken by the last lockAndRead() is still held as far as this process
   * can tell: false once its connection errored or ended. Statements that change slots
   * check it on the server too (standby.ts, HOLDS_LOCK).
   */
  get held(): boolean {
    return this.#holder !== undefined && this.#holder === this.#client;
  }

  /**
   * Keeps the lock for the next lockAndRead() within `ms`, else releases it then (held
   * stays true meanwhile; nothing changes slots between cycles).
   */
  keep(ms: number): void {
    this.#stopKeeping();
    if (!this.held) return;
    this.#keeping = setTimeout(() => this.release(), ms);
    this.#keeping.unref();
  }

  #stopKeeping(): void {
    clearTimeout(this.#keeping);
    this.#keeping = undefined;
  }

  /** Releases the lock without waiting; on failure the connection is closed (releasing it). */
  release(): void {
    this.#stopKeeping();
    const client = this.#client;
    this.#holder = undefined;
    if (!client) return;
    unlockSync(client).catch(() => this.#discard(client));
  }

  async end(): Promise<void> {
    this.#stopKeeping();
    const client = this.#client;
    this.#client = undefined;
    this.#holder = undefined;
    if (client) {
      await unlockSync(client).catch(() => undefined);
      await client.end().catch(() => undefined);
    }
  }
}
