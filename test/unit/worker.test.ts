import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { SlotSyncError } from '../../src/errors.js';
import type { SyncContext } from '../../src/service/context.js';
import { Metrics } from '../../src/service/metrics.js';
import { Worker } from '../../src/service/worker.js';
import { waitFor } from '../helpers/harness.js';

const OPTIONS = { naptimeMinMs: 10, naptimeMaxMs: 20, restartIntervalMs: 10, changePollMs: 0 };

/** A worker whose every cycle fails with `error`; the context touches no database. */
function failingWorker(error: Error, promotionDropped: string[] = []) {
  let cycles = 0;
  const context = {
    stopSignaled: false,
    snapshot: { promotion: { dropped: promotionDropped, failed: [] } },
    sync: async () => {
      cycles++;
      throw error;
    },
  } as unknown as SyncContext;
  const metrics = new Metrics();
  const worker = new Worker(context, metrics, pino({ level: 'silent' }), {
    ...OPTIONS,
    enabled: true,
  });
  return { worker, metrics, cycles: () => cycles };
}

describe('worker state (ReplSlotSyncWorkerMain)', () => {
  it('starts stopped, or disabled when configured off', () => {
    const context = { stopSignaled: false } as unknown as SyncContext;
    const make = (enabled: boolean) =>
      new Worker(context, new Metrics(), pino({ level: 'silent' }), { ...OPTIONS, enabled });
    assert.equal(make(true).state, 'stopped');
    assert.equal(make(false).state, 'disabled');
  });

  it('stops for good when the standby is promoted, says what it dropped, and keeps saying so', async () => {
    const { worker, cycles } = failingWorker(
      new SlotSyncError(
        'SLOTSYNC_STANDBY_NOT_IN_RECOVERY',
        'replication slots can only be synchronized to a standby server',
      ),
      ['slotsync_stage_abc'],
    );
    worker.start();
    await waitFor('the worker to stop', async () => !worker.running);
    assert.equal(worker.state, 'stopped_promoted');
    assert.match(worker.detail ?? '', /promoted.*slotsync_stage_abc/);
    assert.equal(cycles(), 1, 'no cycle after the promotion was seen');
    await worker.stop();
    assert.equal(worker.state, 'stopped_promoted', 'a plain stop does not hide the promotion');
    await worker.stop('stopped_shutdown');
    assert.equal(worker.state, 'stopped_shutdown', 'POST /shutdown takes over');
  });

  it('restarts after a failed cycle, counting it, and says why', async () => {
    const { worker, metrics, cycles } = failingWorker(new Error('boom'));
    worker.start();
    await waitFor('two failed cycles', async () => cycles() >= 2);
    assert.equal(worker.state, 'restarting');
    assert.equal(worker.detail, 'boom');
    await worker.stop();
    assert.equal(worker.state, 'stopped');
    const restarts = await metrics.registry.getSingleMetricAsString(
      'slotsync_worker_restarts_total',
    );
    assert.match(restarts, /reason="error"\} [2-9]/);
  });
});
