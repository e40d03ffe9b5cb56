import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { checkOwnCopy } from '../support/binaries.js';

describe("the PostgreSQL binaries' copy in the temporary folder (test harness and demo)", () => {
  it('is used only when it is our own folder that no one else may write to', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'slotsync-bincheck-'));
    try {
      const good = join(dir, 'good');
      await mkdir(join(good, 'bin'), { recursive: true, mode: 0o755 });
      await chmod(good, 0o755);
      await chmod(join(good, 'bin'), 0o755);
      checkOwnCopy(good);
      checkOwnCopy(join(dir, 'not-there-yet'));

      const open = join(dir, 'open');
      await mkdir(open);
      await chmod(open, 0o777);
      assert.throws(() => checkOwnCopy(open), /may be written by others/);

      const openBin = join(dir, 'open-bin');
      await mkdir(join(openBin, 'bin'), { recursive: true });
      await chmod(openBin, 0o755);
      await chmod(join(openBin, 'bin'), 0o777);
      assert.throws(() => checkOwnCopy(openBin), /has a bin\/ others may write to/);

      const link = join(dir, 'link');
      await symlink(good, link);
      assert.throws(() => checkOwnCopy(link), /is not a folder/);

      if (process.getuid?.() === 0) {
        // Made first by another local user: never run.
        const theirs = join(dir, 'theirs');
        await mkdir(theirs, { mode: 0o755 });
        execFileSync('chown', ['65534', theirs]);
        assert.throws(() => checkOwnCopy(theirs), /belongs to user 65534/);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
