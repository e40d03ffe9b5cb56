/**
 * The monitoring kit against the real thing (issue 12, items 5 and 6): `promtool` checks and
 * unit-tests the alerting rules; a real Prometheus server (Debian's package, installed by
 * .ci/run) scrapes a real slotsync on real PostgreSQL 17 and 18, loads the rules, and every
 * dashboard query and every rule expression parses and the dashboard's return data.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  createPrimarySlot,
  dropEverySlot,
  type Harness,
  startHarness,
  waitFor,
} from '../helpers/harness.js';
import { type ServiceUnderTest, startService } from '../helpers/service.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';
import { freePort } from '../support/server.js';

const run = promisify(execFile);
const DEPLOY = fileURLToPath(new URL('../../deploy/', import.meta.url));
const RULES = join(DEPLOY, 'prometheus', 'slotsync-rules.yml');

interface Dashboard {
  panels: { title: string; targets: { expr: string }[] }[];
}

describe('alerting rules (promtool)', () => {
  it('check rules and their unit tests pass', async () => {
    const check = await run('promtool', ['check', 'rules', RULES]);
    assert.match(check.stdout, /SUCCESS: 12 rules found/);
    const tests = await run('promtool', ['test', 'rules', 'slotsync-rules.test.yml'], {
      cwd: join(DEPLOY, 'prometheus'),
    });
    assert.match(tests.stdout, /SUCCESS/);
  });
});

for (const major of MAJORS) {
  describe(`Prometheus scraping slotsync on PostgreSQL ${major}`, () => {
    let h: Harness;
    let s: ServiceUnderTest;
    let prometheus: ChildProcess;
    let dir: string;
    let api: string;
    before(async () => {
      h = await startHarness({ major });
      await createPrimarySlot(h.cluster, 'watched', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      s = await startService(h.cluster, { SLOTSYNC_WORKER: 'on' });
      await s.app.listen({ host: '127.0.0.1', port: 0 });
      const target = `127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
      dir = await tempDir('prometheus');
      await writeFile(
        join(dir, 'prometheus.yml'),
        `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - ${RULES}\nscrape_configs:\n  - job_name: slotsync\n    static_configs:\n      - targets: ['${target}']\n`,
      );
      const port = await freePort();
      api = `http://127.0.0.1:${port}/api/v1`;
      prometheus = spawn(
        'prometheus',
        [
          `--config.file=${join(dir, 'prometheus.yml')}`,
          `--storage.tsdb.path=${join(dir, 'data')}`,
          `--web.listen-address=127.0.0.1:${port}`,
        ],
        { stdio: 'ignore' },
      );
    });
    after(async () => {
      prometheus?.kill('SIGTERM');
      await s?.close();
      await dropEverySlot(h.cluster);
      await h?.close();
      await rm(dir, { recursive: true, force: true });
    });

    const query = async (expr: string) => {
      const answer = await fetch(`${api}/query?query=${encodeURIComponent(expr)}`);
      return (await answer.json()) as {
        status: string;
        error?: string;
        data?: { result: unknown[] };
      };
    };

    it('every dashboard query returns data, every rule is loaded and healthy', async () => {
      // Rates need two scrapes after the first cycle: wait for the readiness gauge twice.
      await waitFor(
        'Prometheus scraping slotsync',
        async () => {
          const up = await query('count_over_time(slotsync_ready[1m])').catch(() => undefined);
          const samples = Number((up?.data?.result[0] as { value?: [number, string] })?.value?.[1]);
          return samples >= 3;
        },
        60_000,
      );
      const dashboard = JSON.parse(
        await readFile(join(DEPLOY, 'grafana', 'slotsync-dashboard.json'), 'utf8'),
      ) as Dashboard;
      let queries = 0;
      for (const panel of dashboard.panels) {
        for (const target of panel.targets) {
          // Every query follows the job and instance chosen: instances are never mixed.
          assert.match(target.expr, /job=~"\$job",instance=~"\$instance"/, panel.title);
          // What Grafana sends with "All" selected.
          const answer = await query(
            target.expr.replaceAll('$job', '.+').replaceAll('$instance', '.+'),
          );
          assert.equal(answer.status, 'success', `${panel.title}: ${target.expr}: ${answer.error}`);
          assert.ok(
            (answer.data?.result.length ?? 0) > 0,
            `${panel.title}: ${target.expr}: no data`,
          );
          queries++;
        }
      }
      assert.ok(queries >= 15);

      await waitFor('the rules evaluated', async () => {
        const rules = (await (await fetch(`${api}/rules`)).json()) as {
          data: { groups: { rules: { health: string; lastEvaluation: string }[] }[] };
        };
        const all = rules.data.groups.flatMap((g) => g.rules);
        return all.length === 12 && all.every((r) => r.health === 'ok');
      });
      const watched = await query('slotsync_slot_sync_ready{slot="watched"}');
      assert.equal(watched.data?.result.length, 1, 'the slot is scraped by name');
    });
  });
}
