/**
 * One configuration schema gives both validation and the TypeScript type. A bad value stops
 * the start with a message naming the variable (passwords redacted).
 */
import { type Static, type TProperties, type TSchema, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { parseIntoClientConfig } from 'pg-connection-string';
import { SlotSyncError } from './errors.js';
import { passwordsOf, redactSecrets, redactUrl } from './redact.js';
import { parseQuorum } from './sync/quorum.js';
import { slotList } from './sync/select.js';
import { expandHosts } from './urls.js';

const Int = (min: number, max: number, def: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });

/**
 * SLOTSYNC_CHANGE_POLL_MS when unset. Over SQL the poll fences a moved copy and wakes the
 * next advance; under builtin there is nothing to fence or advance (PostgreSQL follows the
 * positions), only a new, dropped or edited slot or setting to notice: a poll a second
 * costs a fifth (measured in docs/performance.md, "The builtin engine").
 */
export const CHANGE_POLL_DEFAULT_MS = { sql: 200, builtin: 1_000 } as const;

const OnOff = (def: 'on' | 'off', description: string) =>
  Type.Union([Type.Literal('on'), Type.Literal('off')], { default: def, description });

/** One environment variable: its name, its schema, and how its value becomes the field. */
interface Variable<S extends TSchema, T> {
  env: `SLOTSYNC_${string}`;
  schema: S;
  map: (value: Static<S>) => T;
}

function variable<S extends TSchema>(env: `SLOTSYNC_${string}`, schema: S): Variable<S, Static<S>>;
function variable<S extends TSchema, T>(
  env: `SLOTSYNC_${string}`,
  schema: S,
  map: (value: Static<S>) => T,
): Variable<S, T>;
function variable<S extends TSchema, T>(
  env: `SLOTSYNC_${string}`,
  schema: S,
  map?: (value: Static<S>) => T,
): Variable<S, T | Static<S>> {
  return { env, schema, map: map ?? ((value) => value) };
}

const on = (value: 'on' | 'off') => value === 'on';
/** Static<> of an optional property outside its object drops `undefined`: put it back. */
const optional = (value: string | undefined) => value;

/**
 * Every setting, declared once: the configuration's fields, their variables, validation
 * and defaults all follow from this table.
 */
