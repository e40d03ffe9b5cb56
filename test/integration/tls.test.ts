/**
 * TLS to PostgreSQL (both URLs) and HTTPS for the API, against real PostgreSQL 17 and 18
 * with certificates made by openssl: what each sslmode does through node-postgres, a
 * verified run end to end, refusals that name the variable, and the API over HTTPS with a
 * certificate renewed on SIGHUP.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { copyFile, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { loadConfig } from '../../src/config.js';
import { createPool } from '../../src/db/pools.js';
import type { SlotSyncError } from '../../src/errors.js';
import { readTlsFiles } from '../../src/service/server.js';
import { runCli, startProcess } from '../helpers/cli.js';
import {
  createPrimarySlot,
  dropEverySlot,
  type Harness,
  startHarness,
  waitFor,
} from '../helpers/harness.js';
import { startService, TOKEN } from '../helpers/service.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';
import type { PgServer } from '../support/server.js';
import { type Certificates, enableSsl, makeCertificates } from '../support/tls.js';

/** The server's URL with these query parameters (no password: trust authentication). */
function tlsUrl(server: PgServer, params: Record<string, string>, database = 'postgres'): string {
  const query = new URLSearchParams(params).toString();
  return `${server.url(database)}${query ? `?${query}` : ''}`;
}

/** Whether a session made through slotsync's pool settings is encrypted, or its error. */
async function probe(url: string): Promise<{ ssl: boolean } | { error: string }> {
  const pool = createPool({
    url,
    role: 'standby',
    max: 1,
    statementTimeoutMs: 5_000,
    connectTimeoutMs: 5_000,
    logger: pino({ level: 'silent' }),
  });
  try {
    const { rows } = await pool.query<{ ssl: boolean }>(
      'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()',
    );
    return { ssl: rows[0]?.ssl === true };
  } catch (error) {
    return { error: (error as Error).message };
  } finally {
    await pool.end();
  }
}

