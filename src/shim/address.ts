// Shim socket address, computed exactly as containerd's runc shim does (runtime/v2/shim SocketAddress):
// unix:///run/containerd/s/<hex sha256(filepath.Join(address, namespace, grouping))>.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { join, posix } from 'node:path';

export const SOCKET_ROOT = '/run/containerd/s';
export const GROUP_ANNOTATIONS = ['io.containerd.runc.v2.group', 'io.kubernetes.cri.sandbox-id'];

export function socketAddress(grpcAddress: string, namespace: string, grouping: string, root = SOCKET_ROOT): string {
  const d = createHash('sha256')
    .update(posix.join(grpcAddress, namespace, grouping))
    .digest('hex');
  return `unix://${root}/${d}`;
}

export function socketPath(address: string): string {
  return address.startsWith('unix://') ? address.slice('unix://'.length) : address;
}

/** First grouping annotation in the bundle's config.json, else the id. */
export async function groupingOf(bundle: string, id: string): Promise<string> {
  try {
    const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as {
      annotations?: Record<string, string>;
    };
    for (const k of GROUP_ANNOTATIONS) {
      const v = spec.annotations?.[k];
      if (v) return v;
    }
  } catch {
    // no spec: group by id
  }
  return id;
}

export function canConnect(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), timeoutMs);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}
