/**
 * Logical slots belong to a database: a copy must be created, and advanced, over a
 * connection to its remote slot's database. The standby's connections, whatever their
 * database, come from one budget: at most `budget` open at once. A statement for a database
 * reuses an idle connection of that database, opens one while the budget allows, else
 * closes an idle connection of another database, else waits its turn.
 */
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { Logger } from 'pino';
import { messageOf, SlotSyncError } from '../errors.js';
import { redactSecrets } from '../redact.js';
import { cancelStatement } from './cancel.js';
import { isConnectionError } from './errors.js';
import { APPLICATION_NAME, connectionConfig } from './pools.js';

/** What statements need of a connection source: pg.Pool and a database's handle alike. */
export interface Queryable {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string | pg.QueryConfig,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>>;
}

export interface StandbyPoolOptions {
  url: string;
  /** Open connections at most, across every database. */
  budget: number;
  statementTimeoutMs: number;
  /** Statement timeout of the connections that create copies. */
  createTimeoutMs: number;
  connectTimeoutMs: number;
  /** An idle connection closes after this long. */
  idleTimeoutMs?: number;
  logger: Logger;
}

interface Connection {
  /** Database and statement timeout: a connection serves statements of its own key. */
  key: string;
  client: pg.Client;
  busy: boolean;
  broken: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  /** Set while its session ends: it still counts against the budget until then. */
  closing?: Promise<void>;
}

function stoppingError(): SlotSyncError {
  return new SlotSyncError(
    'SLOTSYNC_STOPPING',
    'slotsync is stopping: statements in flight were cancelled and no new one starts',
  );
}

const IDLE_TIMEOUT_MS = 30_000;
const CLOSE_WAIT_MS = 1_000;

export class StandbyPools {
  /** The database named in the standby URL: reads, drops. */
  readonly main: Queryable;
  readonly #options: StandbyPoolOptions;
  readonly #open = new Set<Connection>();
  readonly #waiting: Array<() => void> = [];
  #ending: Promise<void> | undefined;
  /** Set by cancelInFlight(): the process stops, new statements are refused. */
  #stopping = false;
  #peak = 0;

  constructor(options: StandbyPoolOptions) {
    if (options.budget < 1) throw new RangeError('the connection budget must be at least 1');
    this.#options = options;
    // The database pg connects to for this URL (its own rules: no name means the user's).
    const parsed = parseIntoClientConfig(options.url);
    this.main = this.forDatabase(parsed.database ?? parsed.user ?? 'postgres');
  }

  forDatabase(database: string): Queryable {
    return this.#handle(database, this.#options.statementTimeoutMs);
  }

  /** Connections whose statement timeout is the creation timeout (no SET per creation). */
  forCreation(database: string, timeoutMs = this.#options.createTimeoutMs): Queryable {
    return this.#handle(database, timeoutMs);
  }

