/**
 * The chaos schedule: a seeded draw of the next fault from what the cluster looks like now,
 * so that a seed replays the same schedule. Pure.
 */

/** mulberry32: a small, fast, seedable generator (same seed, same sequence). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export type FaultKind =
  | 'restart_slotsync'
  | 'sighup'
  | 'cut_stream'
  | 'restore_stream'
  | 'cut_sql'
  | 'restore_sql'
  | 'stop_standby'
  | 'start_standby'
  | 'edit_setting'
  | 'restore_setting'
  | 'advance_physical'
  | 'failover'
  | 'rejoin';

export interface Step {
  kind: FaultKind;
  /** The node it acts on (its server name), when it acts on one. */
  node: string | null;
}

/** The cluster as the schedule sees it. */
export interface World {
  primary: string;
  /** Standbys of the primary that run (streaming or not). */
  standbys: readonly string[];
  /** Nodes out of the cluster (an old primary, a standby that cannot follow): to rejoin. */
  out: readonly string[];
  cutStreams: ReadonlySet<string>;
  cutSql: ReadonlySet<string>;
  stopped: ReadonlySet<string>;
  settingEdited: boolean;
}

const WEIGHTS: Record<FaultKind, number> = {
  restart_slotsync: 3,
  sighup: 2,
  cut_stream: 2,
  restore_stream: 3,
  cut_sql: 2,
  restore_sql: 3,
  stop_standby: 1,
  start_standby: 3,
  edit_setting: 2,
  restore_setting: 2,
  advance_physical: 1,
  failover: 2,
  rejoin: 4,
};

/** The faults that can happen in `world`, each with the nodes it may act on. */
export function possibleSteps(world: World): Step[] {
  const every = [world.primary, ...world.standbys];
  const running = world.standbys.filter((s) => !world.stopped.has(s));
  const steps: Step[] = [];
  const add = (kind: FaultKind, nodes: readonly (string | null)[]) => {
    for (const node of nodes) steps.push({ kind, node });
  };
  add('restart_slotsync', every);
  add('sighup', every);
  add(
    'cut_stream',
    running.filter((s) => !world.cutStreams.has(s)),
  );
  add(
    'restore_stream',
    [...world.cutStreams].filter((s) => running.includes(s)),
  );
  add(
    'cut_sql',
    every.filter((s) => !world.cutSql.has(s)),
  );
  add('restore_sql', [...world.cutSql]);
  // Keep at least one standby up: a cluster with none has nothing to fail over to.
  if (running.length > 1) add('stop_standby', running);
  add('start_standby', [...world.stopped]);
  add('edit_setting', [null]);
  if (world.settingEdited) add('restore_setting', [null]);
  add(
    'advance_physical',
    running.filter((s) => world.cutStreams.has(s)),
  );
  if (running.length > 0) add('failover', [null]);
  add('rejoin', world.out);
  return steps;
}

/** Draws the next step: a kind by weight among the possible ones, then a node. */
export function nextStep(rand: () => number, world: World): Step {
  const steps = possibleSteps(world);
  const kinds = [...new Set(steps.map((s) => s.kind))];
  const total = kinds.reduce((sum, k) => sum + WEIGHTS[k], 0);
  let pick = rand() * total;
  let kind = kinds[kinds.length - 1] as FaultKind;
  for (const k of kinds) {
    pick -= WEIGHTS[k];
    if (pick < 0) {
      kind = k;
      break;
    }
  }
  const nodes = steps.filter((s) => s.kind === kind);
  return nodes[Math.floor(rand() * nodes.length)] as Step;
}
