// Which network namespace a container's spec names once it runs in a VM sandbox (src/task/pod-network.ts).
import assert from 'node:assert/strict';
import { carryPodNetwork, hostNetnsPath, refuseHostNetwork } from '../../../src/task/pod-network.js';
import type { Sandbox } from '../../../src/sandbox/index.js';

const CRI_SANDBOX = { 'io.kubernetes.cri.container-type': 'sandbox' };
const spec = (network?: string | null) => ({
  linux: {
    namespaces: [
      { type: 'pid' },
      ...(network === null ? [] : [{ type: 'network', ...(network ? { path: network } : {}) }]),
    ],
  },
});

function vmSandbox(calls: string[]): Sandbox {
  return {
    attachNetwork: async (p: string) => {
      calls.push(p);
      return '/var/run/netns/lcow-pod';
    },
  } as unknown as Sandbox;
}

describe('pod network in the OCI spec (VM sandbox)', () => {
  it('the CRI sandbox container: the host netns path becomes the guest one (carried in)', async () => {
    const calls: string[] = [];
    const s = spec('/var/run/netns/cni-1234');
    await carryPodNetwork(vmSandbox(calls), s);
    assert.deepEqual(calls, ['/var/run/netns/cni-1234']);
    assert.equal(s.linux.namespaces[1]!.path, '/var/run/netns/lcow-pod');
  });

  it('workload containers (/proc/<sandbox pid>/ns/net, a guest pid) and plain ctr run (no path): untouched', async () => {
    const calls: string[] = [];
    const a = spec('/proc/177/ns/net');
    const b = spec(undefined);
    await carryPodNetwork(vmSandbox(calls), a);
    await carryPodNetwork(vmSandbox(calls), b);
    assert.deepEqual(calls, []);
    assert.equal(a.linux.namespaces[1]!.path, '/proc/177/ns/net');
    assert.equal((b.linux.namespaces[1] as { path?: string }).path, undefined);
  });

  it('hostNetnsPath: the CNI netns file only (not /proc/<pid>, not a new or absent namespace)', () => {
    assert.equal(hostNetnsPath(spec('/var/run/netns/cni-1234')), '/var/run/netns/cni-1234');
    assert.equal(hostNetnsPath(spec('/proc/177/ns/net')), undefined);
    assert.equal(hostNetnsPath(spec(undefined)), undefined);
    assert.equal(hostNetnsPath(spec(null)), undefined);
  });

  it('the process backend (no attachNetwork): host paths stay as they are', async () => {
    const s = spec('/var/run/netns/cni-1234');
    await carryPodNetwork({} as Sandbox, s);
    assert.equal(s.linux.namespaces[1]!.path, '/var/run/netns/cni-1234');
  });

  it('no network namespace (hostNetwork pod, ctr run --net-host) is refused with a clear error; others are not', () => {
    assert.throws(() => refuseHostNetwork(spec(null), CRI_SANDBOX), /hostNetwork pods cannot run in a utility VM/);
    // The guest's root namespace holds the control NIC: never a container's.
    assert.throws(() => refuseHostNetwork(spec(null), {}), /asks for the host's network namespace.*--net-host/);
    assert.throws(
      () => refuseHostNetwork(spec(null), { 'io.kubernetes.cri.container-type': 'container' }),
      /host's network namespace/,
    );
    refuseHostNetwork(spec('/var/run/netns/cni-1'), CRI_SANDBOX);
    refuseHostNetwork(spec('/proc/42/ns/net'), { 'io.kubernetes.cri.container-type': 'container' });
  });
});
