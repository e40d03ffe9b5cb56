/**
 * The two systems under comparison, on identical embedded primary/standby pairs:
 * slotsync (its service process, built from dist/) and PostgreSQL's own slot sync
 * (pg_sync_replication_slots() for cycles, sync_replication_slots = on for lag).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { delay } from '../src/util.js';
import type { Cluster } from '../test/support/cluster.js';
import { freePort } from '../test/support/server.js';

export interface System {
  name: 'slotsync' | 'builtin';
  cluster: Cluster;
  /** One sync; returns its duration in ms. */
  sync(): Promise<number>;
  /** Copies that are sync-ready (slotsync) or synced and persistent (built-in). */
  readyCount(names: readonly string[]): Promise<number>;
  startWorker(): Promise<void>;
  stopWorker(): Promise<void>;
  close(): Promise<void>;
}

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export class SlotsyncSystem implements System {
  readonly name = 'slotsync' as const;
  #child: ChildProcess | undefined;
  #base = '';
  #stateDir: string;

  /** `stateDir` is kept across restarts; `env` adds to or overrides the defaults below. */
  constructor(
    readonly cluster: Cluster,
    private readonly options: { stateDir?: string; env?: Record<string, string> } = {},
  ) {
    this.#stateDir = options.stateDir ?? '';
  }

  get pid(): number | undefined {
    return this.#child?.pid;
  }

  get base(): string {
    return this.#base;
  }

  async start(worker: boolean): Promise<void> {
    if (!this.#stateDir) this.#stateDir = await mkdtemp(join(tmpdir(), 'slotsync-bench-'));
    const port = await freePort();
    const entry = join(ROOT, 'dist/cli/main.js');
    if (!existsSync(entry)) throw new Error('dist/ is missing: run npm run build (npm ci does it)');
    // BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles slotsync's process.
    const nodeArgs = (process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
    this.#child = spawn(process.execPath, [...nodeArgs, entry], {
      env: {
        PATH: process.env.PATH ?? '',
        SLOTSYNC_PRIMARY_URL: this.cluster.primary.url(),
        SLOTSYNC_STANDBY_URL: this.cluster.standby.url(),
        SLOTSYNC_STATE_DIR: this.#stateDir,
        SLOTSYNC_PORT: String(port),
        SLOTSYNC_WORKER: worker ? 'on' : 'off',
        SLOTSYNC_LOG_LEVEL: 'warn',
        SLOTSYNC_SYNC_RATE: '0',
        ...this.options.env,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    this.#base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 200; i++) {
      if (this.#child.exitCode !== null) throw new Error('slotsync exited at start');
      if (
        await fetch(`${this.#base}/health/live`).then(
          (r) => r.ok,
          () => false,
        )
      )
        return;
      await delay(50);
    }
    throw new Error('slotsync did not start');
  }

  async sync(): Promise<number> {
    const answer = await fetch(`${this.#base}/sync`, { method: 'POST' });
    const report = (await answer.json()) as { durationMs?: number; detail?: string };
    if (!answer.ok || report.durationMs === undefined)
      throw new Error(`slotsync sync failed: ${report.detail}`);
    return report.durationMs;
  }

  async readyCount(names: readonly string[]): Promise<number> {
    const slots = (
      (await (await fetch(`${this.#base}/slots`)).json()) as {
        slots: { name: string; sync_ready: boolean }[];
      }
    ).slots;
    const wanted = new Set(names);
    return slots.filter((s) => wanted.has(s.name) && s.sync_ready).length;
  }

  async startWorker(): Promise<void> {
    await this.stopWorker();
    await this.start(true);
  }

  async stopWorker(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }

  /** kill -9, and wait for the process to be gone. */
  async kill9(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /** The sum of the /metrics samples whose line starts with `prefix`. */
  async metric(prefix: string): Promise<number> {
    const text = await (await fetch(`${this.#base}/metrics`)).text();
    let sum = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith(prefix)) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }

  /** Resident memory (MB) and CPU seconds of the service process. */
  footprint(): { rssMb: number; cpuSeconds: number } {
    const pid = this.#child?.pid;
    if (!pid) return { rssMb: Number.NaN, cpuSeconds: Number.NaN };
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    const ticks = Number(stat[11]) + Number(stat[12]);
    return { rssMb: rssKb / 1024, cpuSeconds: ticks / 100 };
  }

  async close(): Promise<void> {
    await this.stopWorker();
  }
}

export class BuiltinSystem implements System {
  readonly name = 'builtin' as const;
  #client: pg.Client | undefined;

  constructor(readonly cluster: Cluster) {}

  async #standby(): Promise<pg.Client> {
    if (!this.#client) {
      this.#client = new pg.Client({ connectionString: this.cluster.standby.url() });
      await this.#client.connect();
    }
    return this.#client;
  }

  async sync(): Promise<number> {
    const client = await this.#standby();
    const started = performance.now();
    await client.query('SELECT pg_sync_replication_slots()');
    return performance.now() - started;
  }

  async readyCount(names: readonly string[]): Promise<number> {
    const client = await this.#standby();
    const result = await client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_replication_slots WHERE synced AND NOT temporary AND slot_name = ANY($1)',
      [names],
    );
    return result.rows[0]?.n ?? 0;
  }

  async #setWorker(on: boolean): Promise<void> {
    const client = await this.#standby();
    await client.query(`ALTER SYSTEM SET sync_replication_slots = ${on ? 'on' : 'off'}`);
    await client.query('SELECT pg_reload_conf()');
    for (let i = 0; i < 200; i++) {
      const running = await client.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE backend_type = 'slotsync worker'`,
      );
      if (running.rows[0]?.n > 0 === on) return;
      await delay(50);
    }
  }

  startWorker(): Promise<void> {
    return this.#setWorker(true);
  }

  stopWorker(): Promise<void> {
    return this.#setWorker(false);
  }

  async close(): Promise<void> {
    await this.#client?.end().catch(() => undefined);
  }
}
