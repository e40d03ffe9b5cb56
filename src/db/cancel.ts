/**
 * PostgreSQL's CancelRequest (protocol 3.0): a new socket to the server carrying the
 * session's process ID and secret key; the server cancels that session's statement, as
 * psql's ^C or libpq's PQcancel do. No authentication is involved, so it works whatever
 * pg_hba.conf requires.
 */
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type pg from 'pg';

const CANCEL_REQUEST_CODE = 80877102;
/** A cancel that cannot be delivered quickly is given up: the statement timeout remains. */
const CANCEL_TIMEOUT_MS = 2_000;

/** The fields node-postgres keeps from the server's BackendKeyData message. */
interface SessionKey {
  processID: number | null;
  secretKey?: number | null;
  host: string;
  port: number;
}

export function cancelStatement(client: pg.Client): Promise<void> {
  const session = client as unknown as SessionKey;
  if (!session.processID || session.secretKey == null) return Promise.resolve();
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  packet.writeInt32BE(session.processID, 8);
  packet.writeInt32BE(session.secretKey | 0, 12);
  return new Promise((resolve) => {
    const socket: Socket = session.host.startsWith('/')
      ? connect(join(session.host, `.s.PGSQL.${session.port}`))
      : connect(session.port, session.host);
    socket.setTimeout(CANCEL_TIMEOUT_MS, () => socket.destroy());
    socket.on('connect', () => socket.end(packet));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve());
  });
}
