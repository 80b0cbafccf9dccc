// `lcowctl 9p serve` argument parsing: the share security model and the connection cap reach the server.
import assert from 'node:assert/strict';
import { DEFAULT_CLI_MAX_CONNECTIONS, UsageError, parseServeArgs } from '../../../src/p9/cli.js';

describe('p9 cli: lcowctl 9p serve arguments', () => {
  it('defaults: mapped exports, at most 64 connections', () => {
    const a = parseServeArgs(['--listen', 'tcp:127.0.0.1:0', '--export', '/srv/x']);
    assert.equal(a.security, 'mapped');
    assert.equal(a.maxConnections, DEFAULT_CLI_MAX_CONNECTIONS);
    assert.deepEqual(a.exports, [{ name: '/srv/x', path: '/srv/x', readOnly: false, security: 'mapped' }]);
  });

  it('--security applies to every export; --max-connections and --max-host-fds are taken', () => {
    const a = parseServeArgs([
      '--listen=unix:/run/x.sock',
      '--security',
      'passthrough-existing',
      '--export',
      'root=/srv/rootfs',
      '--export',
      '/srv/data',
      '--max-connections=4',
      '--max-host-fds',
      '64',
    ]);
    assert.deepEqual(
      a.exports.map((e) => e.security),
      ['passthrough-existing', 'passthrough-existing'],
    );
    assert.equal(a.maxConnections, 4);
    assert.equal(a.maxHostFds, 64);
  });

  it('refuses an unknown model and a non-positive cap', () => {
    const base = ['--listen', 'tcp:127.0.0.1:0', '--export', '/srv/x'];
    assert.throws(() => parseServeArgs([...base, '--security', 'passthrough']), UsageError);
    assert.throws(() => parseServeArgs([...base, '--max-connections', '0']), UsageError);
  });
});
