/**
 * The README is the front door and docs/ the rooms: every relative link resolves (the file
 * exists; an #anchor names a heading of it), and the README stays short.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EnvSchema } from '../../src/config.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const pages = ['README.md', ...readdirSync(join(ROOT, 'docs')).map((f) => join('docs', f))];

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes. */
function slug(heading: string): string {
  return heading
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');
}

function anchors(text: string): Set<string> {
  const out = new Set<string>();
  let fenced = false;
  for (const line of text.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = /^#{1,6} (.*)$/.exec(line);
    if (heading && !fenced) out.add(slug(heading[1] ?? ''));
  }
  return out;
}

describe('the documentation', () => {
  it('every relative link in the README and docs/ resolves', () => {
    let links = 0;
    for (const page of pages) {
      const text = readFileSync(join(ROOT, page), 'utf8');
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (target === undefined || /^[a-z]+:/.test(target)) continue;
        const [path = '', anchor] = target.split('#');
        const file = path === '' ? join(ROOT, page) : join(ROOT, dirname(page), path);
        assert.ok(existsSync(file), `${page}: ${target}: no such file`);
        if (anchor) {
          assert.ok(
            anchors(readFileSync(file, 'utf8')).has(anchor),
            `${page}: ${target}: no such heading`,
          );
        }
        links++;
      }
    }
    assert.ok(links >= 10, `links checked: ${links}`);
  });

  it('the README is read in five minutes (at most ~250 lines) and links every doc', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    assert.ok(readme.split('\n').length <= 250, `${readme.split('\n').length} lines`);
    for (const page of pages.filter((p) => p.startsWith('docs'))) {
      assert.ok(readme.includes(`](${page})`), `the README links ${page}`);
    }
    assert.match(readme.split('\n').slice(0, 5).join('\n'), /npm ci && npm run demo/);
    assert.match(readme.split('\n').slice(0, 5).join('\n'), /npm ci && npm test/);
  });

  it('docs/configuration.md describes every variable slotsync reads', () => {
    const text = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8');
    for (const variable of Object.keys(EnvSchema.properties)) {
      assert.match(text, new RegExp(`\\| \`${variable}\` \\|`), variable);
    }
  });

  it('headings never skip a level', () => {
    for (const page of pages) {
      let previous = 0;
      let fenced = false;
      for (const line of readFileSync(join(ROOT, page), 'utf8').split('\n')) {
        if (line.startsWith('```')) fenced = !fenced;
        const level = /^(#{1,6}) /.exec(line)?.[1]?.length;
        if (level === undefined || fenced) continue;
        assert.ok(level <= previous + 1, `${page}: "${line}" skips a level`);
        previous = level;
      }
    }
  });
});
