import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  formatLsn,
  lsnDistance,
  parseLsn,
  parseXid,
  transactionIdFollows,
  transactionIdPrecedes,
} from '../../src/sync/lsn.js';

describe('LSN', () => {
  it('parses and formats like PostgreSQL', () => {
    assert.equal(parseLsn('0/16B3748'), 0x16b3748n);
    assert.equal(parseLsn('16/B374D848'), (0x16n << 32n) | 0xb374d848n);
    assert.equal(formatLsn(parseLsn('16/B374D848')), '16/B374D848');
    assert.equal(formatLsn(0n), '0/0');
    assert.equal(parseLsn(null), null);
  });

  it('compares over 64 bits, past 4 GiB and near the top', () => {
    assert.ok(parseLsn('1/0') > parseLsn('0/FFFFFFFF'));
    assert.ok(parseLsn('FFFFFFFF/FFFFFFFF') > parseLsn('FFFFFFFF/FFFFFFFE'));
    assert.ok(parseLsn('10/0') > parseLsn('F/FFFFFFFF'));
    assert.equal(formatLsn(parseLsn('FFFFFFFF/FFFFFFFF')), 'FFFFFFFF/FFFFFFFF');
  });

  it('rejects malformed text', () => {
    assert.throws(() => parseLsn('0/'), /invalid input syntax for type pg_lsn/);
    assert.throws(() => parseLsn('G/1'), /pg_lsn/);
    assert.throws(() => parseLsn('123456789/0'), /pg_lsn/);
  });

  it('measures lag in bytes, never negative', () => {
    assert.equal(lsnDistance(parseLsn('0/100'), parseLsn('1/0')), 0x1_0000_0000 - 0x100);
    assert.equal(lsnDistance(parseLsn('1/0'), parseLsn('0/100')), 0);
    assert.equal(lsnDistance(null, 1n), null);
  });
});

describe('TransactionIdPrecedes', () => {
  it('compares normal xids by their 32-bit difference', () => {
    assert.equal(transactionIdPrecedes(100, 200), true);
    assert.equal(transactionIdPrecedes(200, 100), false);
    assert.equal(transactionIdPrecedes(100, 100), false);
  });

  it('handles wraparound: 4294967290 precedes 5 after the counter wrapped', () => {
    assert.equal(transactionIdPrecedes(4294967290, 5), true);
    assert.equal(transactionIdPrecedes(5, 4294967290), false);
    assert.equal(transactionIdFollows(5, 4294967290), true);
    // exactly 2^31 apart, (int32) of the difference is INT32_MIN both ways: in PostgreSQL
    // each then precedes the other
    assert.equal(transactionIdPrecedes(3, 3 + 2 ** 31), true);
    assert.equal(transactionIdPrecedes(3 + 2 ** 31, 3), true);
    assert.equal(transactionIdPrecedes(3 + 2 ** 31 - 1, 3), false);
    assert.equal(transactionIdPrecedes(3, 3 + 2 ** 31 - 1), true);
  });

  it('compares special xids (0, 1, 2) as unsigned numbers', () => {
    assert.equal(transactionIdPrecedes(0, 3), true);
    assert.equal(transactionIdPrecedes(2, 4294967295), true);
    assert.equal(transactionIdPrecedes(4294967295, 2), false);
    assert.equal(transactionIdPrecedes(1, 2), true);
  });

  it('parses xids from text', () => {
    assert.equal(parseXid('748'), 748);
    assert.equal(parseXid(null), null);
    assert.throws(() => parseXid('-1'));
    assert.throws(() => parseXid('4294967296'));
  });
});
