/** What Linux's /proc says of a server's processes (tests and benchmarks). */
import { readdirSync, readFileSync } from 'node:fs';

export const CLOCK_TICKS = 100; // USER_HZ: /proc's CPU times are in 1/100 s on Linux

/** CPU seconds of a process and its children, live ones and those it has waited for. */
export function cpuSecondsOfTree(pid: number, only?: 'system'): number {
  const fields = (p: number | string) => {
    try {
      return readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    } catch {
      return []; // exited meanwhile: its time is in the parent's cutime now
    }
  };
  // utime, stime, cutime, cstime (proc(5)); `system`: the kernel's share only.
  const user = only === 'system' ? 0 : 1;
  const own = (f: string[]) => user * Number(f[11] ?? 0) + Number(f[12] ?? 0);
  const waited = (f: string[]) => user * Number(f[13] ?? 0) + Number(f[14] ?? 0);
  const root = fields(pid);
  let ticks = own(root) + waited(root);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === pid) continue;
    const f = fields(entry);
    if (Number(f[1]) === pid) ticks += own(f) + waited(f);
  }
  return ticks / CLOCK_TICKS;
}
