/**
 * A real logical subscriber and a steady write load, for the failover tests and the demo:
 * a publication on the primary, `CREATE SUBSCRIPTION ... WITH (failover = true)` on the
 * subscriber, and one row per transaction written with increasing ids.
 */
import pg from 'pg';
import { delay } from '../../src/util.js';
import type { PgServer } from './server.js';

export const PUBLICATION = 'slotsync_pub';
export const SUBSCRIPTION = 'slotsync_sub';

export function conninfo(server: PgServer): string {
  return `host=127.0.0.1 port=${server.port} user=postgres dbname=postgres`;
}

export async function setupSubscription(primary: PgServer, subscriber: PgServer): Promise<void> {
  const table =
    'CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())';
  await primary.sql(table);
  await primary.sql(`CREATE PUBLICATION ${PUBLICATION} FOR TABLE items`);
  await subscriber.sql(table);
  await subscriber.sql(
    `CREATE SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${conninfo(primary)}' PUBLICATION ${PUBLICATION} WITH (failover = true)`,
  );
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const [row] = await subscriber.sql<{ pending: number }>(
      `SELECT count(*) FILTER (WHERE srsubstate <> 'r')::int AS pending, count(*)::int AS n FROM pg_subscription_rel`,
    );
    if (row && row.pending === 0) return;
    await delay(50);
  }
  throw new Error('the subscription did not finish its initial table sync within 60 s');
}

/** ALTER SUBSCRIPTION ... CONNECTION: what an orchestrator does after promotion. */
export async function pointSubscriptionAt(subscriber: PgServer, primary: PgServer): Promise<void> {
  await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} CONNECTION '${conninfo(primary)}'`);
}

export async function countRows(server: PgServer): Promise<{ count: number; max: number }> {
  const [row] = await server.sql<{ count: number; max: number | null }>(
    'SELECT count(*)::int AS count, max(id)::int AS max FROM items',
  );
  return { count: row?.count ?? 0, max: row?.max ?? 0 };
}

/** Writes one row per transaction, ids 1, 2, 3, ...; remembers the last committed id. */
export class Writer {
  lastCommitted = 0;
  errors = 0;
  #running: Promise<void> | undefined;
  #stop = false;

  constructor(private readonly intervalMs = 5) {}

  /**
   * Goes on writing on `server` after the ids it already has (a failover loses what the
   * old primary had not sent; the new primary's rows are what counts).
   */
  async resumeOn(server: PgServer): Promise<void> {
    const [row] = await server.sql<{ max: number }>(
      'SELECT coalesce(max(id), 0)::int AS max FROM items',
    );
    this.lastCommitted = row?.max ?? 0;
    this.start(server);
  }

  start(server: PgServer): void {
    if (this.#running) throw new Error('the writer is already running');
    this.#stop = false;
    this.#running = this.#loop(server);
  }

  /** Stops writing; resolves with the last committed id. */
  async stop(): Promise<number> {
    this.#stop = true;
    await this.#running;
    this.#running = undefined;
    return this.lastCommitted;
  }

  async #loop(server: PgServer): Promise<void> {
    const client = new pg.Client({
      connectionString: server.url(),
      application_name: 'slotsync-writer',
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      while (!this.#stop) {
        const id = this.lastCommitted + 1;
        try {
          await client.query('INSERT INTO items (id) VALUES ($1)', [id]);
          this.lastCommitted = id;
        } catch {
          this.errors++;
          return; // the server went away: an orchestrator would switch the writer over
        }
        await delay(this.intervalMs);
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}
