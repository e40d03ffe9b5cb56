/** Runs slotsync's command line from the sources, as a separate process. */
import { type ChildProcess, spawn } from 'node:child_process';
import { request } from 'node:https';
import { fileURLToPath } from 'node:url';
import { freePort } from '../support/server.js';
import { waitFor } from './harness.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface SpawnOptions {
  /**
   * File permissions apply to the process even when the tests run as root: it runs without
   * CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (setpriv), so a folder made read-only is
   * read-only to it, while it still reads the checkout wherever that lives.
   */
  permissionsApply?: boolean;
  /** More node options before the command line, e.g. `--import` of a test helper. */
  nodeArgs?: string[];
}

export interface StartOptions extends SpawnOptions {
  /** The process serves HTTPS (SLOTSYNC_TLS_*): trust this authority (PEM) to reach it. */
  https?: { ca: string };
}

export function spawnCli(
  args: string[],
  env: Record<string, string>,
  options: SpawnOptions = {},
): ChildProcess {
  const node = [process.execPath, '--import', 'tsx', ...(options.nodeArgs ?? []), CLI, ...args];
  const [command, ...rest] =
    options.permissionsApply && process.getuid?.() === 0
      ? ['setpriv', '--bounding-set', '-dac_override,-dac_read_search', ...node]
      : node;
  return spawn(command as string, rest, {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

export interface Running {
  child: ChildProcess;
  base: string;
  output: () => string;
  /** The exit code, once the process exits (without sending it anything). */
  exited: Promise<number | null>;
  /** SIGTERM unless it has exited; then its exit code. */
  stop(): Promise<number | null>;
}

/** `slotsync` (serve) as a process on a free port, once it answers /health/live. */
export async function startProcess(
  env: Record<string, string>,
  options: StartOptions = {},
): Promise<Running> {
  const port = await freePort();
  const child = spawnCli(
    [],
    { SLOTSYNC_PORT: String(port), SLOTSYNC_LOG_LEVEL: 'info', ...env },
    options,
  );
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  const base = `${options.https ? 'https' : 'http'}://127.0.0.1:${port}`;
  const live = options.https
    ? (() => {
        const ca = options.https.ca;
        return () => httpsStatus(`${base}/health/live`, ca).then((status) => status === 200);
      })()
    : () => fetch(`${base}/health/live`).then((r) => r.ok);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  await waitFor(`slotsync listening on ${port}`, async () => {
    if (child.exitCode !== null) throw new Error(`slotsync exited: ${output}`);
    return live().catch(() => false);
  });
  return {
    child,
    base,
    output: () => output,
    exited,
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      return exited;
    },
  };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], env: Record<string, string>): Promise<CliResult> {
  const child = spawnCli(args, env);
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => {
    stdout += d;
  });
  child.stderr?.on('data', (d) => {
    stderr += d;
  });
  return new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** The status of a GET over HTTPS that trusts only `ca`. */
export function httpsStatus(url: string, ca: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}
