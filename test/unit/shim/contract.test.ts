// Binary contract pieces that need no containerd: flags, socket address, runtime options, backend selection.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import { BootstrapParamsSchema } from '../../../src/gen/containerd/runtime/bootstrap/v1/bootstrap_pb.js';
import { OptionsSchema } from '../../../src/gen/runtimeoptions/v1/api_pb.js';
import { groupingOf, socketAddress } from '../../../src/shim/address.js';
import { encodeDeleteResponse } from '../../../src/shim/delete.js';
import { parseFlags } from '../../../src/shim/flags.js';
import { DeleteResponseSchema } from '../../../src/gen/containerd/task/v2/shim_pb.js';
import { decodeStdinOptions, sandboxBackend } from '../../../src/shim/options.js';
import { createSandbox, SandboxUnavailableError } from '../../../src/sandbox/index.js';
import { silentLogger } from '../../../src/util/log.js';
import { toTtrpcError, notFound, alreadyExists, failedPrecondition, unimplemented } from '../../../src/task/errors.js';
import { Code } from '../../../src/ttrpc/index.js';

describe('shim binary contract', () => {
  it('parses Go-style flags before the action', () => {
    const f = parseFlags([
      '-namespace',
      'k8s.io',
      '--address=/run/c.sock',
      '-publish-binary',
      '/usr/bin/containerd',
      '-id',
      'abc',
      '-debug',
      'start',
      'x',
    ]);
    assert.equal(f.namespace, 'k8s.io');
    assert.equal(f.address, '/run/c.sock');
    assert.equal(f.publishBinary, '/usr/bin/containerd');
    assert.equal(f.id, 'abc');
    assert.equal(f.debug, true);
    assert.equal(f.action, 'start');
    assert.deepEqual(f.rest, ['x']);
    assert.throws(() => parseFlags(['-bogus', 'x', 'start']), /not defined/);
  });

  it('computes the socket address like the runc shim', () => {
    const want = createHash('sha256').update('/run/containerd/containerd.sock/default/pod1').digest('hex');
    assert.equal(
      socketAddress('/run/containerd/containerd.sock', 'default', 'pod1'),
      `unix:///run/containerd/s/${want}`,
    );
  });

  it('groups by io.containerd.runc.v2.group, then the CRI sandbox id, else the id', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'group-'));
    try {
      assert.equal(await groupingOf(dir, 'id1'), 'id1');
      writeFileSync(
        join(dir, 'config.json'),
        JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'sb' } }),
      );
      assert.equal(await groupingOf(dir, 'id1'), 'sb');
      writeFileSync(
        join(dir, 'config.json'),
        JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'sb', 'io.containerd.runc.v2.group': 'g' } }),
      );
      assert.equal(await groupingOf(dir, 'id1'), 'g');
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('decodes BootstrapParams first, else a bare Any with runtimeoptions config_path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'opts-'));
    try {
      const toml = join(dir, 'lcow.toml');
      writeFileSync(toml, 'sandbox = "process"\n');
      const opts = create(OptionsSchema, { configPath: toml });
      const any = create(AnySchema, { typeUrl: 'runtimeoptions.v1.Options', value: toBinary(OptionsSchema, opts) });
      const bare = decodeStdinOptions(toBinary(AnySchema, any), 'c1');
      assert.equal(bare.bootstrap, undefined);
      assert.equal(bare.config.sandbox, 'process');
      const boot = create(BootstrapParamsSchema, { instanceId: 'c1', namespace: 'ns', extensions: [{ value: any }] });
      const b = decodeStdinOptions(toBinary(BootstrapParamsSchema, boot), 'c1');
      assert.equal(b.bootstrap?.namespace, 'ns');
      assert.equal(b.config.sandbox, 'process');
      assert.deepEqual(decodeStdinOptions(new Uint8Array(0), 'c1').config, {});
    } finally {
      rmSync(dir, { recursive: true });
    }
  });

  it('never picks the unisolated backend by default', async () => {
    assert.equal(sandboxBackend({}, {}), undefined);
    assert.equal(sandboxBackend({ sandbox: 'process' }, {}), 'process');
    assert.equal(sandboxBackend({}, { LCOW_SANDBOX: 'process' }), 'process');
    // The default is the VM backend (qemu on Linux), never the process one.
    const def = await createSandbox(undefined, { id: 'x', stateDir: '/tmp/x', logger: silentLogger, annotations: {} });
    assert.equal(def.isolated, true);
    assert.notEqual(def.backend, 'process');
    await assert.rejects(
      () => createSandbox('nope', { id: 'x', stateDir: '/tmp/x', logger: silentLogger, annotations: {} }),
      (e: Error) => e instanceof SandboxUnavailableError,
    );
    assert.equal(toTtrpcError(new SandboxUnavailableError('x')).code, Code.FAILED_PRECONDITION);
  });

  it('maps domain errors to gRPC codes in one place', () => {
    assert.equal(toTtrpcError(notFound('x')).code, Code.NOT_FOUND);
    assert.equal(toTtrpcError(alreadyExists('x')).code, Code.ALREADY_EXISTS);
    assert.equal(toTtrpcError(failedPrecondition('x')).code, Code.FAILED_PRECONDITION);
    assert.equal(toTtrpcError(unimplemented('x')).code, Code.UNIMPLEMENTED);
    assert.equal(toTtrpcError(new Error('boom')).code, Code.UNKNOWN);
  });

  it('`delete` encodes DeleteResponse by hand exactly as the generated schema decodes it', () => {
    const at = new Date(1_700_000_000_123);
    for (const [pid, status] of [
      [0, 137],
      [4242, 0],
      [1, 255],
    ] as const) {
      const r = fromBinary(DeleteResponseSchema, encodeDeleteResponse(pid, status, at));
      assert.equal(r.pid, pid);
      assert.equal(r.exitStatus, status);
      assert.equal(r.exitedAt?.seconds, 1_700_000_000n);
      assert.equal(r.exitedAt?.nanos, 123_000_000);
    }
  });
});
