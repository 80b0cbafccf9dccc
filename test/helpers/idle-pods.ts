// Idle pods for memory measurements (the targets bench, hack/pod-memory.ts): each `sleep 3600` in its own pod
// (sandbox-id = container id), the pod's QEMU and shim daemon found by id, all of them killed and removed again.
import type { PrivateContainerd } from './containerd.js';
import { pidsWhere, qemuPidsOfPod } from './host-state.js';

const RUNTIME = 'io.containerd.lcow.v1';

/** Starts one idle pod per id (extra: ctr run flags, e.g. a runtime config path); throws naming the one that failed. */
export async function startIdlePods(
  cd: PrivateContainerd,
  image: string,
  ids: string[],
  extra: string[] = [],
): Promise<void> {
  for (const id of ids) {
    const r = await cd.ctr(
      [
        'run',
        '-d',
        '--runtime',
        RUNTIME,
        ...extra,
        '--annotation',
        `io.kubernetes.cri.sandbox-id=${id}`,
        image,
        id,
      ].concat(['sleep', '3600']),
      { timeoutMs: 300_000 },
    );
    if (r.code !== 0) throw new Error(`idle pod ${id}: ${r.stderr}`);
  }
}

/** The pod's QEMU and shim daemon; throws unless there is exactly one of each. */
export function podProcesses(id: string): { qemu: number; shim: number } {
  const qemu = qemuPidsOfPod(id);
  const shim = pidsWhere(
    (a) => a.some((x) => x.includes('containerd-shim-lcow-v1')) && a.includes(id) && a.includes('serve'),
  );
  if (qemu.length !== 1 || shim.length !== 1) throw new Error(`pod ${id}: qemu ${qemu} shim ${shim}`);
  return { qemu: qemu[0]!, shim: shim[0]! };
}

/** Kills every pod's task, then deletes tasks (retrying while they exit) and containers. */
export async function removeIdlePods(cd: PrivateContainerd, ids: string[]): Promise<void> {
  for (const id of ids) await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
  for (const id of ids) {
    for (let j = 0; j < 100; j++) {
      const r = await cd.ctr(['task', 'delete', id]);
      if (r.code === 0 || /not found/.test(r.stderr)) break;
      await new Promise((r2) => setTimeout(r2, 200));
    }
    await cd.ctr(['container', 'rm', id]);
  }
}
