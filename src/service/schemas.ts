/** TypeBox schemas for every route's input and every status it answers. */
import { type TSchema, Type } from '@sinclair/typebox';

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const Problem = Type.Object(
  {
    type: Type.String(),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.String({
      description: "What went wrong, in PostgreSQL's wording where slotsync.c has one",
    }),
    code: Type.String({ description: 'Stable error code, e.g. SLOTSYNC_PROMOTION' }),
    hint: Type.Optional(Type.String()),
  },
  { $id: 'Problem', description: 'RFC 9457 problem details (application/problem+json)' },
);

export const ReportState = Type.Union(
  ['temporary', 'sync_ready', 'invalidated', 'conflict', 'absent'].map((s) => Type.Literal(s)),
);

export const SlotReport = Type.Object({
  name: Type.String(),
  action: Type.Union(
    [
      'created',
      'advanced',
      'ready',
      'dropped',
      'skipped',
      'conflict',
      'unchanged',
      'failed',
      'replaced',
    ].map((s) => Type.Literal(s)),
  ),
  state: ReportState,
  reason: Nullable(Type.String()),
});

const Fact = Type.Object({
  holds: Type.Boolean(),
  age_ms: Nullable(Type.Integer({ description: 'How old the fact is; null when never read' })),
  detail: Type.String(),
});

const SlotVerdict = Type.Object({
  name: Type.String(),
  safe: Type.Boolean({ description: 'Safe to promote onto this standby for this slot' }),
  reason: Nullable(Type.String({ description: 'Why not; null when safe' })),
  facts: Type.Object(
    {
      copy: Fact,
      unmoved: Fact,
      consumers: Fact,
    },
    {
      description:
        'copy: published and sync-ready at the last cycle; unmoved: the copy, read now, is where slotsync left it; consumers: no consumer can be ahead of the WAL this standby holds',
    },
  ),
  lag_bytes: Nullable(
    Type.Integer({ description: "Bytes between the consumer's confirmed position and the copy" }),
  ),
  resume_lsn: Nullable(
    Type.String({ description: 'Where the copy would start a consumer after promotion' }),
  ),
  consumer_confirmed_lsn: Nullable(
    Type.String({ description: "The consumer's confirmed_flush_lsn, as last read" }),
  ),
  consumer_ahead: Type.Boolean({
    description: "The consumer is known to be past this standby's WAL",
  }),
});

export const ReadyResponse = Type.Object({
  ready: Type.Boolean({
    description:
      'Every required slot is safe to promote onto this standby (DESIGN.md, "Safe to promote")',
  }),
  required: Type.Array(Type.String(), { description: 'The slots that had to be safe' }),
  not_ready: Type.Array(Type.Object({ name: Type.String(), reason: Type.String() })),
  age_ms: Nullable(
    Type.Integer({
      description: 'Age of the last successful cycle (null: none since the start or reload)',
    }),
  ),
  reason: Nullable(
    Type.String({
      description:
        'Why no slot can be safe: the node is the primary, no cycle since the reload, the primary never read, the standby unreadable',
    }),
  ),
  role: Type.Optional(
    Type.Union([Type.Literal('standby'), Type.Literal('primary'), Type.Literal('unknown')]),
  ),
  receive_lsn: Type.Optional(
    Nullable(Type.String({ description: 'pg_last_wal_receive_lsn() on this node' })),
  ),
  replay_lsn: Type.Optional(
    Nullable(Type.String({ description: 'pg_last_wal_replay_lsn() on this node' })),
  ),
  timeline: Type.Optional(
    Nullable(Type.Integer({ description: 'The timeline of the WAL this node holds' })),
  ),
  diverged: Type.Optional(
    Nullable(
      Type.String({
        description:
          "Why this node can never follow the primary (its WAL went past where the primary's timeline forked from it): never safe",
      }),
    ),
  ),
  primary: Type.Optional(
    Type.Object({
      reachable: Type.Boolean(),
      age_ms: Nullable(Type.Integer()),
      waits_for_standby: Nullable(
        Type.Boolean({ description: "synchronized_standby_slots names this standby's slot" }),
      ),
      standby_slot: Type.Optional(
        Nullable(Type.String({ description: "This standby's physical slot on the primary" })),
      ),
      standby_slots: Type.Optional(
        Nullable(
          Type.Array(Type.String(), {
            description: 'synchronized_standby_slots at the read the facts rest on',
          }),
        ),
      ),
      read_at: Type.Optional(
        Nullable(
          Type.String({
            format: 'date-time',
            description: 'When the primary confirmed these facts (the read began)',
          }),
        ),
      ),
      detail: Type.String(),
    }),
  ),
  slots: Type.Optional(Type.Array(SlotVerdict)),
});

