/**
 * PostgreSQL refuses to run as root. When started as root, servers run as an unprivileged
 * system user, created on first use.
 */
import { execFileSync } from 'node:child_process';

export interface RunAs {
  uid: number;
  gid: number;
  name: string;
}

export const SERVER_USER = 'slotsync-pg';

function lookup(name: string): RunAs | null {
  try {
    const uid = Number(
      execFileSync('id', ['-u', name], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim(),
    );
    const gid = Number(
      execFileSync('id', ['-g', name], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim(),
    );
    return { uid, gid, name };
  } catch {
    return null;
  }
}

/** null when this process is not root (servers then run as the current user). */
export function serverUser(): RunAs | null {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
  const existing = lookup(SERVER_USER);
  if (existing) return existing;
  try {
    execFileSync(
      'useradd',
      [
        '--system',
        '--no-create-home',
        '--home-dir',
        '/nonexistent',
        '--shell',
        '/usr/sbin/nologin',
        SERVER_USER,
      ],
      { stdio: 'ignore' },
    );
  } catch {
    // a concurrent process created it, or useradd is missing: fall through
  }
  const created = lookup(SERVER_USER) ?? lookup('nobody');
  if (!created)
    throw new Error(`cannot create the unprivileged user ${SERVER_USER} to run PostgreSQL`);
  return created;
}