const VARIABLES = {
  primaryUrl: variable(
    'SLOTSYNC_PRIMARY_URL',
    Type.String({
      description:
        "postgres URL of the primary; must include the database; may list every node (libpq's multi-host form): slotsync follows whichever is this standby's upstream",
    }),
  ),
  standbyUrl: variable(
    'SLOTSYNC_STANDBY_URL',
    Type.String({ description: 'postgres URL of the standby' }),
  ),
  host: variable(
    'SLOTSYNC_HOST',
    Type.String({ default: '127.0.0.1', description: 'where the API listens' }),
  ),
  port: variable('SLOTSYNC_PORT', Int(0, 65535, 8432, 'API port')),
  tlsCertFile: variable(
    'SLOTSYNC_TLS_CERT_FILE',
    Type.Optional(
      Type.String({
        description:
          'PEM certificate (chain) file: the API serves HTTPS (with SLOTSYNC_TLS_KEY_FILE); re-read on SIGHUP',
      }),
    ),
    optional,
  ),
  tlsKeyFile: variable(
    'SLOTSYNC_TLS_KEY_FILE',
    Type.Optional(Type.String({ description: 'PEM private key file of SLOTSYNC_TLS_CERT_FILE' })),
    optional,
  ),
  stateDir: variable(
    'SLOTSYNC_STATE_DIR',
    Type.String({ default: './.slotsync', description: 'registry folder' }),
  ),
  resetState: variable(
    'SLOTSYNC_RESET_STATE',
    OnOff(
      'off',
      'on: a state folder that describes another standby is moved aside instead of refusing the start',
    ),
    on,
  ),
  worker: variable('SLOTSYNC_WORKER', OnOff('on', 'run the background worker'), on),
  engine: variable(
    'SLOTSYNC_ENGINE',
    Type.Union([Type.Literal('sql'), Type.Literal('builtin')], {
      default: 'sql',
      description:
        "who copies the slots: sql, slotsync over SQL (its own copies, staged and fenced); builtin, PostgreSQL's slot sync (its worker when the standby has sync_replication_slots = on, else slotsync calls pg_sync_replication_slots() each cycle), with slotsync's gate, candidates, quorum and metrics over it",
    }),
  ),
  replaceStale: variable(
    'SLOTSYNC_REPLACE_STALE',
    OnOff(
      'off',
      'on: a stale same-name slot on the standby (inactive, failover, not synced, same plugin and database: left from before a switchover) is dropped and a fresh copy staged',
    ),
    on,
  ),
  rearm: variable(
    'SLOTSYNC_REARM',
    OnOff(
      'on',
      "after promotion, turn failover on for the sync-ready copies (ALTER_REPLICATION_SLOT) so the new primary's standbys can sync them",
    ),
    on,
  ),
  apiToken: variable(
    'SLOTSYNC_API_TOKEN',
    Type.Optional(
      Type.String({ minLength: 16, description: 'bearer token required on POST routes' }),
    ),
    optional,
  ),
  naptimeMinMs: variable(
    'SLOTSYNC_NAPTIME_MIN_MS',
    Int(10, 3_600_000, 200, 'worker naptime after a change'),
  ),
  naptimeMaxMs: variable(
    'SLOTSYNC_NAPTIME_MAX_MS',
    Int(10, 3_600_000, 30_000, 'longest worker naptime while idle'),
  ),
  changePollMs: variable(
    'SLOTSYNC_CHANGE_POLL_MS',
    Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 3_600_000,
        description: `while the worker naps, how often it checks the primary for a slot change (0: never); default ${CHANGE_POLL_DEFAULT_MS.sql}, ${CHANGE_POLL_DEFAULT_MS.builtin} with SLOTSYNC_ENGINE=builtin`,
      }),
    ),
    (value: number | undefined) => value,
  ),
  restartIntervalMs: variable(
    'SLOTSYNC_RESTART_INTERVAL_MS',
    Int(0, 3_600_000, 10_000, 'wait after a failed cycle'),
  ),
  syncRatePerSecond: variable(
    'SLOTSYNC_SYNC_RATE',
    Int(
      0,
      100_000,
      5,
      'POST /sync allowed per client and second, bursts of twice that (0: unlimited)',
    ),
  ),
  syncWaitMs: variable(
    'SLOTSYNC_SYNC_WAIT_MS',
    Int(0, 600_000, 30_000, 'how long POST /sync waits for a cycle'),
  ),
  statementTimeoutMs: variable(
    'SLOTSYNC_STATEMENT_TIMEOUT_MS',
    Int(100, 600_000, 30_000, 'timeout of every statement'),
  ),
  createTimeoutMs: variable(
    'SLOTSYNC_CREATE_TIMEOUT_MS',
    Int(100, 600_000, 60_000, 'timeout of one copy creation'),
  ),
  connectTimeoutMs: variable(
    'SLOTSYNC_CONNECT_TIMEOUT_MS',
    Int(100, 600_000, 5_000, 'timeout of one connection attempt'),
  ),
  concurrency: variable(
    'SLOTSYNC_CONCURRENCY',
    Int(1, 64, 8, 'standby connections used to create and advance copies'),
  ),
  envFile: variable(
    'SLOTSYNC_ENV_FILE',
    Type.Optional(
      Type.String({
        description: 'file of KEY=VALUE lines overlaid on the environment, re-read on SIGHUP',
      }),
    ),
    optional,
  ),
  readToken: variable(
    'SLOTSYNC_READ_TOKEN',
    Type.Optional(
      Type.String({
        minLength: 16,
        description:
          'bearer token required on GET /slots, /metrics, /ready, /openapi.json and for the details of /health (the API token works too)',
      }),
    ),
    optional,
  ),
  slotsInclude: variable(
    'SLOTSYNC_SLOTS_INCLUDE',
    Type.Optional(
      Type.String({
        description:
          'comma-separated name patterns (* matches anything) of the failover slots to copy (default: all)',
      }),
    ),
    (value: string | undefined) => slotList(value),
  ),
  slotsExclude: variable(
    'SLOTSYNC_SLOTS_EXCLUDE',
    Type.Optional(
      Type.String({
        description:
          'comma-separated name patterns of failover slots never to copy; their copies are dropped',
      }),
    ),
    (value: string | undefined) => slotList(value),
  ),
  requiredSlots: variable(
    'SLOTSYNC_REQUIRED_SLOTS',
    Type.Optional(
      Type.String({
        description:
          'comma-separated failover slots GET /ready and the gate require (default: every failover slot)',
      }),
    ),
    (value: string | undefined) => slotList(value),
  ),
  standbySlotsQuorum: variable(
    'SLOTSYNC_STANDBY_SLOTS_QUORUM',
    Type.Optional(
      Type.String({
        description:
          "ANY k (slot1, slot2, …): one slotsync at a time keeps the primary's synchronized_standby_slots equal to k of these standbys' physical slots, chosen among those that stream and have what the consumers confirmed (opt-in; needs ALTER SYSTEM on that parameter and pg_reload_conf())",
      }),
    ),
    (value: string | undefined) => parseQuorum(value),
  ),
  quorumSilentMs: variable(
    'SLOTSYNC_QUORUM_SILENT_MS',
    Int(
      1_000,
      86_400_000,
      300_000,
      'how long the quorum manager waits for a standby whose slotsync does not answer before removing it anyway; such a standby never answers safe from a read of the primary older than this',
    ),
  ),
  logLevel: variable(
    'SLOTSYNC_LOG_LEVEL',
    Type.Union(
      ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) =>
        Type.Literal(level),
      ),
      { default: 'info', description: 'pino log level' },
    ),
    (level) => level as string,
  ),
};

