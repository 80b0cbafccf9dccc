// `delete`: runs on every ttrpc client close and when containerd gives up on a shim. Idempotent, per id.
// When the serving shim is alive it only makes sure this container is gone; when it is dead it tears the
// whole sandbox down from the record in the bundle. Prints only a marshalled DeleteResponse.
// It runs on containerd's critical path (after every Shutdown), so it stays light: no protobuf runtime (the
// three-field reply is encoded by hand), no sandbox backends unless the shim is dead.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { SandboxRecord } from '../sandbox/sandbox.js';
import { SANDBOX_RECORD_FILE } from '../task/record.js';
import { canConnect } from './address.js';
import type { ShimFlags } from './flags.js';
import { isPipePath } from './npipe.js';

function varint(out: number[], v: number | bigint): void {
  let n = BigInt(v);
  while (n > 0x7fn) {
    out.push(Number(n & 0x7fn) | 0x80);
    n >>= 7n;
  }
  out.push(Number(n));
}

/** containerd.task.v2.DeleteResponse{pid=1, exit_status=2, exited_at=3 Timestamp{seconds=1, nanos=2}}. */
export function encodeDeleteResponse(pid: number, exitStatus: number, exitedAt: Date): Uint8Array {
  const ms = exitedAt.getTime();
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms - seconds * 1000) * 1_000_000;
  const ts: number[] = [];
  if (seconds !== 0) {
    ts.push(0x08);
    varint(ts, seconds);
  }
  if (nanos !== 0) {
    ts.push(0x10);
    varint(ts, nanos);
  }
  const out: number[] = [];
  if (pid !== 0) {
    out.push(0x08);
    varint(out, pid);
  }
  if (exitStatus !== 0) {
    out.push(0x10);
    varint(out, exitStatus);
  }
  out.push(0x1a);
  varint(out, ts.length);
  out.push(...ts);
  return Uint8Array.from(out);
}

interface BundleRecord {
  shimPid: number;
  namespace: string;
  pod: string;
  owner: boolean;
  sandbox: SandboxRecord;
}

export async function shimAlive(pid: number, bundle: string, platform: NodeJS.Platform): Promise<boolean> {
  if (platform === 'win32') {
    // No /proc to tell a reused pid from the daemon: it is alive when its pipe answers (a name under
    // ProtectedPrefix\Administrators nobody unprivileged can create).
    try {
      const address = (await readFile(join(bundle, 'address'), 'utf8')).trim();
      return isPipePath(address) && (await canConnect(address));
    } catch {
      return false;
    }
  }
  if (!pid || pid === process.pid) return false;
  try {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('containerd-shim-lcow');
  } catch {
    return false;
  }
}

function runcDelete(root: string, id: string): Promise<void> {
  return new Promise((resolve) => {
    const c = spawn('runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
}

/** Whether something accepts connections on the bundle's shim socket (a live shim serves it). */
async function socketServed(bundle: string): Promise<boolean> {
  try {
    const address = (await readFile(join(bundle, 'address'), 'utf8')).trim();
    return address.startsWith('unix://') && (await canConnect(address.slice('unix://'.length), 2000));
  } catch {
    return false;
  }
}

/** Mount points at or under `dir`, deepest first (from /proc/self/mountinfo; octal escapes decoded). */
async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const out: string[] = [];
  for (const line of info.split('\n')) {
    const field = line.split(' ')[4];
    if (!field) continue;
    const mp = field.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (mp === dir || mp.startsWith(`${dir}/`)) out.push(mp);
  }
  return out.sort((a, b) => b.length - a.length);
}

function umount(path: string): Promise<void> {
  return new Promise((resolve) => {
    const c = spawn('umount', ['-l', path], { stdio: 'ignore' });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
}

export async function deleteAction(
  flags: ShimFlags,
  platform: NodeJS.Platform = process.platform,
): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  let status = 255;
  let rec: BundleRecord | undefined;
  try {
    rec = JSON.parse(await readFile(join(bundle, SANDBOX_RECORD_FILE), 'utf8')) as BundleRecord;
  } catch {
    rec = undefined;
  }
  if (rec) status = 137;
  const alive = rec ? await shimAlive(rec.shimPid, bundle, platform) : await socketServed(bundle);
  if (alive && rec) {
    // Usually the shim already deleted it (Delete runs before Shutdown): only then is runc skipped.
    const root = join(rec.sandbox.stateDir, 'runc');
    if (rec.sandbox.backend === 'process' && existsSync(join(root, flags.id))) await runcDelete(root, flags.id);
  } else if (!alive) {
    // The serving shim is dead: its socket file stays behind unless we remove it.
    try {
      const address = (await readFile(join(bundle, 'address'), 'utf8')).trim();
      if (address.startsWith('unix:///run/containerd/s/')) await unlink(address.slice('unix://'.length));
    } catch {
      // no address or already gone
    }
    if (rec) {
      const { cleanupSandboxRecord } = await import('../sandbox/index.js');
      await cleanupSandboxRecord(rec.sandbox).catch((err: unknown) => {
        process.stderr.write(`sandbox cleanup: ${String(err)}\n`);
      });
    }
    // What the dead shim mounted under the bundle and had not recorded yet (it died mid-Create): the rootfs,
    // single-file holders. containerd removes the bundle next and must not meet a mount there.
    for (const m of await mountsUnder(bundle)) await umount(m);
  }
  return encodeDeleteResponse(0, status, new Date());
}