export const CycleReport = Type.Object(
  {
    ok: Type.Boolean(),
    startedAt: Type.String({ format: 'date-time' }),
    durationMs: Type.Number(),
    updated: Type.Boolean({
      description: 'Whether any slot was created, advanced, marked ready or dropped',
    }),
    slots: Type.Array(SlotReport),
    readiness: Type.Optional(
      Type.Composite([ReadyResponse], {
        description: 'With waitReady: whether every required slot became sync-ready',
      }),
    ),
  },
  { $id: 'CycleReport' },
);

const Positions = Type.Object({
  confirmed_flush_lsn: Nullable(Type.String()),
  restart_lsn: Nullable(Type.String()),
  catalog_xmin: Nullable(Type.String()),
});

export const SlotView = Type.Object(
  {
    name: Type.String(),
    plugin: Type.String(),
    database: Type.String(),
    two_phase: Type.Boolean(),
    state: ReportState,
    sync_ready: Type.Boolean({ description: 'The copy can be used after promotion' }),
    staging_name: Nullable(
      Type.String({
        description:
          "Where the copy lives while it is not sync-ready (a reserved slotsync_stage_ name no subscriber asks for); null once published under the remote slot's name",
      }),
    ),
    local: Nullable(Positions),
    remote: Nullable(
      Type.Composite([Positions, Type.Object({ invalidation_reason: Nullable(Type.String()) })]),
    ),
    lag_bytes: Nullable(Type.Integer()),
    reason: Nullable(Type.String()),
    ready_reason: Type.Optional(
      Nullable(Type.String({ description: 'Why sync_ready is false (null when it is true)' })),
    ),
  },
  { $id: 'SlotView' },
);

export const SyncBody = Type.Object(
  {
    nowait: Type.Optional(
      Type.Boolean({ description: 'Answer 409 at once if a cycle is in flight' }),
    ),
    timeoutMs: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 600_000,
        description: 'How long to wait for an in-flight cycle (default SLOTSYNC_SYNC_WAIT_MS)',
      }),
    ),
    waitReady: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 600_000,
        description:
          'Keep cycling until every required slot is sync-ready or this many ms passed; the answer says which are not',
      }),
    ),
  },
  { additionalProperties: false },
);

export const SyncQuery = Type.Object(
  { nowait: Type.Optional(Type.Boolean()) },
  { additionalProperties: false },
);

export const ShutdownBody = Type.Object(
  {
    finalSync: Type.Optional(
      Type.Boolean({ description: 'Run one last cycle first (planned switchover, primary alive)' }),
    ),
  },
  { additionalProperties: false },
);

export const ShutdownResponse = Type.Object({
  stopped: Type.Literal(true),
  slots: Type.Array(SlotView),
  dropped: Type.Array(Type.String(), {
    description: 'Copies dropped because they were not sync-ready',
  }),
  fenced: Type.Array(Type.Object({ name: Type.String(), reason: Type.String() }), {
    description:
      'Published copies dropped because they were moved or invalidated on the standby, or their consumer is past its WAL',
  }),
  final_sync: Nullable(CycleReport),
  final_sync_error: Nullable(Type.String()),
  readiness: ReadyResponse,
});

export const ReadyQuery = Type.Object(
  {
    slots: Type.Optional(
      Type.String({
        description: 'Comma-separated slot names (default SLOTSYNC_REQUIRED_SLOTS, else every one)',
      }),
    ),
    max_age_ms: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: 86_400_000,
        description:
          'How old a read of a primary that does not wait for this standby (no synchronized_standby_slots) may be (default 5000); facts that cannot change once the primary is gone carry no age limit',
      }),
    ),
  },
  { additionalProperties: false },
);

export const SlotsResponse = Type.Object({
  slots: Type.Array(SlotView),
  generated_at: Nullable(
    Type.String({ format: 'date-time', description: 'When the last cycle produced this state' }),
  ),
  age_ms: Nullable(Type.Integer({ description: 'Age of that state' })),
  standby_replay_lsn: Nullable(Type.String()),
});

const Check = Type.Object({
  status: Type.Union([Type.Literal('pass'), Type.Literal('warn'), Type.Literal('fail')]),
  detail: Type.String(),
});

export const HealthResponse = Type.Object({
  status: Type.Union([Type.Literal('pass'), Type.Literal('fail')]),
  role: Type.Optional(
    Type.Union([Type.Literal('standby'), Type.Literal('primary'), Type.Literal('unknown')], {
      description: 'What the local node (SLOTSYNC_STANDBY_URL) is now',
    }),
  ),
  checks: Type.Record(Type.String(), Check),
});

export const LiveResponse = Type.Object({ status: Type.Literal('pass') });

/** A response documented as application/problem+json. */
export const problemResponse = (description: string) => ({
  description,
  content: { 'application/problem+json': { schema: Problem } },
});
