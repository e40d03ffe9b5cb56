/**
 * The quorum for synchronized_standby_slots, as every slotsync takes part in it
 * (SLOTSYNC_STANDBY_SLOTS_QUORUM; sync/quorum.ts decides, db/quorum.ts speaks to the
 * primary). One session to the primary, every QUORUM_TICK_MS:
 * - beside a named standby: hold the PRESENT lock; when the manager announces this
 *   standby's removal (PENDING), first record — in memory and durably in the registry —
 *   that the primary no longer waits for this standby, then acknowledge (ACK). So this
 *   standby never answers "safe to promote" from a read of the set older than its removal.
 * - everywhere: try to be the manager (one at a time, by the MANAGER lock). The manager
 *   reads the named standbys' physical slots, decides the set, announces removals and
 *   applies the setting (ALTER SYSTEM + pg_reload_conf()) only when it must change.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { connectionConfig } from '../db/pools.js';
import {
  type QuorumRead,
  readQuorum,
  removalPending,
  setStandbySlots,
  tryLock,
  unlock,
} from '../db/quorum.js';
import { messageOf } from '../errors.js';
import { redactSecrets } from '../redact.js';
import {
  decideQuorum,
  nextHistory,
  type Quorum,
  type SlotHistory,
  type StandbySlotState,
} from '../sync/quorum.js';
import { delay } from '../util.js';
import type { SyncContext } from './context.js';
import type { Metrics } from './metrics.js';

const QUORUM_TICK_MS = 250;
/** Hysteresis: a member is replaced after it has not streamed this long. */
const REMOVE_AFTER_MS = 1_000;
/** A standby joins after it has streamed this long (and has what the consumers confirmed). */
const ADD_AFTER_MS = 1_000;

export interface QuorumStatus {
  /** This process manages the setting now. */
  manager: boolean;
  /** The setting as last read or applied. */
  current: string[];
  /** Removals announced and waiting for an acknowledgement. */
  pending: string[];
  changes: number;
  lastChange: { at: number; from: string[]; to: string[]; reasons: string[] } | null;
  /** Why the manager cannot apply the setting (privileges), else null. */
  problem: string | null;
  /** This node's standby slot, when the quorum names it, and whether its removal is acknowledged. */
  participant: { slot: string; acknowledged: boolean } | null;
  error: string | null;
}

