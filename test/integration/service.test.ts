/**
 * The HTTP service against real PostgreSQL 17 and 18, with supertest: every route's answers,
 * the shared sync lock, shutdown for promotion, security and bad input.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import request from 'supertest';
import type { SlotSyncError } from '../../src/errors.js';
import { generateOpenApi } from '../../src/service/openapi.js';
import { stagingNameOf } from '../../src/sync/names.js';
import {
  advancePrimarySlot,
  consume,
  createPrimarySlot,
  dropEverySlot,
  type Harness,
  repeatUntilStopped,
  startHarness,
  waitFor,
  writeRows,
} from '../helpers/harness.js';
import { holdNextCycle, type ServiceUnderTest, startService, TOKEN } from '../helpers/service.js';
import { MAJORS } from '../support/binaries.js';

it('the committed OpenAPI document is what the app generates (npm run openapi)', async () => {
  const committed = await readFile(new URL('../../openapi/openapi.json', import.meta.url), 'utf8');
  assert.equal(committed, await generateOpenApi());
});

for (const major of MAJORS) {
  describe(`service on PostgreSQL ${major}`, () => {
    let h: Harness;
    let s: ServiceUnderTest | undefined;
    const server = () => {
      assert.ok(s, 'a service runs');
      return s.app.server;
    };
    before(async () => {
      h = await startHarness({ major, synchronizedStandbySlots: true });
    });
    afterEach(async () => {
      await s?.close();
      s = undefined;
      await dropEverySlot(h.cluster);
    });
    after(async () => {
      await h?.close();
    });

    it('a reload that would leave a non-loopback listener without a token is refused; the log level reloads', async () => {
      s = await startService(h.cluster, { SLOTSYNC_HOST: '0.0.0.0', SLOTSYNC_API_TOKEN: TOKEN });
      const running = s.service.config;
      await assert.rejects(
        s.service.reload({ ...running, apiToken: undefined, logLevel: 'fatal' }),
        (error: SlotSyncError) => {
          assert.equal(error.code, 'SLOTSYNC_CONFIG');
          assert.match(
            error.message,
            /^SLOTSYNC_API_TOKEN is required while listening on 0\.0\.0\.0/,
          );
          return true;
        },
      );
      assert.equal(s.service.config.apiToken, TOKEN, 'the running configuration is kept');
      assert.notEqual(s.service.logger.level, 'fatal');
      assert.equal(await s.service.reload({ ...running, logLevel: 'fatal' }), 'unchanged');
      assert.equal(s.service.logger.level, 'fatal');
      await request(server()).post('/sync').expect(401); // the token still guards POST
    });

    it('POST /sync callers that arrive during a cycle share the next one; timeoutMs never exceeds SLOTSYNC_SYNC_WAIT_MS', async () => {
      s = await startService(h.cluster, { SLOTSYNC_SYNC_WAIT_MS: '20000' });
      const cycles = async () =>
        Number(
          /slotsync_cycles_total\{trigger="api",outcome="success"\} (\d+)/.exec(
            (await s?.service.metrics.registry.getSingleMetricAsString('slotsync_cycles_total')) ??
              '',
          )?.[1] ?? 0,
        );
      const before = await cycles();
      const gate = holdNextCycle(s);
      const first = request(server()).post('/sync').send({});
      const firstDone = first.then((r) => r.status);
      await waitFor('the first cycle held', async () => gate.reached());
      const waiting = Array.from({ length: 5 }, () =>
        request(server())
          .post('/sync')
          .send({ timeoutMs: 600_000 })
          .then((r) => r.status),
      );
      await waitFor(
        'five callers waiting for the next cycle',
        async () => s?.service.context.waitingApiCallers === 5,
      );
      gate.open();
      assert.deepEqual(await Promise.all([firstDone, ...waiting]), [200, 200, 200, 200, 200, 200]);
      assert.equal((await cycles()) - before, 2, 'the held cycle and one shared by the five');
    });

    it('a flood of GET /health never takes a sync connection: probes on their own sessions, at most once a second; cycles go on', async () => {
      await createPrimarySlot(h.cluster, 'flooded', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster, { SLOTSYNC_WORKER: 'on' });
      const service = s.service;
      await s.app.listen({ host: '127.0.0.1', port: 0 });
      const url = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}/health`;
      const errors = async () =>
        /outcome="error"\} ([1-9]\d*)/.exec(
          await service.metrics.registry.getSingleMetricAsString('slotsync_cycles_total'),
        )?.[1] ?? '0';
      let flooding = true;
      let answered = 0;
      const flood = Promise.all(
        Array.from({ length: 32 }, async () => {
          while (flooding) {
            await (await fetch(url)).arrayBuffer();
            answered++;
          }
        }),
      );
      const healthSessions: number[] = [];
      try {
        for (let round = 0; round < 3; round++) {
          await writeRows(h.cluster, 10);
          const target = await advancePrimarySlot(h.cluster, 'flooded');
          await h.cluster.waitForReplay();
          // The copy follows its remote within the worker's cadence, flood or not.
          await waitFor(
            'the copy following its remote',
            async () => {
              const [row] = await h.cluster.standby.sql<{ n: number; caught: boolean }>(
                `SELECT (SELECT count(*)::int FROM pg_stat_activity WHERE application_name = 'slotsync-health') AS n,
                      coalesce((SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots
                                 WHERE slot_name IN ('flooded', $2)
                                 ORDER BY confirmed_flush_lsn DESC LIMIT 1), false) AS caught`,
                [target, stagingNameOf('flooded')],
              );
              healthSessions.push(row?.n ?? 0);
              return row?.caught === true;
            },
            15_000,
          );
        }
      } finally {
        flooding = false;
        await flood;
      }
      assert.ok(answered > 200, `${answered} health answers`);
      assert.ok(
        Math.max(...healthSessions) <= 1,
        `health sessions on the standby: ${healthSessions}`,
      );
      assert.equal(await errors(), '0', 'no cycle failed');
    });

    it('closing while POST /sync waits for readiness answers that request at once, not after its wait', async () => {
      await createPrimarySlot(h.cluster, 'never_ready', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      const service = await startService(h.cluster);
      await service.app.listen({ host: '127.0.0.1', port: 0 });
      const base = `http://127.0.0.1:${(service.app.server.address() as AddressInfo).port}`;
      const answer = fetch(`${base}/sync`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ waitReady: 120_000 }),
      });
      await waitFor(
        'the first cycle of the wait',
        async () => service.service.context.snapshot.lastResult !== undefined,
      );
      const asked = Date.now();
      const closed = service.close();
      const body = (await (await answer).json()) as { readiness: { ready: boolean } };
      assert.equal(body.readiness.ready, false);
      await closed;
      // Far inside the 120 s the caller asked to wait: the close did not wait for it.
      assert.ok(Date.now() - asked < 60_000, `${Date.now() - asked} ms`);
    });

    it('/health needs no pg_read_all_settings (it can reveal primary_conninfo): a plain role gets every check, primary_conninfo said unchecked', async () => {
      await h.cluster.primary.sql('DROP ROLE IF EXISTS slotsync_plain');
      await h.cluster.primary.sql('CREATE ROLE slotsync_plain LOGIN REPLICATION');
      await h.cluster.waitForReplay();
      const as = (url: string) => url.replace('postgres:svc-secret-pw@', 'slotsync_plain@');
      s = await startService(h.cluster, {
        SLOTSYNC_PRIMARY_URL: as(h.cluster.primary.url('postgres', 'svc-secret-pw')),
        SLOTSYNC_STANDBY_URL: as(h.cluster.standby.url('postgres', 'svc-secret-pw')),
      });
      const [member] = await h.cluster.standby.sql<{ member: boolean }>(
        `SELECT pg_has_role('slotsync_plain', 'pg_read_all_settings', 'USAGE') AS member`,
      );
      assert.equal(member?.member, false);
      const health = await request(server()).get('/health');
      assert.equal(health.status, 200, JSON.stringify(health.body));
      assert.equal(health.body.checks.standby.status, 'pass');
      assert.equal(health.body.checks.settings.status, 'pass');
      assert.match(health.body.checks.settings.detail, /primary_conninfo not checked/);
    });

    it('SLOTSYNC_READ_TOKEN protects the reads but /health/live; /health without it shows check names only', async () => {
      const READ = 'read-token-0123456789abcdef';
      s = await startService(h.cluster, { SLOTSYNC_API_TOKEN: TOKEN, SLOTSYNC_READ_TOKEN: READ });
      const get = (path: string, token?: string) => {
        const r = request(server()).get(path);
        return token === undefined ? r : r.set('authorization', `Bearer ${token}`);
      };
      for (const path of ['/slots', '/metrics', '/ready', '/openapi.json']) {
        const refused = await get(path).expect(401);
        assert.equal(refused.body.code, 'SLOTSYNC_UNAUTHORIZED', path);
        await get(path, 'wrong-token-0123456789').expect(401);
        assert.notEqual((await get(path, READ)).status, 401, `${path} with the read token`);
        assert.notEqual((await get(path, TOKEN)).status, 401, `${path} with the API token`);
      }
      await get('/health/live').expect(200);
      const anonymous = await get('/health');
      assert.ok(Object.keys(anonymous.body.checks).length > 3);
      for (const check of Object.values(anonymous.body.checks) as { detail: string }[]) {
        assert.equal(check.detail, 'details need a bearer token');
      }
      const detailed = await get('/health', READ);
      assert.match(detailed.body.checks.standby.detail, /reachable/);
      // The read token cannot write.
      await request(server()).post('/sync').set('authorization', `Bearer ${READ}`).expect(401);
      const doc = (await get('/openapi.json', READ)).body;
      assert.deepEqual(doc.paths['/slots'].get.security, [{}, { bearer: [] }]);
      assert.deepEqual(doc.paths['/sync'].post.security, [{ bearer: [] }, {}]);
    });

    it("/health warns when PostgreSQL 18's idle_replication_slot_timeout is set on the standby", async () => {
      s = await startService(h.cluster);
      const quiet = await request(server()).get('/health');
      assert.equal(quiet.body.checks.idle_slot_timeout, undefined, 'unset (0), or PostgreSQL 17');
      if (major < 18) return; // the setting exists from 18 on
      await h.cluster.standby.sql(`ALTER SYSTEM SET idle_replication_slot_timeout = '1h'`);
      await h.cluster.standby.sql('SELECT pg_reload_conf()');
      try {
        await waitFor('the warning', async () => {
          const health = await request(server()).get('/health');
          return /idle_replication_slot_timeout = 1h/.test(
            health.body.checks.idle_slot_timeout?.detail ?? '',
          );
        });
      } finally {
        await h.cluster.standby.sql('ALTER SYSTEM RESET idle_replication_slot_timeout');
        await h.cluster.standby.sql('SELECT pg_reload_conf()');
      }
    });

    it('GET /slots, /health, /health/live, /metrics answer from a real pair', async () => {
      await createPrimarySlot(h.cluster, 'svc_slot', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster);
      const empty = await request(server()).get('/slots').expect(200);
      assert.deepEqual(empty.body.slots, []);
      assert.equal(empty.body.age_ms, null);

      await request(server()).post('/sync').expect(200);
      const slots = await request(server()).get('/slots').expect(200);
      const view = slots.body.slots.find((v: { name: string }) => v.name === 'svc_slot');
      assert.equal(view.state, 'temporary');
      assert.equal(view.sync_ready, false);
      assert.equal(typeof view.local.confirmed_flush_lsn, 'string');
      assert.equal(typeof view.remote.confirmed_flush_lsn, 'string');
      assert.equal(typeof slots.body.age_ms, 'number');

      const health = await request(server()).get('/health').expect(200);
      assert.equal(health.body.status, 'pass');
      for (const check of [
        'primary',
        'standby',
        'settings',
        'worker',
        'last_cycle',
        'synchronized_standby_slots',
      ]) {
        assert.ok(health.body.checks[check], check);
      }
      assert.equal(health.body.checks.synchronized_standby_slots.status, 'pass');
      await request(server()).get('/health/live').expect(200, { status: 'pass' });

      const metrics = await request(server()).get('/metrics').expect(200);
      assert.match(metrics.headers['content-type'] ?? '', /text\/plain/);
      for (const name of [
        'slotsync_cycles_total{trigger="api",outcome="success"} 1',
        'slotsync_cycle_duration_seconds_bucket',
        'slotsync_lock_wait_seconds_bucket',
        'slotsync_slots{state="temporary"} 1',
        'slotsync_slot_lag_bytes{slot="svc_slot"}',
        'slotsync_slot_sync_ready{slot="svc_slot"} 0',
        'slotsync_actions_total{action="created"} 1',
        'slotsync_naptime_seconds',
        'slotsync_last_success_timestamp_seconds',
        'slotsync_worker_restarts_total',
        'slotsync_process_resident_memory_bytes',
      ]) {
        assert.ok(metrics.text.includes(name), `metrics include ${name}`);
      }
    });

    it('/health answers 503 naming the failed check when the primary is unreachable', async () => {
      s = await startService(h.cluster, {
        SLOTSYNC_PRIMARY_URL: 'postgres://postgres:svc-secret-pw@127.0.0.1:1/postgres',
        SLOTSYNC_CONNECT_TIMEOUT_MS: '1000',
      });
      const health = await request(server()).get('/health').expect(503);
      assert.equal(health.body.checks.primary.status, 'fail');
      assert.match(health.body.checks.primary.detail, /SLOTSYNC_PRIMARY_URL: .*ECONNREFUSED/);
      assert.doesNotMatch(JSON.stringify(health.body), /svc-secret-pw/);
      const sync = await request(server()).post('/sync').expect(503);
      assert.equal(sync.headers['content-type'], 'application/problem+json; charset=utf-8');
      assert.equal(sync.body.code, 'SLOTSYNC_UNREACHABLE');
      assert.doesNotMatch(sync.text, /svc-secret-pw/);
    });

    it('POST /sync waits for an in-flight cycle (bounded), or answers 409 at once with nowait', async () => {
      s = await startService(h.cluster);
      const { reached, open } = holdNextCycle(s);
      const first = request(server())
        .post('/sync')
        .then((r) => r);
      await waitFor('a cycle in flight', async () => reached());
      const nowait = await request(server()).post('/sync?nowait=true').expect(409);
      assert.equal(nowait.body.detail, 'cannot synchronize replication slots concurrently');
      const nowaitBody = await request(server()).post('/sync').send({ nowait: true }).expect(409);
      assert.equal(nowaitBody.body.code, 'SLOTSYNC_CONCURRENT');
      const timedOut = await request(server()).post('/sync').send({ timeoutMs: 100 }).expect(503);
      assert.match(timedOut.body.detail, /did not finish within 100 ms/);
      assert.equal(timedOut.headers['retry-after'], '1');
      const waiting = request(server())
        .post('/sync')
        .send({ timeoutMs: 20_000 })
        .then((r) => r);
      open();
      assert.equal((await first).status, 200);
      assert.equal((await waiting).status, 200);
    });

    it('20 concurrent POST /sync while the worker runs: all answered, cycles never overlap', async () => {
      for (let i = 0; i < 5; i++)
        await createPrimarySlot(h.cluster, `conc_${i}`, { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster, { SLOTSYNC_WORKER: 'on' });
      const service = s.service;
      await waitFor(
        'the worker ran a cycle',
        async () => service.context.snapshot.lastSuccessAt !== undefined,
      );
      const traffic = repeatUntilStopped(() => writeRows(h.cluster, 5), 10);
      try {
        const answers = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            request(server())
              .post(i % 2 === 0 ? '/sync' : '/sync?nowait=true')
              .then((r) => ({ i, status: r.status })),
          ),
        );
        for (const { i, status } of answers) {
          if (i % 2 === 0) assert.equal(status, 200, `request ${i}`);
          else assert.ok(status === 200 || status === 409, `request ${i}: ${status}`);
        }
      } finally {
        await traffic.stop();
      }
      assert.equal(service.context.maxInFlight, 1, 'never more than one cycle in flight');
      const metrics = await request(server()).get('/metrics').expect(200);
      assert.match(
        metrics.text,
        /slotsync_cycles_total\{trigger="worker",outcome="success"\} [1-9]/,
      );
    });

    it('the worker naps up to SLOTSYNC_NAPTIME_MAX_MS while idle, yet wakes on a slot change on the primary', async () => {
      await createPrimarySlot(h.cluster, 'wake_me', { plugin: 'test_decoding' });
      await h.cluster.primary.sql('CREATE TABLE IF NOT EXISTS wake (x int)');
      s = await startService(h.cluster, {
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_NAPTIME_MIN_MS: '1000',
        SLOTSYNC_NAPTIME_MAX_MS: '60000',
        SLOTSYNC_CHANGE_POLL_MS: '50',
      });
      const service = s.service;
      await waitFor('the copy sync-ready', async () => {
        await h.cluster.primary.sql('INSERT INTO wake VALUES (1)');
        await consume(h.cluster.primary, 'wake_me');
        return (
          service.context.snapshot.lastResult?.views.find((v) => v.name === 'wake_me')
            ?.sync_ready === true
        );
      });
      await waitFor('the worker backed off', async () => service.worker.naptimeMs >= 8_000, 20_000);
      await h.cluster.primary.sql('INSERT INTO wake VALUES (2)');
      await consume(h.cluster.primary, 'wake_me');
      const [target] = await h.cluster.primary.sql<{ lsn: string }>(
        `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'wake_me'`,
      );
      // The nap in progress began as the last cycle ended and lasts the naptime (8 s or more).
      const napEnds = (service.context.snapshot.lastSuccessAt ?? 0) + service.worker.naptimeMs;
      await waitFor(
        'the copy to follow within seconds, not after the long nap',
        async () => {
          const [copy] = await h.cluster.standby.sql<{ lsn: string }>(
            `SELECT confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = 'wake_me'`,
          );
          return copy?.lsn === target?.lsn;
        },
        20_000,
      );
      const early = napEnds - Date.now();
      assert.ok(early > 0, `followed before the nap would have ended (${early} ms early)`);
    });

    it('POST /shutdown waits for the in-flight cycle, drops copies that are not sync-ready, keeps ready ones, then refuses syncs', async () => {
      await createPrimarySlot(h.cluster, 'ready_one', { plugin: 'test_decoding' });
      await createPrimarySlot(h.cluster, 'not_ready', { plugin: 'test_decoding' });
      await writeRows(h.cluster, 10);
      await h.cluster.waitForReplay();
      s = await startService(h.cluster, { SLOTSYNC_API_TOKEN: TOKEN });
      const auth = { Authorization: `Bearer ${TOKEN}` };
      await request(server()).post('/sync').set(auth).expect(200);
      await consume(h.cluster.primary, 'ready_one');
      await h.cluster.waitForReplay();
      const synced = await request(server()).post('/sync').set(auth).expect(200);
      assert.equal(
        synced.body.slots.find((r: { name: string }) => r.name === 'ready_one').state,
        'sync_ready',
      );
      assert.equal(
        synced.body.slots.find((r: { name: string }) => r.name === 'not_ready').state,
        'temporary',
      );

      const { reached, open } = holdNextCycle(s);
      const inFlight = request(server())
        .post('/sync')
        .set(auth)
        .then((r) => r);
      await waitFor('a cycle in flight', async () => reached());
      let shutdownDone = false;
      const shutdown = request(server())
        .post('/shutdown')
        .set(auth)
        .then((r) => {
          shutdownDone = true;
          return r;
        });
      await waitFor('shutdown signaled', async () => s?.service.context.stopSignaled === true);
      assert.equal(shutdownDone, false, 'shutdown waits for the in-flight cycle');
      open();
      assert.equal((await inFlight).status, 200);
      const answer = await shutdown;
      assert.equal(answer.status, 200);
      assert.equal(answer.body.stopped, true);
      assert.deepEqual(answer.body.dropped, [stagingNameOf('not_ready')], 'its staging slot');
      const states = Object.fromEntries(
        answer.body.slots.map((v: { name: string; state: string }) => [v.name, v.state]),
      );
      assert.equal(states.ready_one, 'sync_ready');
      const left = await h.cluster.standby.sql<{ slot_name: string }>(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical'`,
      );
      assert.deepEqual(
        left.map((r) => r.slot_name),
        ['ready_one'],
        'every slot left on the standby is sync-ready',
      );

      const refused = await request(server()).post('/sync').set(auth).expect(409);
      assert.equal(
        refused.body.detail,
        'cannot synchronize replication slots when standby promotion is ongoing',
      );
      const again = await request(server()).post('/shutdown').set(auth).expect(200);
      assert.deepEqual(again.body, answer.body, 'idempotent');
      const health = await request(server()).get('/health').expect(503);
      assert.equal(health.body.checks.worker.status, 'fail');
    });

    it('POST routes need the token (401 without or with a wrong one), compared whatever its length', async () => {
      s = await startService(h.cluster, { SLOTSYNC_API_TOKEN: TOKEN });
      for (const header of [
        undefined,
        'Bearer wrong',
        `Bearer ${TOKEN}x`,
        `Basic ${TOKEN}`,
        'Bearer ',
      ]) {
        const r = request(server()).post('/sync');
        const answer = await (header === undefined ? r : r.set('Authorization', header)).expect(
          401,
        );
        assert.equal(answer.body.code, 'SLOTSYNC_UNAUTHORIZED');
        assert.equal(answer.headers['www-authenticate'], 'Bearer realm="slotsync"');
        assert.doesNotMatch(answer.text, new RegExp(TOKEN));
      }
      await request(server()).post('/shutdown').expect(401);
      await request(server()).post('/sync').set('Authorization', `Bearer ${TOKEN}`).expect(200);
      assert.equal(s.service.context.stopSignaled, false, 'a rejected shutdown changed nothing');
    });

    it('without a token, POST is refused when the API is configured beyond loopback', async () => {
      s = await startService(h.cluster, { SLOTSYNC_HOST: '0.0.0.0' });
      const answer = await request(server()).post('/sync').expect(403);
      assert.equal(answer.body.code, 'SLOTSYNC_FORBIDDEN');
      await request(server()).get('/slots').expect(200);
    });

    it('malformed, oversized and unknown input is answered 4xx as problem+json and changes nothing', async () => {
      await createPrimarySlot(h.cluster, 'untouched', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster);
      const registryPath = join(s.stateDir, 'registry.json');
      const cases: [string, () => request.Test, number, string?][] = [
        [
          'bad JSON',
          () =>
            request(server())
              .post('/sync')
              .set('content-type', 'application/json')
              .send('{"nowait":'),
          400,
          'SLOTSYNC_BAD_REQUEST',
        ],
        [
          'unknown field',
          () => request(server()).post('/sync').send({ nowait: true, drop: 'everything' }),
          400,
        ],
        ['wrong type', () => request(server()).post('/sync').send({ timeoutMs: 'soon' }), 400],
        ['negative timeout', () => request(server()).post('/sync').send({ timeoutMs: -1 }), 400],
        ['unknown query', () => request(server()).post('/sync?force=1'), 400],
        [
          'oversized',
          () =>
            request(server())
              .post('/sync')
              .set('content-type', 'application/json')
              .send(`{"pad":"${'x'.repeat(20_000)}"}`),
          413,
          'SLOTSYNC_BODY_TOO_LARGE',
        ],
        [
          'text body',
          () =>
            request(server()).post('/sync').set('content-type', 'text/plain').send('sync please'),
          415,
          'SLOTSYNC_UNSUPPORTED_MEDIA_TYPE',
        ],
        [
          'unknown shutdown field',
          () => request(server()).post('/shutdown').send({ finalSync: true, now: true }),
          400,
        ],
        [
          'unknown route',
          () => request(server()).get('/slots/../admin'),
          404,
          'SLOTSYNC_NOT_FOUND',
        ],
        [
          'wrong method',
          () => request(server()).delete('/slots'),
          405,
          'SLOTSYNC_METHOD_NOT_ALLOWED',
        ],
        ['GET a POST route', () => request(server()).get('/shutdown'), 405],
      ];
      for (const [what, send, status, code] of cases) {
        const answer = await send();
        assert.equal(answer.status, status, what);
        assert.match(answer.body.code, /^SLOTSYNC_/, `${what}: one of slotsync's codes`);
        if (code) assert.equal(answer.body.code, code, what);
        if (status === 405) assert.match(answer.headers.allow ?? '', /GET|POST/, what);
        assert.match(answer.headers['content-type'] ?? '', /^application\/problem\+json/, what);
        assert.equal(answer.body.status, status, what);
        assert.equal(typeof answer.body.detail, 'string', what);
      }
      await assert.rejects(readFile(registryPath), /ENOENT/, 'no cycle ran: nothing was recorded');
      assert.equal(s.service.context.stopSignaled, false);
      const copies = await h.cluster.standby.sql(
        `SELECT 1 FROM pg_replication_slots WHERE slot_type = 'logical'`,
      );
      assert.equal(copies.length, 0);
    });

    it('POST /sync is rate-limited per client with a clear 429', async () => {
      s = await startService(h.cluster, {}, { syncRatePerSecond: 2 });
      // Sent at once: the limit is taken as a request arrives, whatever each cycle's length.
      const answers = await Promise.all(
        Array.from({ length: 10 }, () => request(server()).post('/sync')),
      );
      const statuses = answers.map((answer) => answer.status);
      assert.ok(statuses.includes(429), statuses.join(','));
      const limited = answers.find((answer) => answer.status === 429);
      assert.ok(limited);
      assert.match(limited.body.detail, /too many POST \/sync/);
      assert.ok(Number(limited.headers['retry-after']) >= 1);
    });
  });
}
