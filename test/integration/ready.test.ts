/**
 * The readiness gate on real PostgreSQL 17 and 18 (issue 12, item 1): GET /ready from the
 * last cycle, POST /sync {waitReady}, and `slotsync gate` — asking a running service, running
 * cycles itself, and called from a Patroni-style pre_promote script.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import request from 'supertest';
import { stagingNameOf } from '../../src/sync/names.js';
import { CLI, runCli } from '../helpers/cli.js';
import {
  advancePrimarySlot,
  createPrimarySlot,
  dropEverySlot,
  dropNodeMarkers,
  type Harness,
  startHarness,
  waitFor,
  writeRows,
} from '../helpers/harness.js';
import { type ServiceUnderTest, startService } from '../helpers/service.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';

const run = promisify(execFile);

for (const major of MAJORS) {
  describe(`readiness gate on PostgreSQL ${major}`, () => {
    let h: Harness;
    let s: ServiceUnderTest | undefined;
    let scripts: string;
    before(async () => {
      h = await startHarness({ major });
      scripts = await tempDir('gate');
    });
    afterEach(async () => {
      await s?.close();
      s = undefined;
      await dropEverySlot(h.cluster);
    });
    after(async () => {
      await h?.close();
      await rm(scripts, { recursive: true, force: true });
    });

    /** Moves a primary slot past everything written so far, and lets the standby replay. */
    const consumerConfirms = async (name: string) => {
      await writeRows(h.cluster, 5);
      await advancePrimarySlot(h.cluster, name);
      await h.cluster.waitForReplay();
    };

    it('GET /ready: 503 while a copy is missing or not sync-ready, naming it; 200 once it is, naming the facts it rests on', async () => {
      await createPrimarySlot(h.cluster, 'gate_a', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster);
      const api = () => request(s?.app.server as NonNullable<typeof s>['app']['server']);
      // Before any cycle: the question reads the primary itself, so the slot is required (a
      // first read slower than /ready's time for the primary, on a loaded machine, is asked again).
      let none = await api().get('/ready').expect(503);
      await waitFor('/ready read the primary', async () => {
        if (none.body.required?.length === 1) return true;
        none = await api().get('/ready').expect(503);
        return false;
      });
      assert.deepEqual(none.body.required, ['gate_a']);
      assert.match(none.body.not_ready[0]?.reason, /has no copy on this standby yet/);
      assert.equal(none.body.role, 'standby');

      await api().post('/sync').expect(200);
      const staged = await api().get('/ready').expect(503);
      assert.deepEqual(staged.body.required, ['gate_a']);
      assert.equal(staged.body.not_ready[0]?.name, 'gate_a');
      assert.match(staged.body.not_ready[0]?.reason, /not sync-ready yet/);
      assert.equal(staged.body.reason, null);

      await consumerConfirms('gate_a');
      await api().post('/sync').expect(200);
      const ready = await api().get('/ready').expect(200);
      assert.equal(ready.body.ready, true);
      assert.deepEqual(ready.body.not_ready, []);
      // This harness's primary does not wait for the standby: the answer says it rests on a
      // fresh read of the primary, and how old each fact is.
      assert.equal(ready.body.primary.waits_for_standby, false);
      const verdict = ready.body.slots[0];
      assert.equal(verdict.safe, true);
      assert.match(verdict.facts.consumers.detail, /holds only while it answers/);
      assert.equal(typeof verdict.facts.unmoved.age_ms, 'number');
      assert.equal(verdict.resume_lsn, verdict.consumer_confirmed_lsn);

      const unknown = await api().get('/ready?slots=gate_a,nope').expect(503);
      assert.deepEqual(unknown.body.not_ready, [
        {
          name: 'nope',
          reason: 'no failover slot "nope" on the primary and no copy of it on this standby',
        },
      ]);
      await api().get('/ready?max_age_ms=-1').expect(400);
    });

    it('POST /sync {waitReady} cycles until the copies are ready, or says which are not', async () => {
      await createPrimarySlot(h.cluster, 'gate_b', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster);
      const api = () => request(s?.app.server as NonNullable<typeof s>['app']['server']);
      let confirming = true;
      const consumer = (async () => {
        while (confirming) {
          await consumerConfirms('gate_b');
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      try {
        const answer = await api().post('/sync').send({ waitReady: 20_000 }).expect(200);
        assert.equal(answer.body.readiness.ready, true, JSON.stringify(answer.body));
      } finally {
        confirming = false;
        await consumer;
      }
      await createPrimarySlot(h.cluster, 'gate_c', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      const late = await api().post('/sync').send({ waitReady: 300 }).expect(200);
      assert.equal(late.body.readiness.ready, false);
      assert.deepEqual(
        late.body.readiness.not_ready.map((n: { name: string }) => n.name),
        ['gate_c'],
      );
    });

    it('slotsync gate: from a pre_promote script against a running service, and running cycles itself', async () => {
      await createPrimarySlot(h.cluster, 'gate_d', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      // The worker keeps the last cycle fresh, as in production.
      s = await startService(h.cluster, { SLOTSYNC_WORKER: 'on' });
      await s.app.listen({ host: '127.0.0.1', port: 0 });
      const url = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;

      // Patroni's pre_promote (or repmgr's failover_validation_command): a non-zero exit
      // stops the promotion.
      const script = join(scripts, 'pre_promote.sh');
      await writeFile(
        script,
        `#!/bin/sh\nexec "${process.execPath}" --import tsx "${CLI}" gate --wait "$GATE_WAIT" --url "$SLOTSYNC_URL"\n`,
      );
      await chmod(script, 0o700);
      const prePromote = (wait: string) =>
        run(script, [], {
          env: { PATH: process.env.PATH ?? '', SLOTSYNC_URL: url, GATE_WAIT: wait },
        }).then(
          (r) => ({ code: 0, ...r }),
          (e: { code: number; stdout: string; stderr: string }) => e,
        );
      const blocked = await prePromote('0');
      assert.equal(blocked.code, 1);
      assert.match(blocked.stderr, /not ready: gate_d: /);

      // The consumer moves on once the worker made the copy: a copy made after the last
      // confirmation stays staged until the next one.
      await waitFor('the worker made the copy', async () => {
        const rows = await h.cluster.standby.sql(
          'SELECT 1 FROM pg_replication_slots WHERE slot_name = ANY($1)',
          [['gate_d', stagingNameOf('gate_d')]],
        );
        return rows.length > 0;
      });
      await consumerConfirms('gate_d');
      const allowed = await prePromote('20');
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.match(allowed.stdout, /ready: gate_d/);

      // Without --url: the gate runs cycles with the database URLs of the environment (a
      // deployment of its own here, with its own state folder and node marker).
      await s.close();
      s = undefined;
      await dropNodeMarkers(h.cluster);
      const env = {
        SLOTSYNC_PRIMARY_URL: h.cluster.primary.url('postgres', 'gate-pw'),
        SLOTSYNC_STANDBY_URL: h.cluster.standby.url('postgres', 'gate-pw'),
        SLOTSYNC_STATE_DIR: join(scripts, 'state'),
      };
      await createPrimarySlot(h.cluster, 'gate_e', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      const self = await runCli(['gate', '--slots', 'gate_e', '--wait', '1'], env);
      assert.equal(self.code, 1, self.stderr);
      assert.match(self.stderr, /not ready: gate_e/);
      assert.doesNotMatch(self.stderr + self.stdout, /gate-pw/);

      const usage = await runCli(['gate', '--wait', 'soon'], env);
      assert.equal(usage.code, 2);
      assert.match(usage.stderr, /--wait needs seconds/);
    });
  });
}
