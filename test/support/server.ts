/**
 * One embedded PostgreSQL server: initdb, configure, start, stop. Runs as an unprivileged
 * user when this process is root; a watchdog stops it (and removes its files) if the owning
 * process dies without stopping it, even by kill -9.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { appendFile, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { delay } from '../../src/util.js';
import type { Binaries } from './binaries.js';
import type { RunAs } from './user.js';

const execFileAsync = promisify(execFile);

export interface ServerOptions {
  name: string;
  /** Parent folder; the server's data lives in `<root>/<name>`. */
  root: string;
  binaries: Binaries;
  runAs: RunAs | null;
  port?: number;
}

export type Settings = Record<string, string | number | boolean>;

export class PgServer {
  readonly name: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly binaries: Binaries;
  readonly runAs: RunAs | null;
  /** Removed by the watchdog when the owner dies: the whole cluster folder. */
  readonly cleanupDir: string;
  port = 0;
  #process: ChildProcess | undefined;
  #exited: Promise<void> | undefined;

  constructor(options: ServerOptions) {
    this.name = options.name;
    this.dataDir = join(options.root, options.name);
    this.logFile = join(options.root, `${options.name}.log`);
    this.binaries = options.binaries;
    this.runAs = options.runAs;
    this.cleanupDir = options.root;
    if (options.port) this.port = options.port;
  }

  get major(): number {
    return this.binaries.major;
  }

  /** A URL for the superuser (trust authentication: the password is accepted and ignored). */
  url(database = 'postgres', password?: string): string {
    const auth = password === undefined ? 'postgres' : `postgres:${encodeURIComponent(password)}`;
    return `postgres://${auth}@127.0.0.1:${this.port}/${database}`;
  }

  get running(): boolean {
    const child = this.#process;
    return child !== undefined && child.exitCode === null && child.signalCode === null;
  }

  get pid(): number | undefined {
    return this.#process?.pid;
  }

