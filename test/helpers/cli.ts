/** Runs slotsync's command line from the sources, as a separate process. */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../src/cluster/server.js';
import type { RunAs } from '../../src/cluster/user.js';
import { waitFor } from './harness.js';

export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export function spawnCli(
  args: string[],
  env: Record<string, string>,
  runAs: RunAs | null = null,
): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
  });
}

export interface Running {
  child: ChildProcess;
  base: string;
  output: () => string;
  stop(): Promise<number | null>;
}

/** `slotsync` (serve) as a process on a free port, once it answers /health/live. */
export async function startProcess(
  env: Record<string, string>,
  runAs: RunAs | null = null,
): Promise<Running> {
  const port = await freePort();
  const child = spawnCli(
    [],
    { SLOTSYNC_PORT: String(port), SLOTSYNC_LOG_LEVEL: 'info', ...env },
    runAs,
  );
  let output = '';
  child.stdout?.on('data', (d) => {
    output += d;
  });
  child.stderr?.on('data', (d) => {
    output += d;
  });
  const base = `http://127.0.0.1:${port}`;
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  await waitFor(`slotsync listening on ${port}`, async () => {
    if (child.exitCode !== null) throw new Error(`slotsync exited: ${output}`);
    return fetch(`${base}/health/live`).then(
      (r) => r.ok,
      () => false,
    );
  });
  return {
    child,
    base,
    output: () => output,
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
