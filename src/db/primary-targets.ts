/**
 * The primary slotsync reads, among the hosts SLOTSYNC_PRIMARY_URL lists (libpq's multi-host
 * form: one slotsync per node, started with the same environment everywhere). The one
 * followed is not in recovery, belongs to the standby's cluster (system identifier), has the
 * standby's physical slot, and streams to it through that slot; when several qualify (an old
 * primary still running after a failover), the one the standby streams from wins, then the
 * one its primary_conninfo names. It is looked for again when the one followed fails, enters
 * recovery or stops being this standby's upstream. One host: that host, always.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { messageOf } from '../errors.js';
import { hostOf } from '../urls.js';
import { connectionConfig, createPool, inFlight, type PoolOptions } from './pools.js';

export interface UpstreamHint {
  systemIdentifier: string;
  primarySlotName: string;
  /** host and port of the standby's primary_conninfo, when readable. */
  conninfo: { host: string | null; port: string | null } | null;
}

interface Probe {
  url: string;
  inRecovery: boolean;
  systemIdentifier: string;
  slotExists: boolean;
  slotActive: boolean;
}

/** How long one host may take to answer while the primary is looked for. */
const PROBE_TIMEOUT_MS = 2_000;

export class PrimaryTargets {
  readonly #urls: readonly string[];
  readonly #options: Omit<PoolOptions, 'url'>;
  readonly #logger: Logger;
  #current: string;
  #pool: pg.Pool;
  #cancel: { cancel(): Promise<number> };

  constructor(urls: readonly string[], options: Omit<PoolOptions, 'url'>, logger: Logger) {
    this.#urls = urls;
    this.#options = options;
    this.#logger = logger;
    this.#current = urls[0] as string;
    this.#pool = createPool({ ...options, url: this.#current });
    this.#cancel = inFlight(this.#pool);
  }

  /** The pool of the primary followed now. */
  get pool(): pg.Pool {
    return this.#pool;
  }

  /** Its URL (for messages: redact it). */
  get url(): string {
    return this.#current;
  }

  get multiple(): boolean {
    return this.#urls.length > 1;
  }

  cancelInFlight(): Promise<number> {
    return this.#cancel.cancel();
  }

  /**
   * Asks every host and follows the upstream of the standby described by `hint`. Returns
   * true when it switched to another host. Never throws: when no host qualifies, the one
   * followed stays (the cycle then says why it is not the upstream).
   */
  async locate(hint: UpstreamHint): Promise<boolean> {
    if (!this.multiple) return false;
    const probes = await Promise.all(this.#urls.map((url) => this.#probe(url, hint)));
    const qualified = probes.filter(
      (p): p is Probe =>
        p !== null && !p.inRecovery && p.systemIdentifier === hint.systemIdentifier && p.slotExists,
    );
    const named = (p: Probe) => {
      if (!hint.conninfo?.host) return false;
      const [host, port] = splitHost(hostOf(p.url));
      return host === hint.conninfo.host && (hint.conninfo.port ?? '5432') === (port ?? '5432');
    };
    qualified.sort(
      (a, b) => Number(b.slotActive) - Number(a.slotActive) || Number(named(b)) - Number(named(a)),
    );
    const chosen = qualified[0];
    if (chosen === undefined || chosen.url === this.#current) return false;
    this.#logger.warn(
      { from: hostOf(this.#current), to: hostOf(chosen.url), streaming: chosen.slotActive },
      'following another primary: it is not in recovery and is this standby’s upstream',
    );
    const old = this.#pool;
    void old.end().catch(() => undefined); // statements in flight finish first
    this.#current = chosen.url;
    this.#pool = createPool({ ...this.#options, url: chosen.url });
    this.#cancel = inFlight(this.#pool);
    return true;
  }

  async #probe(url: string, hint: UpstreamHint): Promise<Probe | null> {
    const client = new pg.Client({
      ...connectionConfig(
        { ...this.#options, url, connectTimeoutMs: PROBE_TIMEOUT_MS },
        'slotsync-primary',
      ),
      query_timeout: PROBE_TIMEOUT_MS,
    });
    client.on('error', () => undefined);
    try {
      await client.connect();
      const { rows } = await client.query<{
        in_recovery: boolean;
        system_identifier: string;
        slot_exists: boolean;
        slot_active: boolean;
      }>(
        `SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
                (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS system_identifier,
                EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots
                         WHERE slot_type = 'physical' AND slot_name = $1::text) AS slot_exists,
                EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots
                         WHERE slot_type = 'physical' AND slot_name = $1::text AND active) AS slot_active`,
        [hint.primarySlotName],
      );
      const row = rows[0];
      if (row === undefined) return null;
      return {
        url,
        inRecovery: row.in_recovery,
        systemIdentifier: row.system_identifier,
        slotExists: row.slot_exists,
        slotActive: row.slot_active,
      };
    } catch (error) {
      this.#logger.debug({ host: hostOf(url), err: messageOf(error) }, 'host did not answer');
      return null;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async end(): Promise<void> {
    await this.#pool.end().catch(() => undefined);
  }
}

/** `db1:5432` → [db1, 5432]; `[::1]:5432` → [::1, 5432]; `db1` → [db1, null]. */
export function splitHost(hostPort: string): [string, string | null] {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(hostPort);
  if (bracketed) return [bracketed[1] as string, bracketed[2] ?? null];
  const colon = hostPort.lastIndexOf(':');
  return colon < 0 ? [hostPort, null] : [hostPort.slice(0, colon), hostPort.slice(colon + 1)];
}

/** host and port from a primary_conninfo (keyword form or URL); never its password. */
export function conninfoHost(conninfo: string | null): UpstreamHint['conninfo'] {
  if (conninfo === null || conninfo === '') return null;
  if (/^postgres(ql)?:\/\//.test(conninfo)) {
    const [host, port] = splitHost(hostOf(conninfo).split(',')[0] ?? '');
    return { host: host || null, port };
  }
  const value = (key: string) =>
    new RegExp(`(?:^|\\s)${key}\\s*=\\s*(?:'((?:[^'\\\\]|\\\\.)*)'|(\\S+))`).exec(conninfo);
  const host = value('host');
  const port = value('port');
  return {
    host: host ? (host[1] ?? host[2] ?? null) : null,
    port: port ? (port[1] ?? port[2] ?? null) : null,
  };
}
