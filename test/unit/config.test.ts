import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { redactSecrets, redactUrl } from '../../src/redact.js';
import { validatePrimary, validateStandby } from '../../src/sync/validate.js';

const base = {
  SLOTSYNC_PRIMARY_URL: 'postgres://app:s3cret-pw@db1:5432/app',
  SLOTSYNC_STANDBY_URL: 'postgres://app:s3cret-pw@db2:5432/app',
};

describe('configuration', () => {
  it('applies the contract defaults', () => {
    const config = loadConfig(base);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.port, 8432);
    assert.equal(config.stateDir, './.slotsync');
    assert.equal(config.worker, true);
    assert.equal(config.apiToken, undefined);
    assert.equal(config.naptimeMinMs, 200);
    assert.equal(config.naptimeMaxMs, 30000);
    assert.equal(config.changePollMs, 200);
  });

  it('polls for changes once a second under SLOTSYNC_ENGINE=builtin unless told otherwise', () => {
    assert.equal(loadConfig({ ...base, SLOTSYNC_ENGINE: 'builtin' }).changePollMs, 1000);
    const set = { ...base, SLOTSYNC_ENGINE: 'builtin', SLOTSYNC_CHANGE_POLL_MS: '200' };
    assert.equal(loadConfig(set).changePollMs, 200);
    assert.equal(loadConfig({ ...base, SLOTSYNC_CHANGE_POLL_MS: '0' }).changePollMs, 0);
    assert.throws(
      () => loadConfig({ ...base, SLOTSYNC_CHANGE_POLL_MS: '-1' }),
      /SLOTSYNC_CHANGE_POLL_MS is invalid/,
    );
  });

  it('names the variable that is wrong, and never shows the password', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ SLOTSYNC_STANDBY_URL: base.SLOTSYNC_STANDBY_URL }, /^SLOTSYNC_PRIMARY_URL is required$/],
      [
        { ...base, SLOTSYNC_PRIMARY_URL: 'postgres://app:s3cret-pw@db1:5432' },
        /^SLOTSYNC_PRIMARY_URL must name a database.*"dbname"/,
      ],
      [
        { ...base, SLOTSYNC_STANDBY_URL: 'mysql://app:s3cret-pw@db2/app' },
        /^SLOTSYNC_STANDBY_URL must be a postgres:\/\/ URL/,
      ],
      [{ ...base, SLOTSYNC_PORT: 'eighty' }, /^SLOTSYNC_PORT must be an integer/],
      [{ ...base, SLOTSYNC_PORT: '70000' }, /^SLOTSYNC_PORT is invalid/],
      [{ ...base, SLOTSYNC_WORKER: 'maybe' }, /^SLOTSYNC_WORKER is invalid/],
      [{ ...base, SLOTSYNC_API_TOKEN: 'short' }, /^SLOTSYNC_API_TOKEN is invalid$/],
      [
        { ...base, SLOTSYNC_NAPTIME_MIN_MS: '5000', SLOTSYNC_NAPTIME_MAX_MS: '1000' },
        /^SLOTSYNC_NAPTIME_MIN_MS must not exceed/,
      ],
    ];
    for (const [env, pattern] of cases) {
      assert.throws(
        () => loadConfig(env),
        (error: Error & { code?: string }) => {
          assert.equal(error.code, 'SLOTSYNC_CONFIG');
          assert.match(error.message, pattern);
          assert.doesNotMatch(error.message, /s3cret-pw|short/);
          return true;
        },
      );
    }
  });

  it('accepts dbname as a query parameter', () => {
    assert.doesNotThrow(() =>
      loadConfig({ ...base, SLOTSYNC_PRIMARY_URL: 'postgresql://db1/?dbname=app' }),
    );
  });

  it('redacts passwords in URLs and messages', () => {
    assert.equal(redactUrl('postgres://u:pw@h:1/d'), 'postgres://u:*****@h:1/d');
    assert.equal(redactUrl('postgres://h/d?password=pw'), 'postgres://h/d?password=*****');
    assert.equal(
      redactSecrets('failed for postgres://u:pw@h/d with token abcdef', ['abcdef']),
      'failed for postgres://u:*****@h/d with token *****',
    );
  });
});

describe('setup validation (ValidateSlotSyncParams, validate_remote_info)', () => {
  const standby = {
    inRecovery: true,
    versionNum: 170010,
    walLevel: 'logical',
    hotStandbyFeedback: true,
    primarySlotName: 'sb',
    primaryConninfoSet: true,
    syncReplicationSlots: false,
  };
  const primary = { inRecovery: false, versionNum: 170010, physicalSlotExists: true };

  it('accepts a valid setup', () => {
    validateStandby(standby);
    validatePrimary(primary, standby);
  });

  it("refuses each missing setting with slotsync.c's message", () => {
    assert.throws(
      () => validateStandby({ ...standby, hotStandbyFeedback: false }),
      /^Error: replication slot synchronization requires "hot_standby_feedback" to be enabled$|requires "hot_standby_feedback" to be enabled/,
    );
    assert.throws(
      () => validateStandby({ ...standby, primarySlotName: '' }),
      /requires "primary_slot_name" to be set/,
    );
    assert.throws(
      () => validateStandby({ ...standby, primaryConninfoSet: false }),
      /requires "primary_conninfo" to be set/,
    );
    assert.throws(
      () => validateStandby({ ...standby, walLevel: 'replica' }),
      /requires "wal_level" >= "logical"/,
    );
    assert.throws(
      () => validateStandby({ ...standby, inRecovery: false }),
      /can only be synchronized to a standby server/,
    );
    assert.throws(
      () => validateStandby({ ...standby, syncReplicationSlots: true }),
      /sync_replication_slots/,
    );
    assert.throws(
      () => validateStandby({ ...standby, versionNum: 160004 }),
      /PostgreSQL 17 or later/,
    );
  });

  it('refuses a primary that is a standby, a missing physical slot, a version mismatch', () => {
    assert.throws(
      () => validatePrimary({ ...primary, inRecovery: true }, standby),
      /^.*cannot synchronize replication slots from a standby server$/,
    );
    assert.throws(
      () => validatePrimary({ ...primary, physicalSlotExists: false }, standby),
      /replication slot "sb" specified by "primary_slot_name" does not exist on primary server/,
    );
    assert.throws(
      () => validatePrimary({ ...primary, versionNum: 180004 }, standby),
      /same major version/,
    );
  });
});