type Variables = typeof VARIABLES;

type Mapped = { [K in keyof Variables]: ReturnType<Variables[K]['map']> };

/**
 * The configuration, field by field as VARIABLES maps each variable; a default that depends
 * on another variable (the change poll, on the engine) is resolved by loadConfig.
 */
export type Config = Omit<Mapped, 'changePollMs'> & { changePollMs: number };

/** The environment's schema (validation, defaults, the README's table). */
export const EnvSchema = Type.Object(
  Object.fromEntries(Object.values(VARIABLES).map((v) => [v.env, v.schema])) as TProperties,
);

const INTEGER_KEYS = Object.entries(EnvSchema.properties)
  .filter(([, schema]) => (schema as { type?: string }).type === 'integer')
  .map(([key]) => key);

export function loadConfig(source: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, unknown> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = source[key];
    if (value === undefined || value === '') continue;
    if (INTEGER_KEYS.includes(key)) {
      if (!/^-?\d+$/.test(value.trim()))
        throw configError(key, `must be an integer, got "${value}"`);
      raw[key] = Number(value.trim());
    } else {
      raw[key] = value;
    }
  }
  const env = Value.Default(EnvSchema, raw) as Record<string, unknown>;
  const firstError = Value.Errors(EnvSchema, env).First();
  if (firstError) {
    const key = firstError.path.replace(/^\//, '') || 'configuration';
    const shown = key.endsWith('_URL') || key.endsWith('_TOKEN') ? '' : `: ${firstError.message}`;
    throw configError(key, firstError.value === undefined ? 'is required' : `is invalid${shown}`);
  }
  const mapped = Object.fromEntries(
    Object.entries(VARIABLES).map(([field, v]) => [
      field,
      (v.map as (value: unknown) => unknown)(env[v.env]),
    ]),
  ) as Mapped;
  const config: Config = {
    ...mapped,
    changePollMs: mapped.changePollMs ?? CHANGE_POLL_DEFAULT_MS[mapped.engine],
  };
  for (const url of expandHosts(config.primaryUrl)) {
    checkPostgresUrl(VARIABLES.primaryUrl.env, url, true);
  }
  checkPostgresUrl(VARIABLES.standbyUrl.env, config.standbyUrl, false);
  if ((config.tlsCertFile === undefined) !== (config.tlsKeyFile === undefined)) {
    const missing =
      config.tlsCertFile === undefined ? 'SLOTSYNC_TLS_CERT_FILE' : 'SLOTSYNC_TLS_KEY_FILE';
    throw configError(
      missing,
      'is required with the other: HTTPS needs both a certificate and its key',
    );
  }
  if (config.naptimeMinMs > config.naptimeMaxMs) {
    throw configError('SLOTSYNC_NAPTIME_MIN_MS', 'must not exceed SLOTSYNC_NAPTIME_MAX_MS');
  }
  return config;
}

