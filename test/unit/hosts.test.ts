import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig, secretsOf } from '../../src/config.js';
import { conninfoHost, splitHost } from '../../src/db/primary-targets.js';
import { redactUrl } from '../../src/redact.js';
import { expandHosts } from '../../src/urls.js';

describe("SLOTSYNC_PRIMARY_URL in libpq's multi-host form", () => {
  it('is one URL per host, the rest shared; one host stays as it is', () => {
    assert.deepEqual(
      expandHosts('postgres://u:p%40w@db1:5432,db2:5433,[::1]/app?sslmode=disable'),
      [
        'postgres://u:p%40w@db1:5432/app?sslmode=disable',
        'postgres://u:p%40w@db2:5433/app?sslmode=disable',
        'postgres://u:p%40w@[::1]/app?sslmode=disable',
      ],
    );
    assert.deepEqual(expandHosts('postgres://u@db1/app'), ['postgres://u@db1/app']);
  });

  it('is validated host by host, and its password never printed', () => {
    const config = loadConfig({
      SLOTSYNC_PRIMARY_URL: 'postgres://u:s3cret-pw@db1:5432,db2:5432/postgres',
      SLOTSYNC_STANDBY_URL: 'postgres://u:s3cret-pw@127.0.0.1:5432/postgres',
    });
    assert.ok(secretsOf(config).includes('s3cret-pw'));
    assert.equal(redactUrl(config.primaryUrl), 'postgres://u:*****@db1:5432,db2:5432/postgres');
    assert.throws(
      () =>
        loadConfig({
          SLOTSYNC_PRIMARY_URL: 'postgres://u@db1:5432,db2:5432',
          SLOTSYNC_STANDBY_URL: 'postgres://u@127.0.0.1/postgres',
        }),
      /SLOTSYNC_PRIMARY_URL must name a database/,
    );
  });

  it("reads where the standby's primary_conninfo points, never anything else of it", () => {
    assert.deepEqual(conninfoHost("host=db2 port=5433 user=rep password='x y' dbname=postgres"), {
      host: 'db2',
      port: '5433',
    });
    assert.deepEqual(conninfoHost("user=rep host='db 3'"), { host: 'db 3', port: null });
    assert.deepEqual(conninfoHost('postgres://rep:pw@db4:6000/postgres'), {
      host: 'db4',
      port: '6000',
    });
    assert.equal(conninfoHost(''), null);
    assert.deepEqual(splitHost('[::1]:5432'), ['::1', '5432']);
    assert.deepEqual(splitHost('db1'), ['db1', null]);
  });
});
