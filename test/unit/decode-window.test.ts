import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { pino } from 'pino';
import { DecodeWindow } from '../../src/engine/decode-window.js';
import { waitFor } from '../helpers/harness.js';

/** A primary that answers pg_log_standby_snapshot() with the LSNs given, in order. */
function primary(answers: (string | Error)[]) {
  const calls: string[] = [];
  const pool = {
    query: async (sql: string) => {
      calls.push(sql);
      const answer = answers.shift() ?? '0/0';
      if (answer instanceof Error) throw answer;
      return { rows: [{ lsn: answer }] };
    },
  } as unknown as pg.Pool;
  return { pool, calls };
}

const quiet = pino({ level: 'silent' });

describe('decode window: running-xacts records after advances', () => {
  it('logs nothing while no copy moved', async () => {
    const { pool, calls } = primary([]);
    const w = new DecodeWindow();
    w.cycleStarted();
    w.afterAdvances(pool, [], quiet, undefined);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls.length, 0);
  });

  it('logs one record per cycle that moved copies past the last one, none while it is still ahead', async () => {
    const { pool, calls } = primary(['0/500', '0/900']);
    const w = new DecodeWindow();
    w.cycleStarted();
    w.afterAdvances(pool, [0x100n, 0x200n], quiet, undefined);
    w.afterAdvances(pool, [0x300n], quiet, undefined); // one already waiting
    await waitFor('the first record', async () => calls.length === 1);
    w.cycleStarted();
    w.afterAdvances(pool, [0x400n], quiet, undefined); // 0/500 not passed yet
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls.length, 1);
    w.cycleStarted();
    w.afterAdvances(pool, [0x600n], quiet, undefined);
    await waitFor('the second record', async () => calls.length === 2);
    assert.match(calls[0] ?? '', /pg_log_standby_snapshot/);
  });

  it('a refused record (no EXECUTE) is reported once and not asked again at once', async () => {
    const refused = Object.assign(new Error('permission denied for function'), { code: '42501' });
    const { pool, calls } = primary([refused]);
    const w = new DecodeWindow();
    const reports: string[] = [];
    w.afterAdvances(pool, [0x100n], quiet, (m) => reports.push(m));
    await waitFor('the refusal', async () => reports.length === 1);
    await new Promise((r) => setTimeout(r, 5));
    w.afterAdvances(pool, [0x200n], quiet, (m) => reports.push(m));
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls.length, 1);
  });

  it('times the record before the next cycle, and close() cancels a waiting one', async () => {
    const { pool, calls } = primary(['0/500']);
    const w = new DecodeWindow();
    const now = performance.now();
    w.cycleStarted(now - 400);
    w.cycleStarted(now); // cycles 400 ms apart: the record waits ~300 ms after this one
    w.afterAdvances(pool, [0x100n], quiet, undefined);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(calls.length, 0, 'held until shortly before the next cycle');
    w.close();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(calls.length, 0);
  });
});
