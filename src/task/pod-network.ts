// Which network a container joins, seen from a VM sandbox. CRI gives the sandbox (pause) container the host path
// of the pod's network namespace (/var/run/netns/cni-...), where CNI built the pod's interface: that path means
// nothing in the guest, so the sandbox carries the network in (Sandbox.attachNetwork) and the spec is rewritten
// to the guest namespace. Workload containers name /proc/<sandbox pid>/ns/net: our pids are guest pids, so that
// path is already right in the guest. A network namespace entry without a path (plain `ctr run`) gets a new,
// empty namespace from runc as before. A CRI sandbox with no network namespace at all is a hostNetwork pod: a
// VM has no way to share the node's network stack, so it is refused with a clear error.
import type { Sandbox } from '../sandbox/index.js';
import { failedPrecondition } from './errors.js';

export const CONTAINER_TYPE_ANNOTATION = 'io.kubernetes.cri.container-type';

export type SpecWithNamespaces = {
  linux?: { namespaces?: Array<{ type?: string; path?: string }> };
};

/**
 * A CRI sandbox container without a network namespace is a hostNetwork pod: refused before anything boots when
 * the backend is a VM (`isolated`).
 */
export function refuseHostNetwork(spec: SpecWithNamespaces, annotations: Record<string, string>): void {
  if (annotations[CONTAINER_TYPE_ANNOTATION] !== 'sandbox') return;
  if (spec.linux?.namespaces?.some((n) => n.type === 'network')) return;
  throw failedPrecondition(
    "hostNetwork pods cannot run in a utility VM (the VM has its own kernel and cannot share the node's " +
      'network stack): run them with a runc runtime class (see docs/kubernetes.md)',
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
