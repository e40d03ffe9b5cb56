import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AdvancePacer, MIN_STEP_BYTES } from '../../src/engine/pacer.js';

const MB = 1024n * 1024n;

describe('bounded advances (engine/pacer.ts)', () => {
  it('moves a copy far behind in steps that fit a fifth of the statement timeout, never less than 1 MB', () => {
    const pacer = new AdvancePacer(2_000);
    const from = 100n * MB;
    const first = pacer.step(from, from, from + 2048n * MB);
    assert.ok(first > from && first < from + 2048n * MB, 'a step short of the target');
    // Learned that decoding is faster (100 MB in 100 ms): steps grow, half way at a time.
    const before = pacer.maxDecodeBytes;
    pacer.observe(100 * 1024 * 1024, 100);
    const budget = BigInt(pacer.maxDecodeBytes);
    assert.ok(pacer.maxDecodeBytes > before * 4);
    assert.equal(pacer.step(from, from, from + 2048n * MB), from + budget);
    // The decoding starts at restart_lsn: a window already large leaves a smaller step.
    assert.equal(pacer.step(from, from - 50n * MB, from + 2048n * MB), from - 50n * MB + budget);
    // A window past the budget is paid anyway: the step takes the decode to 40% of the
    // timeout (twice the budget), so that it passes the next running-xacts record.
    const wide = pacer.step(from, from - budget, from + 2048n * MB);
    assert.equal(wide, from - budget + budget * 2n);
    assert.equal(pacer.windowTooLarge(from, from - budget), false);
    // A small move is never cut.
    assert.equal(pacer.step(from, from, from + 10n * MB), from + 10n * MB);
    // Even a hopeless window still moves at least MIN_STEP_BYTES.
    const late = 4096n * MB;
    assert.equal(pacer.step(late, 0n, late + 2048n * MB), late + BigInt(MIN_STEP_BYTES));
    assert.equal(pacer.windowTooLarge(late, 0n), true);
  });

  it('believes slower news at once and is four times more careful after a timeout', () => {
    const pacer = new AdvancePacer(30_000);
    pacer.observe(1000 * 1024 * 1024, 1_000); // 1 GB/s
    const fast = pacer.maxDecodeBytes;
    pacer.observe(10 * 1024 * 1024, 1_000); // 10 MB/s
    assert.ok(pacer.maxDecodeBytes < fast / 50);
    const slow = pacer.maxDecodeBytes;
    pacer.timedOut();
    assert.equal(pacer.maxDecodeBytes, Math.max(MIN_STEP_BYTES, Math.floor(slow / 4)));
    // Samples too small to say anything are ignored.
    const before = pacer.maxDecodeBytes;
    pacer.observe(1000, 1);
    assert.equal(pacer.maxDecodeBytes, before);
  });
});
