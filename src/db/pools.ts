/**
 * One pool per server, with application_name, timeouts on every statement and connection,
 * and an error listener (an idle client that loses its server must not crash the process).
 */
import pg from 'pg';
import { parseIntoClientConfig } from 'pg-connection-string';
import type { Logger } from 'pino';
import { redactSecrets } from '../redact.js';
import { cancelStatement } from './cancel.js';

/**
 * application_name of slotsync's sessions, by what they do: pg_stat_activity tells them
 * apart (a restarted process ends the creations and advances a dead one left running).
 */
export const APPLICATION_NAME = {
  primary: 'slotsync-primary',
  standby: 'slotsync-standby',
  lock: 'slotsync-lock',
  replication: 'slotsync-replication',
  health: 'slotsync-health',
} as const;

export interface PoolOptions {
  url: string;
  /**
   * Connect to this database instead of the URL's. Given as a field, never spliced into
   * the URL: a database name may hold any character (/, #, %, quotes) and is data.
   */
  database?: string;
  role: 'primary' | 'standby';
  /** application_name, when not the role's (the health probes have their own). */
  applicationName?: string;
  max: number;
  statementTimeoutMs: number;
  connectTimeoutMs: number;
  logger: Logger;
}

export function connectionConfig(options: PoolOptions, applicationName: string): pg.ClientConfig {
  // As pg does with connectionString, the URL's own parameters win over these defaults.
  const target: pg.ClientConfig =
    options.database === undefined
      ? { connectionString: options.url }
      : { ...parseIntoClientConfig(options.url), database: options.database };
  return {
    application_name: applicationName,
    connectionTimeoutMillis: options.connectTimeoutMs,
    statement_timeout: options.statementTimeoutMs,
    // The client gives up a little after the server should have: a stalled server
    // (SIGSTOP, dropped network) cannot hold a cycle, or the sync lock, forever.
    query_timeout: options.statementTimeoutMs + 5_000,
    keepAlive: true,
    // A backend whose client vanished mid-statement (kill -9 of slotsync during a slot
    // creation) notices and stops instead of finishing a copy nobody records.
    options: '-c client_connection_check_interval=1000',
    ...target,
  };
}

/**
 * A logical replication connection (replication=database) to `options.database`: for the
 * commands that have no SQL function, such as ALTER_REPLICATION_SLOT.
 */
export function createReplicationClient(options: PoolOptions): pg.Client {
  const config = connectionConfig(options, APPLICATION_NAME.replication);
  // Replication connections take no -c options such as client_connection_check_interval.
  const { options: _serverOptions, ...rest } = config;
  const client = new pg.Client({ ...rest, replication: 'database' } as pg.ClientConfig);
  client.on('error', () => undefined); // the caller sees the failure of its command
  return client;
}

/** One dedicated connection (the standby's sync-lock session), same timeouts as the pools. */
export function createClient(options: PoolOptions, applicationName: string): pg.Client {
  const client = new pg.Client(connectionConfig(options, applicationName));
  client.on('error', (error) => {
    options.logger.warn(
      { role: options.role, err: redactSecrets(error.message, []) },
      'connection lost',
    );
  });
  return client;
}

/** The statements running on a pool's connections, to cancel them when the process stops. */
export function inFlight(pool: pg.Pool): { cancel(): Promise<number> } {
  const busy = new Set<pg.PoolClient>();
  pool.on('acquire', (client) => busy.add(client));
  pool.on('release', (_error, client) => busy.delete(client));
  pool.on('remove', (client) => busy.delete(client as pg.PoolClient));
  return {
    cancel: async () => {
      const clients = [...busy];
      await Promise.all(clients.map((client) => cancelStatement(client as unknown as pg.Client)));
      return clients.length;
    },
  };
}

export function createPool(options: PoolOptions): pg.Pool {
  const pool = new pg.Pool({
    ...connectionConfig(options, options.applicationName ?? APPLICATION_NAME[options.role]),
    max: options.max,
    idleTimeoutMillis: 30_000,
  });
  pool.on('error', (error) => {
    options.logger.warn(
      { role: options.role, err: redactSecrets(error.message, []) },
      'idle connection lost',
    );
  });
  return pool;
}