export class QuorumAgent {
  #client: pg.Client | undefined;
  #url: string | undefined;
  #locks = new Set<string>();
  #history = new Map<string, SlotHistory>();
  #abort: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #status: QuorumStatus = {
    manager: false,
    current: [],
    pending: [],
    changes: 0,
    lastChange: null,
    problem: null,
    participant: null,
    error: null,
  };
  /** Test hook: awaited before each round (a test holds a standby's acknowledgement). */
  pauseAt: (() => Promise<void>) | undefined;

  constructor(
    private readonly context: SyncContext,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly config: () => Config,
  ) {}

  get status(): Readonly<QuorumStatus> {
    return this.#status;
  }

  start(): void {
    if (this.#loop !== undefined || this.config().standbySlotsQuorum === null) return;
    const abort = new AbortController();
    this.#abort = abort;
    this.#loop = (async () => {
      while (!abort.signal.aborted) {
        await this.pauseAt?.();
        if (abort.signal.aborted) break;
        try {
          await this.#round();
          this.#status = { ...this.#status, error: null };
        } catch (error) {
          const secrets = [this.config().apiToken ?? ''];
          this.#status = { ...this.#status, error: redactSecrets(messageOf(error), secrets) };
          this.logger.debug({ err: this.#status.error }, 'quorum round failed');
          await this.#endSession();
        }
        await delay(QUORUM_TICK_MS, abort.signal);
      }
      await this.#endSession();
    })();
  }

  async stop(): Promise<void> {
    this.#abort?.abort();
    await this.#loop;
    this.#loop = undefined;
  }

  async #round(): Promise<void> {
    const config = this.config();
    const quorum = config.standbySlotsQuorum;
    if (quorum === null) return;
    const { deps } = this.context.engine;
    const standby = this.context.readiness.standby;
    // On the primary's node the primary is the local server; elsewhere the upstream followed.
    const localIsPrimary = standby !== null && !standby.inRecovery;
    const url = localIsPrimary ? config.standbyUrl : deps.primaryUrl;
    const client = await this.#session(url, config);
    const mySlot = localIsPrimary ? null : deps.cache.primarySlotName;
    if (mySlot !== null && quorum.slots.includes(mySlot)) await this.#takePart(client, mySlot);
    else this.#status = { ...this.#status, participant: null };
    if (!this.#locks.has('manager:')) {
      if (await tryLock(client, 'manager', '')) {
        this.#locks.add('manager:');
        this.logger.info('managing synchronized_standby_slots on the primary (quorum)');
      }
    }
    const manager = this.#locks.has('manager:');
    this.metrics.quorumManager.set(manager ? 1 : 0);
    this.#status = { ...this.#status, manager };
    if (manager) await this.#manage(client, quorum, config.quorumSilentMs);
  }

  /** Beside a named standby: be present; acknowledge an announced removal once recorded. */
  async #takePart(client: pg.Client, slot: string): Promise<void> {
    await this.#hold(client, 'present', slot);
    const pending = await removalPending(client, slot);
    const acked = this.#locks.has(`ack:${slot}`);
    if (pending && !acked) {
      await this.#recordUnprotected();
      await this.#hold(client, 'ack', slot);
      this.logger.warn(
        { slot },
        'the quorum manager will remove this standby from synchronized_standby_slots: it is no longer safe to promote onto; acknowledged',
      );
    } else if (!pending && (acked || this.context.engine.deps.cache.quorumPending)) {
      // Withdrawn (applied, or this standby streams again): the next read speaks again. Also
      // when the session that acknowledged was lost (its ACK lock with it): the announcement
      // is what the mask rests on, not this session's lock.
      const { cache } = this.context.engine.deps;
      cache.quorumPending = false;
      cache.forget();
      if (acked) {
        await unlock(client, 'ack', slot);
        this.#locks.delete(`ack:${slot}`);
      }
    }
    this.#status = { ...this.#status, participant: { slot, acknowledged: pending } };
  }

  /**
   * In memory and in the registry, under the sync lock (no cycle writes meanwhile): the
   * primary no longer waits for this standby. Before the acknowledgement, always.
   */
  async #recordUnprotected(): Promise<void> {
    await this.context.withSyncLock({ holder: 'quorum', waitMs: 60_000 }, async () => {
      const { cache, registry } = this.context.engine.deps;
      cache.quorumPending = true;
      cache.keepPrimaryRead(cache.primaryRead);
      // Computed from the record as it is when the write runs (a read may be queued before).
      await registry.writePrimary((recorded) =>
        recorded?.facts.waitsForStandby
          ? { ...recorded, facts: { ...recorded.facts, waitsForStandby: false }, since: Date.now() }
          : undefined,
      );
    });
  }

  async #manage(client: pg.Client, quorum: Quorum, silentMs: number): Promise<void> {
    const read: QuorumRead = await readQuorum(client, quorum.slots);
    const now = Date.now();
    const states = new Map<string, StandbySlotState>(read.states.map((s) => [s.slot, s]));
    this.#history = nextHistory(this.#history, states, now);
    const decision = decideQuorum({
      quorum,
      current: read.current,
      states,
      history: this.#history,
      consumersAt: read.consumersAt,
      now,
      timing: { removeAfterMs: REMOVE_AFTER_MS, addAfterMs: ADD_AFTER_MS, silentMs },
    });
    for (const slot of decision.pending) await this.#hold(client, 'pending', slot);
    const problem =
      !read.mayAlter || !read.mayReload
        ? `the primary's role may not ${!read.mayAlter ? 'ALTER SYSTEM SET synchronized_standby_slots (GRANT ALTER SYSTEM ON PARAMETER synchronized_standby_slots)' : ''}${!read.mayAlter && !read.mayReload ? ' nor ' : ''}${!read.mayReload ? 'call pg_reload_conf() (GRANT EXECUTE ON FUNCTION pg_reload_conf())' : ''}`
        : null;
    let current = read.current;
    if (!sameSet(decision.apply, read.current) && problem === null) {
      await setStandbySlots(client, decision.apply);
      this.metrics.standbySlotsChanges.inc();
      const change = { at: now, from: read.current, to: decision.apply, reasons: decision.reasons };
      this.logger.warn(change, 'synchronized_standby_slots changed by the quorum');
      this.#status = { ...this.#status, changes: this.#status.changes + 1, lastChange: change };
      current = decision.apply;
    }
    // Announcements no longer needed (applied, or the standby streams again) are withdrawn.
    for (const key of [...this.#locks].filter((k) => k.startsWith('pending:'))) {
      const slot = key.slice('pending:'.length);
      if (!decision.pending.includes(slot)) {
        await unlock(client, 'pending', slot);
        this.#locks.delete(key);
      }
    }
    this.#status = { ...this.#status, current, pending: decision.pending, problem };
  }

  async #hold(client: pg.Client, kind: 'present' | 'ack' | 'pending', slot: string): Promise<void> {
    const key = `${kind}:${slot}`;
    if (this.#locks.has(key)) return;
    if (await tryLock(client, kind, slot)) this.#locks.add(key);
  }

  async #session(url: string, config: Config): Promise<pg.Client> {
    if (this.#client !== undefined && this.#url === url) return this.#client;
    await this.#endSession();
    const client = new pg.Client(
      connectionConfig(
        {
          url,
          role: 'primary',
          max: 1,
          statementTimeoutMs: config.statementTimeoutMs,
          connectTimeoutMs: config.connectTimeoutMs,
          logger: this.logger,
        },
        'slotsync-quorum',
      ),
    );
    client.on('error', () => undefined);
    await client.connect();
    this.#client = client;
    this.#url = url;
    return client;
  }

  /** The session ends, and every lock it held with it (the server releases them). */
  async #endSession(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    this.#url = undefined;
    this.#locks.clear();
    this.metrics.quorumManager.set(0);
    this.#status = { ...this.#status, manager: false };
    await client?.end().catch(() => undefined);
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((s) => b.includes(s));
}