/** What must never leave the process: the API token and the databases' passwords. */
export function secretsOf(
  config: Pick<Config, 'apiToken' | 'primaryUrl' | 'standbyUrl'> & { readToken?: string },
): string[] {
  return [
    config.apiToken ?? '',
    config.readToken ?? '',
    ...passwordsOf(config.primaryUrl, config.standbyUrl),
  ];
}

export function configError(variable: string, problem: string): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_CONFIG', `${variable} ${problem}`);
}

/** The database a postgres URL names, or null. */
export function databaseOf(url: string): string | null {
  const parsed = new URL(url);
  const fromPath = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  return fromPath || parsed.searchParams.get('dbname') || null;
}

/** What node-postgres accepts (see the README's TLS section for what each does here). */
const SSL_MODES = ['disable', 'prefer', 'require', 'verify-ca', 'verify-full', 'no-verify'];

function checkPostgresUrl(variable: string, url: string, needsDatabase: boolean): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw configError(variable, `is not a valid URL: ${redactUrl(url)}`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw configError(variable, `must be a postgres:// URL, got ${redactUrl(url)}`);
  }
  const sslmode = parsed.searchParams.get('sslmode');
  if (sslmode !== null && !SSL_MODES.includes(sslmode)) {
    throw configError(
      variable,
      `has an unknown sslmode "${sslmode}" (one of ${SSL_MODES.join(', ')})`,
    );
  }
  try {
    // Reads sslrootcert, sslcert and sslkey now: a missing file stops the start here.
    parseIntoClientConfig(url);
  } catch (error) {
    throw configError(
      variable,
      `has TLS settings that cannot be used: ${redactSecrets((error as Error).message, [])}`,
    );
  }
  if (needsDatabase && databaseOf(url) === null) {
    // CheckAndGetDbnameFromConninfo()
    throw configError(
      variable,
      `must name a database: replication slot synchronization requires "dbname" to be specified in ${redactUrl(url)}`,
    );
  }
}

/**
 * The environment, overlaid with SLOTSYNC_ENV_FILE when set (KEY=VALUE lines, # comments).
 * SIGHUP re-reads the file: the way to change a running service's configuration.
 */
export function readEnvironment(
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string,
): NodeJS.ProcessEnv {
  const path = env.SLOTSYNC_ENV_FILE;
  if (!path) return env;
  let text: string;
  try {
    text = readFile(path);
  } catch (error) {
    throw configError('SLOTSYNC_ENV_FILE', `cannot be read: ${(error as Error).message}`);
  }
  const merged: NodeJS.ProcessEnv = { ...env };
  for (const [index, rawLine] of text.split('\n').entries()) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const match = /^(?:export\s+)?([A-Z0-9_]+)\s*=\s*(.*)$/.exec(line);
    if (!match) throw configError('SLOTSYNC_ENV_FILE', `line ${index + 1} is not KEY=VALUE`);
    let value = match[2] ?? '';
    if (/^(['"]).*\1$/.test(value)) value = value.slice(1, -1);
    merged[match[1] as string] = value;
  }
  return merged;
}
