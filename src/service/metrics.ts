/**
 * Prometheus metrics, on one Registry per app instance (never the global one: building the
 * app twice in one process must not fail with "already registered").
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { CycleResult } from '../engine/cycle.js';
import type { Safety } from '../sync/safety.js';
import type { SlotView } from '../sync/view.js';

const STATES = ['temporary', 'sync_ready', 'invalidated', 'conflict', 'absent'] as const;

/**
 * The event-loop delay is sampled by a timer of this period. Every wakeup costs CPU: at
 * prom-client's default of 10 ms, ~0.2 s a minute, a fifth of what a busy slotsync spends
 * (bench --load). A delay shorter than the period is still measured when a timer is due.
 */
const EVENT_LOOP_RESOLUTION_MS = 100;

export class Metrics {
  readonly registry = new Registry();
  readonly cycles = new Counter({
    name: 'slotsync_cycles_total',
    help: 'Sync cycles by trigger (worker, api, shutdown) and outcome (success, error, concurrent)',
    labelNames: ['trigger', 'outcome'],
    registers: [this.registry],
  });
  readonly cycleDuration = new Histogram({
    name: 'slotsync_cycle_duration_seconds',
    help: 'Duration of sync cycles',
    labelNames: ['trigger'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly lockWait = new Histogram({
    name: 'slotsync_lock_wait_seconds',
    help: 'Time spent waiting for the in-process sync lock',
    buckets: [0.0001, 0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });
  readonly inFlight = new Gauge({
    name: 'slotsync_cycles_in_flight',
    help: 'Sync cycles running now (never more than 1)',
    registers: [this.registry],
  });
  readonly slots = new Gauge({
    name: 'slotsync_slots',
    help: 'Failover slots of the primary by the state of their copy',
    labelNames: ['state'],
    registers: [this.registry],
  });
  readonly lagBytes = new Gauge({
    name: 'slotsync_slot_lag_bytes',
    help: "Bytes between the primary slot's confirmed_flush_lsn and its copy's",
    labelNames: ['slot'],
    registers: [this.registry],
  });
  readonly syncReady = new Gauge({
    name: 'slotsync_slot_sync_ready',
    help: '1 when the copy is safe to promote onto (what sync_ready in GET /slots says)',
    labelNames: ['slot'],
    registers: [this.registry],
    collect: () => {
      const all = this.safety({ all: true });
      this.syncReady.reset();
      for (const slot of all?.slots ?? [])
        this.syncReady.set({ slot: slot.name }, slot.safe ? 1 : 0);
    },
  });
  readonly actions = new Counter({
    name: 'slotsync_actions_total',
    help: 'What cycles did to slots (created, advanced, ready, dropped, skipped, conflict, failed, unchanged)',
    labelNames: ['action'],
    registers: [this.registry],
  });
  readonly naptime = new Gauge({
    name: 'slotsync_naptime_seconds',
    help: "The worker's current naptime",
    registers: [this.registry],
  });
  readonly lastSuccess = new Gauge({
    name: 'slotsync_last_success_timestamp_seconds',
    help: 'Unix time of the last successful cycle',
    registers: [this.registry],
  });
  readonly workerRestarts = new Counter({
    name: 'slotsync_worker_restarts_total',
    help: 'Worker restarts after a failed cycle or a configuration change',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly promotionDropped = new Counter({
    name: 'slotsync_promotion_staging_dropped_total',
    help: 'Staging slots (copies not sync-ready) dropped because the standby was found promoted',
    registers: [this.registry],
  });
  readonly rearmed = new Counter({
    name: 'slotsync_rearmed_total',
    help: 'Copies whose failover slotsync turned on after the standby was promoted',
    registers: [this.registry],
  });
  readonly ready = new Gauge({
    name: 'slotsync_ready',
    help: '1 when every required failover slot (SLOTSYNC_REQUIRED_SLOTS, else all) is safe to promote onto: what GET /ready answers',
    registers: [this.registry],
    collect: () => {
      this.ready.set(this.safety({ all: false })?.ready === true ? 1 : 0);
    },
  });
  readonly fenced = new Counter({
    name: 'slotsync_fenced_total',
    help: 'Copies dropped because someone else moved them, or the standby invalidated them',
    registers: [this.registry],
  });
  readonly standbySlotsChanges = new Counter({
    name: 'slotsync_standby_slots_changes_total',
    help: "Changes of the primary's synchronized_standby_slots made by the quorum (SLOTSYNC_STANDBY_SLOTS_QUORUM)",
    registers: [this.registry],
  });
  readonly quorumManager = new Gauge({
    name: 'slotsync_quorum_manager',
    help: "1 while this process manages the primary's synchronized_standby_slots",
    registers: [this.registry],
  });
  readonly builtinStuck = new Gauge({
    name: 'slotsync_builtin_stuck',
    help: "SLOTSYNC_ENGINE=builtin: 1 while PostgreSQL's slot sync is stuck on this standby (GET /health says why: a setting, a same-name slot, a failed pg_sync_replication_slots()), else 0",
    registers: [this.registry],
  });
  readonly catchingUp = new Gauge({
    name: 'slotsync_catching_up_slots',
    help: 'Copies whose last advance stopped short of its target, to stay within the statement timeout',
    registers: [this.registry],
  });
  /**
   * Promotion readiness over the latest facts (no query): for the configured required slots,
   * or every slot (`all`). Set by the service.
   */
  safety: (options: { all: boolean }) => Safety | null = () => null;
  readonly workerRunning = new Gauge({
    name: 'slotsync_worker_running',
    help: '1 while the background worker runs',
    registers: [this.registry],
  });

  readonly #loopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_RESOLUTION_MS });
  /** How late the sampling timer fired, since the last scrape (its period taken off). */
  readonly eventLoopDelayP99 = new Gauge({
    name: 'slotsync_eventloop_delay_p99_seconds',
    help: 'Event-loop delay since the last scrape, 99th percentile: how late a due timer ran',
    registers: [this.registry],
    collect: () => {
      const late = (ns: number) => Math.max(0, ns / 1e6 - EVENT_LOOP_RESOLUTION_MS) / 1000;
      this.eventLoopDelayP99.set(late(this.#loopDelay.percentile(99)));
      this.eventLoopDelayMax.set(late(this.#loopDelay.max));
      this.#loopDelay.reset();
    },
  });
  /** Set with the p99 (registered after it: read in the same scrape). */
  readonly eventLoopDelayMax = new Gauge({
    name: 'slotsync_eventloop_delay_max_seconds',
    help: 'Event-loop delay since the last scrape, the longest',
    registers: [this.registry],
  });

  constructor() {
    this.#loopDelay.enable();
    // prom-client's own event-loop figures (slotsync_nodejs_eventloop_lag_*) are sampled at
    // the same period, which they include: slotsync_eventloop_delay_* take it off.
    collectDefaultMetrics({
      register: this.registry,
      prefix: 'slotsync_',
      eventLoopMonitoringPrecision: EVENT_LOOP_RESOLUTION_MS,
    });
    for (const state of STATES) this.slots.set({ state }, 0);
  }

  recordCycle(trigger: string, outcome: string, result: CycleResult | undefined): void {
    this.cycles.inc({ trigger, outcome });
    if (!result) return;
    this.lastSuccess.set(Date.now() / 1000);
    for (const slot of result.report.slots) this.actions.inc({ action: slot.action });
    this.catchingUp.set(result.catchingUp);
    if (result.builtin) this.builtinStuck.set(result.builtin.stuck === null ? 0 : 1);
    this.recordViews(result.views);
  }

  recordViews(views: readonly SlotView[]): void {
    const counts = new Map<string, number>(STATES.map((s) => [s, 0]));
    this.lagBytes.reset();
    for (const view of views) {
      counts.set(view.state, (counts.get(view.state) ?? 0) + 1);
      if (view.lag_bytes !== null) this.lagBytes.set({ slot: view.name }, view.lag_bytes);
    }
    for (const [state, count] of counts) this.slots.set({ state }, count);
  }
}
