// PrepareTemplate's warm-up: one throwaway container through the agent's own path (create, start, wait, delete),
// whose rootfs is busybox in a directory that is removed afterwards, also when the container fails.
import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WARM_CONTAINER_ID, warmContainerPath, warmSpec } from '../../../src/agent/clone.js';

function fakeAgent(exitStatus: number, seen: string[], dir: string) {
  return {
    createContainer: async (req: { containerId: string; specJson: Uint8Array; bundle?: string }) => {
      const spec = JSON.parse(Buffer.from(req.specJson).toString()) as { root: { path: string } };
      // The rootfs is ready when create runs: busybox and its `true`.
      assert.ok(existsSync(join(spec.root.path, 'bin', 'busybox')));
      assert.equal(readlinkSync(join(spec.root.path, 'bin', 'true')), 'busybox');
      assert.ok(req.bundle?.startsWith(dir));
      seen.push(`create ${req.containerId}`);
      return { pid: 42, bundle: req.bundle! };
    },
    startProcess: async (id: string) => (seen.push(`start ${id}`), 42),
    waitProcess: async (id: string) => (seen.push(`wait ${id}`), { status: exitStatus, signaled: false }),
    deleteContainer: async (id: string) => void seen.push(`delete ${id}`),
  };
}

describe('agent: template warm-up container', () => {
  let tmp: string;
  let busybox: string;
  beforeEach(() => {
    tmp = mkdtempSync(join(tmpdir(), 'warm-'));
    busybox = join(tmp, 'busybox');
    writeFileSync(busybox, 'not really busybox');
  });
  afterEach(() => rmSync(tmp, { recursive: true, force: true }));

  it('creates, starts, waits for and deletes one container, then removes its directory', async () => {
    const seen: string[] = [];
    const dir = join(tmp, 'w');
    await warmContainerPath(fakeAgent(0, seen, dir) as never, dir, busybox);
    const id = WARM_CONTAINER_ID;
    assert.deepEqual(seen, [`create ${id}`, `start ${id}`, `wait ${id}`, `delete ${id}`]);
    assert.equal(existsSync(dir), false);
  });

  it('a container that fails is still deleted, its directory removed, and the failure reported', async () => {
    const seen: string[] = [];
    const dir = join(tmp, 'w');
    await assert.rejects(warmContainerPath(fakeAgent(3, seen, dir) as never, dir, busybox), /exited with 3/);
    assert.equal(seen.at(-1), `delete ${WARM_CONTAINER_ID}`);
    assert.throws(() => lstatSync(dir));
  });

  it("the spec is a pod's shape: its own namespaces and cgroup, a read-only root", () => {
    const spec = warmSpec('/r') as {
      root: { path: string; readonly: boolean };
      linux: { namespaces: Array<{ type: string }>; cgroupsPath: string };
      process: { args: string[] };
    };
    assert.deepEqual(spec.root, { path: '/r', readonly: true });
    assert.deepEqual(
      spec.linux.namespaces.map((n) => n.type),
      ['pid', 'ipc', 'uts', 'mount', 'network'],
    );
    assert.equal(spec.linux.cgroupsPath, `/${WARM_CONTAINER_ID}`);
    assert.deepEqual(spec.process.args, ['/bin/true']);
  });
});
