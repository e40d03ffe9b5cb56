/**
 * Logical slots belong to a database: a copy must be created, and advanced, over a
 * connection to its remote slot's database. One pool per database, made on first use.
 */
import type pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { Logger } from 'pino';
import { createPool } from './pools.js';

export interface StandbyPoolOptions {
  url: string;
  max: number;
  statementTimeoutMs: number;
  /** Statement timeout of the connections that create copies. */
  createTimeoutMs: number;
  connectTimeoutMs: number;
  logger: Logger;
}

export class StandbyPools {
  /** The pool of the database named in the standby URL: lock, reads, drops. */
  readonly main: pg.Pool;
  readonly #byDatabase = new Map<string, pg.Pool>();
  readonly #forCreation = new Map<string, pg.Pool>();
  readonly #options: StandbyPoolOptions;
  readonly #mainDatabase: string;

  constructor(options: StandbyPoolOptions) {
    this.#options = options;
    // The database pg connects to for this URL (its own rules: no name means the user's).
    const parsed = parseIntoClientConfig(options.url);
    this.#mainDatabase = parsed.database ?? parsed.user ?? 'postgres';
    // +2: the lock session and a reader stay available while copies are created.
    this.main = createPool({ ...options, role: 'standby', max: options.max + 2 });
    this.#byDatabase.set(this.#mainDatabase, this.main);
  }

  forDatabase(database: string): pg.Pool {
    let pool = this.#byDatabase.get(database);
    if (!pool) {
      pool = createPool({ ...this.#options, database, role: 'standby' });
      this.#byDatabase.set(database, pool);
    }
    return pool;
  }

  /** Connections whose statement timeout is the creation timeout (no SET per creation). */
  forCreation(database: string, timeoutMs = this.#options.createTimeoutMs): pg.Pool {
    const key = `${timeoutMs}/${database}`;
    let pool = this.#forCreation.get(key);
    if (!pool) {
      pool = createPool({
        ...this.#options,
        database,
        role: 'standby',
        statementTimeoutMs: timeoutMs,
        // Creations mostly wait for a running-xacts record: twice the parallelism pays.
        max: this.#options.max * 2,
      });
      this.#forCreation.set(key, pool);
    }
    return pool;
  }

  async end(): Promise<void> {
    const pools = [...this.#byDatabase.values(), ...this.#forCreation.values()];
    await Promise.allSettled(pools.map((pool) => pool.end()));
    this.#byDatabase.clear();
    this.#forCreation.clear();
  }
}
