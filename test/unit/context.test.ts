import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { Engine } from '../../src/engine/engine.js';
import type { SlotSyncError } from '../../src/errors.js';
import { type LockHolder, SyncContext } from '../../src/service/context.js';
import { Metrics } from '../../src/service/metrics.js';

/** A context around an engine that is never used: the lock logic touches no database. */
function context(): SyncContext {
  const engine = { deps: {}, close: async () => undefined } as unknown as Engine;
  return new SyncContext(engine, new Metrics(), pino({ level: 'silent' }));
}

/** A promise and the function that resolves it. */
function gate(): [Promise<void>, () => void] {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return [promise, open];
}

const hold = (ctx: SyncContext, holder: LockHolder, fn: () => Promise<unknown> = async () => 1) =>
  ctx.withSyncLock({ holder, waitMs: Number.POSITIVE_INFINITY }, fn);

const code = (expected: string) => (error: SlotSyncError) => {
  assert.equal(error.code, expected);
  return true;
};

describe('sync context: one holder of the sync lock at a time', () => {
  it('serializes holders; nowait while one runs is refused as concurrent', async () => {
    const ctx = context();
    const [held, release] = gate();
    const first = hold(ctx, 'worker', () => held);
    await assert.rejects(
      ctx.withSyncLock({ holder: 'api', waitMs: 0, nowait: true }, async () => 1),
      code('SLOTSYNC_CONCURRENT'),
    );
    const order: string[] = [];
    const second = hold(ctx, 'api', async () => order.push('second'));
    order.push('first');
    release();
    await first;
    await second;
    assert.deepEqual(order, ['first', 'second']);
    assert.equal(ctx.maxInFlight, 1);
  });

  it('a bounded wait ends with a lock timeout naming the wait', async () => {
    const ctx = context();
    const [held, release] = gate();
    const first = hold(ctx, 'worker', () => held);
    await assert.rejects(
      ctx.withSyncLock({ holder: 'api', waitMs: 10 }, async () => 1),
      (error: SlotSyncError) => code('SLOTSYNC_LOCK_TIMEOUT')(error) && /10 ms/.test(error.message),
    );
    release();
    await first;
  });

  it('once promotion started, worker and API cycles are refused; shutdown, reload and close go on', async () => {
    const ctx = context();
    ctx.signalStop();
    for (const holder of ['worker', 'api'] as const) {
      await assert.rejects(hold(ctx, holder), code('SLOTSYNC_PROMOTION'));
    }
    for (const holder of ['shutdown', 'reload', 'close'] as const) {
      assert.equal(await hold(ctx, holder), 1, holder);
    }
  });

  it('a cycle that waited while promotion started is refused when its turn comes', async () => {
    const ctx = context();
    const [held, release] = gate();
    const first = hold(ctx, 'shutdown', () => held);
    let ran = false;
    const waiting = hold(ctx, 'api', async () => {
      ran = true;
    });
    ctx.signalStop();
    release();
    await first;
    await assert.rejects(waiting, code('SLOTSYNC_PROMOTION'));
    assert.equal(ran, false);
  });
});
