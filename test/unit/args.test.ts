import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { numberOption, option } from '../../scripts/args.js';

describe('demo and bench options', () => {
  afterEach(() => {
    delete process.env.npm_config_slots;
  });

  it('reads --name value and --name=value', () => {
    assert.equal(option(['--pg', '18'], 'pg'), '18');
    assert.equal(option(['--slots=10,100'], 'slots'), '10,100');
    assert.equal(numberOption(['--failover-after', '20'], 'failover-after'), 20);
    assert.equal(option([], 'pg'), undefined);
    assert.throws(() => numberOption(['--reps', 'many'], 'reps'), /--reps needs a number/);
  });

  it('reads `npm run bench --slots 10,100`, where npm keeps the flag and passes the value on', () => {
    process.env.npm_config_slots = 'true';
    assert.equal(option(['10,100', '--pg', '18'], 'slots'), '10,100');
  });
});