  async initdb(): Promise<void> {
    await this.#run(this.binaries.initdb, [
      '-D',
      this.dataDir,
      '-U',
      'postgres',
      '--auth=trust',
      '-E',
      'UTF8',
      '--locale=C',
      '--no-instructions',
      '--no-sync',
    ]);
  }

  /** Appends settings to postgresql.conf (later lines win). */
  async configure(settings: Settings): Promise<void> {
    const lines = Object.entries(settings).map(([key, value]) => `${key} = ${quote(value)}`);
    await appendFile(join(this.dataDir, 'postgresql.conf'), `${lines.join('\n')}\n`);
  }

  async start(): Promise<void> {
    if (this.running) return;
    // A port found free can be taken by a server of another test process before this one
    // binds it: then that server would answer for this one. Caught by #waitReady (it asks
    // the server for its data folder); a first start tries another port.
    const chosen = this.port === 0;
    for (let attempt = 1; ; attempt++) {
      if (this.port === 0) this.port = await freePort();
      try {
        await this.#startOnce();
        return;
      } catch (error) {
        if (!(error instanceof PortTaken) || !chosen || attempt >= 3) throw error;
        this.port = 0;
      }
    }
  }

  async #startOnce(): Promise<void> {
    await writeFile(this.logFile, '');
    if (this.runAs) await chown(this.logFile, this.runAs.uid, this.runAs.gid);
    const log = await import('node:fs').then((fs) => fs.openSync(this.logFile, 'a'));
    const child = spawn(
      this.binaries.postgres,
      [
        '-D',
        this.dataDir,
        '-p',
        String(this.port),
        '-c',
        'listen_addresses=127.0.0.1',
        '-c',
        `unix_socket_directories=${this.dataDir}`,
      ],
      {
        stdio: ['ignore', log, log],
        detached: true,
        ...(this.runAs ? { uid: this.runAs.uid, gid: this.runAs.gid } : {}),
      },
    );
    child.unref();
    this.#process = child;
    this.#exited = new Promise((resolve) => child.once('exit', () => resolve()));
    startWatchdog(child.pid ?? 0, this.cleanupDir);
    try {
      await this.#waitReady();
    } catch (error) {
      const tail = await this.logTail();
      await this.stop('immediate');
      if (error instanceof PortTaken || /could not bind|Address already in use/.test(tail)) {
        throw new PortTaken(`${this.name}: port ${this.port} is another server's`);
      }
      throw new Error(
        `${this.name} (PostgreSQL ${this.major}) did not start: ${(error as Error).message}\n--- log tail ---\n${tail}`,
      );
    }
  }

  /** smart = SIGTERM, fast = SIGINT, immediate = SIGQUIT (pg_ctl's modes). */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const child = this.#process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    this.resume(); // a frozen server would never act on the stop signal
    child.kill(mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
    const giveUp = new AbortController();
    const timeout = delay(30_000, giveUp.signal).then(() => 'timeout');
    const first = await Promise.race([this.#exited, timeout]);
    giveUp.abort();
    if (first === 'timeout') {
      child.kill('SIGKILL');
      await this.#exited;
    }
  }

  /** kill -9 of the postmaster and every backend: a machine that loses power. */
  async crash(): Promise<void> {
    if (!this.running) return;
    this.#signalAll('SIGKILL');
    await this.#exited;
  }

  /** Promotes a standby and waits until it accepts writes. */
  async promote(): Promise<void> {
    const [row] = await this.sql<{ promoted: boolean }>('SELECT pg_promote(true, 60) AS promoted');
    if (!row?.promoted) throw new Error(`${this.name} was not promoted within 60 s`);
  }

  /** SIGSTOP / SIGCONT: a server that stops answering. */
  /**
   * Freezes the server: SIGSTOP to the postmaster and every backend (each leads its own
   * process group, so one by one). Connections stay open and nothing answers.
   */
  pause(): void {
    this.#signalAll('SIGSTOP');
  }

  resume(): void {
    this.#signalAll('SIGCONT');
  }

  #signalAll(signal: NodeJS.Signals): void {
    const pid = this.#process?.pid;
    if (!this.running || !pid) return;
    for (const target of [pid, ...childrenOf(pid)]) {
      try {
        process.kill(target, signal);
      } catch {
        // exited meanwhile
      }
    }
  }

  async remove(): Promise<void> {
    await this.stop('immediate');
    await rm(this.dataDir, { recursive: true, force: true });
  }

  async logTail(lines = 30): Promise<string> {
    const text = await readFile(this.logFile, 'utf8').catch(() => '');
    return text.split('\n').slice(-lines).join('\n');
  }

  client(database = 'postgres'): pg.Client {
    return new pg.Client({
      host: '127.0.0.1',
      port: this.port,
      user: 'postgres',
      database, // a field, not part of a URL: any name works
      application_name: 'slotsync-harness',
    });
  }

  /** Runs one statement on a fresh connection and returns its rows. */
  async sql<R extends pg.QueryResultRow = Record<string, unknown>>(
    text: string,
    values: unknown[] = [],
    database = 'postgres',
  ): Promise<R[]> {
    const client = this.client(database);
    await client.connect();
    try {
      return (await client.query<R>(text, values)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  async #waitReady(): Promise<void> {
    const deadline = Date.now() + 60_000;
    let last: unknown;
    while (Date.now() < deadline) {
      if (this.#process?.exitCode !== null || this.#process?.signalCode !== null) {
        throw new Error(
          `postgres exited with ${this.#process?.exitCode ?? this.#process?.signalCode}`,
        );
      }
      let dir: string | undefined;
      try {
        const [row] = await this.sql<{ dir: string }>(
          `SELECT current_setting('data_directory') AS dir`,
        );
        dir = row?.dir;
      } catch (error) {
        last = error;
        await delay(50);
        continue;
      }
      if (dir === this.dataDir) return;
      throw new PortTaken(`port ${this.port} answers for ${dir}`);
    }
    throw new Error(`not ready after 60 s: ${(last as Error)?.message}`);
  }

  async #run(file: string, args: string[]): Promise<void> {
    await mkdir(join(this.dataDir, '..'), { recursive: true });
    try {
      await execFileAsync(
        file,
        args,
        this.runAs ? { uid: this.runAs.uid, gid: this.runAs.gid } : {},
      );
    } catch (error) {
      const e = error as { stderr?: string; message: string };
      throw new Error(`${file} failed: ${e.stderr || e.message}`);
    }
  }
}

function quote(value: string | number | boolean): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'boolean') return value ? 'on' : 'off';
  return `'${value.replace(/'/g, "''")}'`;
}

/** Child processes of `pid`, from /proc (Linux). */
function childrenOf(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // pid (comm) state ppid …: comm may contain spaces and parentheses; split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return children;
}

/** The port chosen for a server was bound by another (see PgServer.start). */
class PortTaken extends Error {}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * A detached shell that outlives us: once the owning process is gone, it stops the server
 * immediately and removes its data. Normal stops make it a no-op.
 */
function startWatchdog(postmasterPid: number, cleanupDir: string): void {
  if (!postmasterPid) return;
  const script = `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; kill -QUIT ${postmasterPid} 2>/dev/null; sleep 3; kill -KILL ${postmasterPid} 2>/dev/null; rm -rf '${cleanupDir.replace(/'/g, '')}'`;
  const watchdog = spawn('sh', ['-c', script], { detached: true, stdio: 'ignore' });
  watchdog.unref();
}