  /** Open connections now, and the most there ever were (tests). */
  get size(): { open: number; peak: number } {
    return { open: this.#open.size, peak: this.#peak };
  }

  /**
   * Asks the server to cancel every statement running on these connections now (a
   * CancelRequest each, as psql's ^C): the stop of the process does not wait for a copy
   * creation that waits for a consistent point.
   */
  async cancelInFlight(): Promise<number> {
    // No statement starts after this one: a batch retried copy by copy, or a creation
    // queued behind the cancelled ones, would otherwise run its whole timeout.
    this.#stopping = true;
    for (const wake of this.#waiting.splice(0)) wake();
    const busy = [...this.#open].filter((c) => c.busy && !c.broken && !c.closing);
    await Promise.all(busy.map((c) => cancelStatement(c.client)));
    return busy.length;
  }

  /** Closes idle connections now and busy ones as their statements end. Idempotent. */
  end(): Promise<void> {
    this.#ending ??= (async () => {
      for (const wake of this.#waiting.splice(0)) wake();
      for (const connection of this.#open) {
        if (!connection.busy) void this.#close(connection);
      }
      while (this.#open.size > 0) {
        await new Promise<void>((resolve) => this.#waiting.push(resolve));
      }
    })();
    return this.#ending;
  }

  #handle(database: string, statementTimeoutMs: number): Queryable {
    const key = `${statementTimeoutMs}/${database}`;
    return {
      query: async <R extends pg.QueryResultRow>(
        text: string | pg.QueryConfig,
        values?: unknown[],
      ) => {
        const connection = await this.#acquire(key, database, statementTimeoutMs);
        try {
          return await connection.client.query<R>(text, values);
        } catch (error) {
          // A connection that failed, whose client gave up on the server, or whose session
          // the server is ending (FATAL: shutdown, recovery conflict) is not reused.
          if (isConnectionError(error) || (error as { severity?: string }).severity === 'FATAL') {
            connection.broken = true;
          }
          throw error;
        } finally {
          this.#release(connection);
        }
      },
    };
  }

  async #acquire(key: string, database: string, statementTimeoutMs: number): Promise<Connection> {
    const deadline = Date.now() + this.#options.connectTimeoutMs;
    for (;;) {
      if (this.#stopping) throw stoppingError();
      if (this.#ending) throw new Error('Cannot use a pool after calling end on the pool');
      const idle = [...this.#open].filter((c) => !c.busy && !c.broken && !c.closing);
      const own = idle.find((c) => c.key === key);
      if (own) {
        clearTimeout(own.idleTimer);
        own.busy = true;
        return own;
      }
      // Full: an idle connection of another database makes room (its session ended first,
      // so the server never sees more than the budget).
      if (this.#open.size >= this.#options.budget && idle[0]) {
        await this.#close(idle[0]);
        continue;
      }
      if (this.#open.size < this.#options.budget) {
        return this.#connect(key, database, statementTimeoutMs);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timeout exceeded when trying to connect');
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        // A waiter that times out leaves the queue: a later wake-up goes to a live one.
        const timer = setTimeout(() => {
          const at = this.#waiting.indexOf(wake);
          if (at >= 0) this.#waiting.splice(at, 1);
          resolve();
        }, left);
        this.#waiting.push(wake);
      });
    }
  }

  async #connect(key: string, database: string, statementTimeoutMs: number): Promise<Connection> {
    const options = this.#options;
    const client = new pg.Client(
      connectionConfig(
        { ...options, database, role: 'standby', max: 1, statementTimeoutMs },
        APPLICATION_NAME.standby,
      ),
    );
    const connection: Connection = { key, client, busy: true, broken: false, idleTimer: undefined };
    client.on('error', (error) => {
      connection.broken = true;
      options.logger.warn(
        { role: 'standby', err: redactSecrets(messageOf(error), []) },
        'connection lost',
      );
      if (!connection.busy) void this.#close(connection);
    });
    client.on('end', () => {
      connection.broken = true;
      if (!connection.busy) void this.#close(connection);
    });
    // Counted from now: the budget covers connections being opened too.
    this.#open.add(connection);
    this.#peak = Math.max(this.#peak, this.#open.size);
    try {
      await client.connect();
      return connection;
    } catch (error) {
      void this.#close(connection);
      throw error;
    }
  }

  #release(connection: Connection): void {
    connection.busy = false;
    if (connection.broken || this.#ending) {
      void this.#close(connection);
      return;
    }
    connection.idleTimer = setTimeout(
      () => void this.#close(connection),
      this.#options.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
    );
    connection.idleTimer.unref();
    this.#waiting.shift()?.();
  }

  /**
   * Ends the session; resolves once it has ended (or after CLOSE_WAIT_MS: a client whose
   * socket is gone may never confirm). It counts against the budget until then.
   */
  #close(connection: Connection): Promise<void> {
    clearTimeout(connection.idleTimer);
    if (!this.#open.has(connection)) return Promise.resolve();
    connection.closing ??= (async () => {
      const gaveUp = new Promise<void>((resolve) => setTimeout(resolve, CLOSE_WAIT_MS).unref());
      await Promise.race([connection.client.end().catch(() => undefined), gaveUp]);
      this.#open.delete(connection);
      this.#waiting.shift()?.();
    })();
    return connection.closing;
  }
}
