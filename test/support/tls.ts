/**
 * Certificates for the TLS tests, made with openssl: a certificate authority and a server
 * certificate it signs for 127.0.0.1 and localhost, and a second, unrelated authority.
 */
import { execFile } from 'node:child_process';
import { chmod, chown, copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { PgServer } from './server.js';

const execFileAsync = promisify(execFile);

export interface Certificates {
  /** The authority that signed `serverCert`. */
  caFile: string;
  /** An authority that signed nothing here: verifying against it must fail. */
  otherCaFile: string;
  serverCert: string;
  serverKey: string;
}

const openssl = (args: string[]) => execFileAsync('openssl', args);
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function authority(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  await openssl([
    'req',
    '-x509',
    ...EC_KEY,
    '-keyout',
    key,
    '-out',
    cert,
    '-days',
    '2',
    '-subj',
    `/CN=slotsync test ${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert, key };
}

/** Writes a fresh set into `dir`. */
export async function makeCertificates(dir: string): Promise<Certificates> {
  const ca = await authority(dir, 'ca');
  const other = await authority(dir, 'other-ca');
  const serverKey = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const serverCert = join(dir, 'server.crt');
  const ext = join(dir, 'server.ext');
  await openssl(['req', ...EC_KEY, '-keyout', serverKey, '-out', csr, '-subj', '/CN=127.0.0.1']);
  await writeFile(
    ext,
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n',
  );
  await openssl([
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    ca.cert,
    '-CAkey',
    ca.key,
    '-CAcreateserial',
    '-out',
    serverCert,
    '-days',
    '2',
    '-extfile',
    ext,
  ]);
  return { caFile: ca.cert, otherCaFile: other.cert, serverCert, serverKey };
}

/**
 * Turns TLS on for a running server with this certificate (ssl is a reloadable setting):
 * the files go into its data folder, owned by the server's user, the key 0600.
 */
export async function enableSsl(server: PgServer, certificates: Certificates): Promise<void> {
  const cert = join(server.dataDir, 'server.crt');
  const key = join(server.dataDir, 'server.key');
  await copyFile(certificates.serverCert, cert);
  await copyFile(certificates.serverKey, key);
  await chmod(key, 0o600);
  if (server.runAs) {
    for (const file of [cert, key]) await chown(file, server.runAs.uid, server.runAs.gid);
  }
  await server.sql(`ALTER SYSTEM SET ssl_cert_file = 'server.crt'`);
  await server.sql(`ALTER SYSTEM SET ssl_key_file = 'server.key'`);
  await server.sql('ALTER SYSTEM SET ssl = on');
  await server.sql('SELECT pg_reload_conf()');
}