/** Runs the Dockerfile's HEALTHCHECK command here; its exit code. */
async function dockerHealthcheck(env: Record<string, string>): Promise<number | null> {
  const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
  const json = /^\s*CMD (\[.*\])$/m.exec(dockerfile.slice(dockerfile.indexOf('HEALTHCHECK')))?.[1];
  assert.ok(json, 'the Dockerfile has a HEALTHCHECK CMD');
  const [command, ...args] = JSON.parse(json) as string[];
  assert.equal(command, 'node');
  const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', ...env } });
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** GET over HTTPS trusting only `ca`: status and body, or the error's message. */
function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, method: 'GET' }, (res) => {
      let body = '';
      res.on('data', (chunk) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

for (const major of MAJORS) {
  describe(`TLS on PostgreSQL ${major}`, () => {
    let h: Harness;
    let dir: string;
    let certs: Certificates;
    let ca: string;
    before(async () => {
      h = await startHarness({ major });
      dir = await tempDir('tls');
      certs = await makeCertificates(dir);
      ca = readFileSync(certs.caFile, 'utf8');
      for (const server of [h.cluster.primary, h.cluster.standby]) {
        await enableSsl(server, certs);
        await waitFor(`${server.name} serves TLS`, async () => {
          const answer = await probe(tlsUrl(server, { sslmode: 'no-verify' }));
          return 'ssl' in answer && answer.ssl;
        });
      }
    });
    after(async () => {
      await h?.close();
      await rm(dir, { recursive: true, force: true });
    });

    it('each sslmode does what the README says through node-postgres', async () => {
      const server = h.cluster.standby;
      const cases: Array<[Record<string, string>, 'plain' | 'tls' | RegExp]> = [
        // No sslmode: node-postgres does not try TLS (libpq's default, prefer, would).
        [{}, 'plain'],
        [{ sslmode: 'disable' }, 'plain'],
        // prefer, require and verify-ca verify like verify-full (node-postgres 8): against
        // Node's authorities when no sslrootcert is given, so a private CA is refused...
        [{ sslmode: 'require' }, /certificate/i],
        [{ sslmode: 'prefer' }, /certificate/i],
        [{ sslmode: 'require', sslrootcert: certs.caFile }, 'tls'],
        [{ sslmode: 'verify-ca', sslrootcert: certs.caFile }, 'tls'],
        // ...and with uselibpqcompat=true they mean what they mean to libpq.
        [{ sslmode: 'require', uselibpqcompat: 'true' }, 'tls'],
        [{ sslmode: 'no-verify' }, 'tls'],
        [{ sslmode: 'verify-full', sslrootcert: certs.caFile }, 'tls'],
        [{ sslmode: 'verify-full', sslrootcert: certs.otherCaFile }, /certificate/i],
      ];
      for (const [params, expected] of cases) {
        const answer = await probe(tlsUrl(server, params));
        const label = JSON.stringify(params);
        if (expected instanceof RegExp) {
          assert.ok('error' in answer, `${label} is refused: ${JSON.stringify(answer)}`);
          assert.match(answer.error, expected, label);
        } else {
          assert.deepEqual(answer, { ssl: expected === 'tls' }, label);
        }
      }
    });

    it('with verify-full on both URLs every session slotsync opens is encrypted, and copies are made in every database', async () => {
      await dropEverySlot(h.cluster);
      await h.cluster.primary.sql('DROP DATABASE IF EXISTS tls_db');
      await h.cluster.primary.sql('CREATE DATABASE tls_db');
      await createPrimarySlot(h.cluster, 'tls_a');
      await createPrimarySlot(h.cluster, 'tls_b', { database: 'tls_db' });
      await h.cluster.waitForReplay();
      const verify = { sslmode: 'verify-full', sslrootcert: certs.caFile };
      const s = await startService(h.cluster, {
        SLOTSYNC_PRIMARY_URL: tlsUrl(h.cluster.primary, verify),
        SLOTSYNC_STANDBY_URL: tlsUrl(h.cluster.standby, verify),
      });
      try {
        const sync = await s.app.inject({ method: 'POST', url: '/sync' });
        assert.equal(sync.statusCode, 200, sync.body);
        const copies = await h.cluster.standby.sql<{ slot_name: string; database: string }>(
          `SELECT slot_name, database FROM pg_replication_slots WHERE synced OR slot_name LIKE 'slotsync%' ORDER BY 1`,
        );
        assert.ok(
          copies.some((c) => c.database === 'tls_db'),
          `a copy (or its staging slot) in tls_db: ${JSON.stringify(copies)}`,
        );
        assert.ok(
          copies.some((c) => c.database === 'postgres'),
          JSON.stringify(copies),
        );
        const health = await s.app.inject({ method: 'GET', url: '/health' });
        assert.equal(health.statusCode, 200, health.body);
        for (const server of [h.cluster.primary, h.cluster.standby]) {
          const sessions = await server.sql<{ application_name: string; ssl: boolean }>(
            `SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.application_name LIKE 'slotsync-%' AND a.pid <> pg_backend_pid()`,
          );
          assert.ok(sessions.length > 0, `slotsync has sessions on the ${server.name}`);
          assert.deepEqual(
            sessions.filter((row) => !row.ssl),
            [],
            `every slotsync session on the ${server.name} is encrypted`,
          );
          const names = new Set(sessions.map((row) => row.application_name));
          if (server === h.cluster.standby) {
            assert.ok(names.has('slotsync-health'), `health probes too: ${[...names]}`);
          }
        }
      } finally {
        await s.close();
        await dropEverySlot(h.cluster);
        await h.cluster.primary.sql('DROP DATABASE IF EXISTS tls_db');
      }
    });

    it('a server certificate the given authority did not sign stops the start, naming the variable; nothing is created', async () => {
      await dropEverySlot(h.cluster);
      await createPrimarySlot(h.cluster, 'tls_refused');
      await h.cluster.waitForReplay();
      const result = await runCli(['sync', '--once'], {
        SLOTSYNC_PRIMARY_URL: tlsUrl(h.cluster.primary, {
          sslmode: 'verify-full',
          sslrootcert: certs.caFile,
        }),
        SLOTSYNC_STANDBY_URL: tlsUrl(h.cluster.standby, {
          sslmode: 'verify-full',
          sslrootcert: certs.otherCaFile,
        }),
        SLOTSYNC_STATE_DIR: join(dir, 'refused-state'),
      });
      assert.notEqual(result.code, 0, result.stdout + result.stderr);
      assert.match(result.stderr + result.stdout, /SLOTSYNC_STANDBY_URL/);
      assert.match(result.stderr + result.stdout, /certificate/i);
      const made = await h.cluster.standby.sql(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical'`,
      );
      assert.deepEqual(made, []);
      await dropEverySlot(h.cluster);
    });

    it('a URL whose sslrootcert cannot be read, or an unknown sslmode, stops the start naming the variable', () => {
      const base = {
        SLOTSYNC_PRIMARY_URL: tlsUrl(h.cluster.primary, {}),
        SLOTSYNC_STANDBY_URL: tlsUrl(h.cluster.standby, {}),
      };
      assert.throws(
        () =>
          loadConfig({
            ...base,
            SLOTSYNC_PRIMARY_URL: tlsUrl(h.cluster.primary, {
              sslmode: 'verify-full',
              sslrootcert: join(dir, 'missing.crt'),
            }),
          }),
        (error: SlotSyncError) =>
          error.code === 'SLOTSYNC_CONFIG' &&
          /^SLOTSYNC_PRIMARY_URL has TLS settings that cannot be used: .*missing\.crt/.test(
            error.message,
          ),
      );
      assert.throws(
        () =>
          loadConfig({
            ...base,
            SLOTSYNC_STANDBY_URL: tlsUrl(h.cluster.standby, { sslmode: 'verify_full' }),
          }),
        /SLOTSYNC_STANDBY_URL has an unknown sslmode "verify_full"/,
      );
    });

    it('the API serves HTTPS from SLOTSYNC_TLS_CERT_FILE/KEY_FILE, plain HTTP is not answered, and SIGHUP takes a renewed certificate', async () => {
      const certFile = join(dir, 'api.crt');
      const keyFile = join(dir, 'api.key');
      await copyFile(certs.serverCert, certFile);
      await copyFile(certs.serverKey, keyFile);
      const running = await startProcess(
        {
          SLOTSYNC_PRIMARY_URL: h.cluster.primary.url('postgres'),
          SLOTSYNC_STANDBY_URL: h.cluster.standby.url('postgres'),
          SLOTSYNC_STATE_DIR: join(dir, 'https-state'),
          SLOTSYNC_WORKER: 'off',
          SLOTSYNC_API_TOKEN: TOKEN,
          SLOTSYNC_TLS_CERT_FILE: certFile,
          SLOTSYNC_TLS_KEY_FILE: keyFile,
        },
        { https: { ca } },
      );
      try {
        assert.match(running.base, /^https:/);
        const live = await httpsGet(`${running.base}/health/live`, ca);
        assert.equal(live.status, 200, live.body);
        await assert.rejects(fetch(`${running.base.replace('https:', 'http:')}/health/live`));
        await assert.rejects(
          httpsGet(`${running.base}/health/live`, readFileSync(certs.otherCaFile, 'utf8')),
          /certificate/i,
        );
        // Renewal: a certificate signed by the other authority replaces the files, SIGHUP.
        const renewed = await makeCertificates(await tempDir('tls-renewed'));
        await copyFile(renewed.serverCert, certFile);
        await copyFile(renewed.serverKey, keyFile);
        running.child.kill('SIGHUP');
        const renewedCa = readFileSync(renewed.caFile, 'utf8');
        await waitFor('the renewed certificate is served', async () =>
          httpsGet(`${running.base}/health/live`, renewedCa).then(
            (r) => r.status === 200,
            () => false,
          ),
        );
        assert.match(running.output(), /TLS certificate re-read/);
        // The container's HEALTHCHECK reaches the HTTPS listener (and fails once it is gone).
        const port = new URL(running.base).port;
        assert.equal(
          await dockerHealthcheck({ SLOTSYNC_PORT: port, SLOTSYNC_TLS_CERT_FILE: certFile }),
          0,
        );
        assert.equal(await dockerHealthcheck({ SLOTSYNC_PORT: port }), 1, 'plain HTTP is refused');
        await rm(renewed.caFile, { force: true });
      } finally {
        assert.equal(await running.stop(), 0, running.output());
      }
    });
  });
}

it('HTTPS settings: a certificate without its key, or a key that is not the certificate’s, name the variable', async () => {
  const dir = await tempDir('tls-config');
  try {
    const a = await makeCertificates(dir);
    const b = await makeCertificates(await tempDir('tls-config-b'));
    const urls = {
      SLOTSYNC_PRIMARY_URL: 'postgres://u@127.0.0.1:5432/postgres',
      SLOTSYNC_STANDBY_URL: 'postgres://u@127.0.0.1:5433/postgres',
    };
    assert.throws(
      () => loadConfig({ ...urls, SLOTSYNC_TLS_CERT_FILE: a.serverCert }),
      /^SlotSyncError: SLOTSYNC_TLS_KEY_FILE is required with the other|SLOTSYNC_TLS_KEY_FILE is required/,
    );
    assert.throws(
      () => readTlsFiles({ tlsCertFile: join(dir, 'none.crt'), tlsKeyFile: a.serverKey }),
      /SLOTSYNC_TLS_CERT_FILE cannot be read/,
    );
    assert.throws(
      () => readTlsFiles({ tlsCertFile: a.serverCert, tlsKeyFile: b.serverKey }),
      /SLOTSYNC_TLS_KEY_FILE and SLOTSYNC_TLS_CERT_FILE are not a usable certificate and key/,
    );
    assert.ok(readTlsFiles({ tlsCertFile: a.serverCert, tlsKeyFile: a.serverKey }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
