/**
 * PostgreSQL errors classified by SQLSTATE, never by their English text (a server with
 * another lc_messages words them differently). Names as in PostgreSQL's errcodes.txt.
 */
export const SQLSTATE = {
  undefinedObject: '42704',
  duplicateObject: '42710',
  insufficientPrivilege: '42501',
  objectInUse: '55006',
  queryCanceled: '57014',
  adminShutdown: '57P01',
  crashShutdown: '57P02',
  cannotConnectNow: '57P03',
  invalidAuthorizationSpecification: '28000',
  invalidPassword: '28P01',
  invalidCatalogName: '3D000',
} as const;

/** Errors that mean the server could not be reached or let us in (class 08 and the above). */
const CONNECTION_STATES: ReadonlySet<string> = new Set([
  SQLSTATE.adminShutdown,
  SQLSTATE.crashShutdown,
  SQLSTATE.cannotConnectNow,
  SQLSTATE.invalidAuthorizationSpecification,
  SQLSTATE.invalidPassword,
  SQLSTATE.invalidCatalogName,
]);

export function isConnectionState(state: string | undefined): boolean {
  return state !== undefined && (state.startsWith('08') || CONNECTION_STATES.has(state));
}

export type SqlState = (typeof SQLSTATE)[keyof typeof SQLSTATE];

/** The SQLSTATE of a PostgreSQL error (node-postgres puts it in `code`), else undefined. */
export function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

export function hasSqlState(error: unknown, state: SqlState): boolean {
  return sqlStateOf(error) === state;
}
