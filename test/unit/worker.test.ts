import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { SlotSyncError } from '../../src/errors.js';
import type { SyncContext } from '../../src/service/context.js';
import { Metrics } from '../../src/service/metrics.js';
import { Worker } from '../../src/service/worker.js';
import { waitFor } from '../helpers/harness.js';

const OPTIONS = { naptimeMinMs: 10, naptimeMaxMs: 20, restartIntervalMs: 10, changePollMs: 0 };

/**
 * A worker whose every cycle fails with `error`; the context touches no database, and its
 * check between cycles says the node is `node.role`.
 */
function failingWorker(
  error: Error,
  promotionDropped: string[] = [],
  node: { role: 'primary' | 'standby' } = { role: 'standby' },
) {
  let cycles = 0;
  const context = {
    stopSignaled: false,
    snapshot: { promotion: { dropped: promotionDropped, failed: [], rearmFailed: [] } },
    sync: async () => {
      cycles++;
      throw error;
    },
    readiness: { check: async () => node.role },
    engine: { deps: { standby: { main: {} } } },
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

  it('on a promoted node: says it is the primary, syncs nothing, and resumes by itself once the node is a standby again', async () => {
    const node: { role: 'primary' | 'standby' } = { role: 'primary' };
    const { worker, cycles } = failingWorker(
      new SlotSyncError(
        'SLOTSYNC_STANDBY_NOT_IN_RECOVERY',
        'replication slots can only be synchronized to a standby server',
      ),
      ['slotsync_stage_abc'],
      node,
    );
    worker.start();
    await waitFor('the worker to see the primary', async () => worker.state === 'primary');
    assert.match(worker.detail ?? '', /this node is the primary/);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(cycles(), 1, 'no cycle while the node is the primary');
    assert.ok(worker.running, 'it keeps watching the node');
    node.role = 'standby'; // an old primary rejoining as a standby
    await waitFor('a cycle again, with no restart', async () => cycles() >= 2);
    await worker.stop();
    assert.equal(worker.state, 'primary', 'a plain stop does not hide the role');
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
