// Which network a container joins, seen from a VM sandbox. CRI gives the sandbox (pause) container the host path
// of the pod's network namespace (/var/run/netns/cni-...), where CNI built the pod's interface: that path means
// nothing in the guest, so the sandbox carries the network in (Sandbox.attachNetwork) and the spec is rewritten
// to the guest namespace. Workload containers name /proc/<sandbox pid>/ns/net: our pids are guest pids, so that
// path is already right in the guest. A network namespace entry without a path (plain `ctr run`) gets a new,
// empty namespace from runc as before. A spec with no network namespace at all asks for the host's network: for a
// CRI sandbox that is a hostNetwork pod, for `ctr run --net-host` the same. A VM has no way to share the node's
// network stack, and the guest's own root namespace holds the UVM's control NIC (the shim <-> agent channel),
// which no container may see: both are refused with a clear error.
import type { Sandbox } from '../sandbox/index.js';
import { failedPrecondition } from './errors.js';

export const CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';

export type SpecWithNamespaces = {
  linux?: { namespaces?: Array<{ type?: string; path?: string }> };
};

/**
 * A container without a network namespace asks for the host's network (a CRI hostNetwork pod, `ctr run
 * --net-host`): refused before anything boots when the backend is a VM. In the guest it would join the root
 * namespace, where the control NIC carrying the shim <-> agent channel lives.
 */
export function refuseHostNetwork(spec: SpecWithNamespaces, annotations: Record<string, string>): void {
  if (spec.linux?.namespaces?.some((n) => n.type === 'network')) return;
  if (annotations[CONTAINER_TYPE_ANNOTATION] === 'sandbox')
    throw failedPrecondition(
      "hostNetwork pods cannot run in a utility VM (the VM has its own kernel and cannot share the node's " +
        'network stack): run them with a runc runtime class (see docs/kubernetes.md)',
    );
  throw failedPrecondition(
    "this container asks for the host's network namespace (e.g. ctr run --net-host), which a utility VM cannot " +
      "share: the guest's own namespace carries the VM's control channel, which containers must never see. " +
      'Run it without host networking, or with a runc runtime',
  );
}

/** The host network namespace file the spec names (CNI's), or undefined (none, new, or a /proc/<pid> one). */
export function hostNetnsPath(spec: SpecWithNamespaces): string | undefined {
  const path = spec.linux?.namespaces?.find((n) => n.type === 'network')?.path;
  return path && !path.startsWith('/proc/') ? path : undefined;
}

/** Rewrites the spec's host netns path to the guest's, carrying the pod network in on first use. */
export async function carryPodNetwork(sandbox: Sandbox, spec: SpecWithNamespaces): Promise<void> {
  if (!sandbox.attachNetwork) return; // host paths are valid as they are (process backend)
  const path = hostNetnsPath(spec);
  if (!path) return;
  spec.linux!.namespaces!.find((n) => n.type === 'network')!.path = await sandbox.attachNetwork(path);
}
