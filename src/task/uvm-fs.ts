// Container filesystems for VM sandboxes (backends whose guest does not see host paths): the snapshot mounts
// containerd passes to Create (overlay...) are mounted on the host at <bundle>/rootfs, as runc's shim does, and
// that directory is shared whole; bind mounts of the OCI spec are shared and their sources rewritten to guest
// paths. A single-file bind mount is bind-mounted alone into a private holder directory under the bundle and that
// directory is shared: sharing the file's parent would hand the guest (the isolation boundary: assume it is
// compromised) every sibling of the file. Everything is undone by releaseContainerFs.
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { basename, isAbsolute, join } from 'node:path';
import { SHARE_CACHE_MODES, type Sandbox, type ShareCache } from '../sandbox/index.js';
import type { Logger } from '../util/log.js';
import { mkdirWithMode } from '../util/private-fs.js';

export interface HostMountSandbox extends Sandbox {
  readonly mountsRootfsOnHost: true;
  trackHostMount(path: string, present: boolean): void;
}

export function mountsRootfsOnHost(s: Sandbox): s is HostMountSandbox {
  return (s as Partial<HostMountSandbox>).mountsRootfsOnHost === true;
}

interface OciMount {
  destination?: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciSpecLike {
  root?: { path?: string; readonly?: boolean };
  mounts?: OciMount[];
  [k: string]: unknown;
}

export interface PreparedFs {
  shareIds: string[];
  hostRootfs?: string;
  /** Holder directories of single-file bind mounts: <holder>/<file name> is a bind mount of the file. */
  fileHolders: string[];
}

/** The OCI mount option that picks a bind mount's guest cache mode (x-: not a kernel option; removed here). */
export const CACHE_OPTION = 'x-lcow.cache=';

/** Splits `x-lcow.cache=MODE` off a mount's options; throws on an unknown mode or a repeated option. */
export function takeCacheOption(options: string[]): { cache?: ShareCache; rest: string[] } {
  const rest: string[] = [];
  let cache: ShareCache | undefined;
  for (const o of options) {
    if (!o.startsWith(CACHE_OPTION)) {
      rest.push(o);
      continue;
    }
    const v = o.slice(CACHE_OPTION.length);
    if (!SHARE_CACHE_MODES.includes(v as ShareCache))
      throw new Error(`mount option ${o}: the cache mode must be one of ${SHARE_CACHE_MODES.join(', ')}`);
    if (cache !== undefined) throw new Error(`mount option ${CACHE_OPTION} given twice`);
    cache = v as ShareCache;
  }
  return { cache, rest };
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    c.stderr.on('data', (d: Buffer) => err.push(d));
    c.on('error', reject);
    c.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')}: ${Buffer.concat(err).toString().trim()}`)),
    );
  });
}

/** Mounts the rootfs on the host, shares it and the spec's bind mounts; rewrites `spec` for the guest. */
export async function prepareContainerFs(
  sandbox: HostMountSandbox,
  bundle: string,
  spec: OciSpecLike,
  rootfs: Array<{ type: string; source: string; target: string; options: string[] }>,
  log: Logger,
): Promise<PreparedFs> {
  const prepared: PreparedFs = { shareIds: [], fileHolders: [] };
  try {
    let hostRoot: string;
    if (rootfs.length > 0) {
      hostRoot = join(bundle, 'rootfs');
      // The mount point, as containerd makes a bundle's rootfs dir (0711), whatever the umask.
      mkdirWithMode(hostRoot, 0o711);
      for (const m of rootfs) {
        if (!/^[a-z0-9_.-]+$/i.test(m.type)) throw new Error(`invalid mount type ${m.type}`);
        const target = m.target ? join(hostRoot, m.target) : hostRoot;
        const opts = m.options.filter((o) => o !== '');
        await run('mount', ['-t', m.type, ...(opts.length ? ['-o', opts.join(',')] : []), m.source, target]);
        if (!m.target) {
          prepared.hostRootfs = hostRoot;
          sandbox.trackHostMount(hostRoot, true);
        }
      }
    } else {
      const p = spec.root?.path ?? 'rootfs';
      hostRoot = isAbsolute(p) ? p : join(bundle, p);
    }
    // A snapshot containerd handed us (mounted above, under the bundle) holds the image's setuid files and file
    // capabilities and lives under root-only directories; a rootfs given by path is just a host directory.
    // A snapshot rootfs is also this container's own writable snapshot: it is shared writable even when
    // root.readonly is set, and runc in the guest makes the root read-only itself, as on a host, after creating
    // the mount points it needs (/etc/resolv.conf, /dev/shm... for CRI's pause container). A 9P share that is
    // read-only would stop runc before that. The guest gets no more than a runc container of its own snapshot
    // gets. A pre-existing directory named by root.path stays read-only.
    const rootShare = await sandbox.addShare(hostRoot, {
      readOnly: rootfs.length > 0 ? false : (spec.root?.readonly ?? false),
      role: rootfs.length > 0 ? 'rootfs-snapshot' : 'host-directory',
    });
    prepared.shareIds.push(rootShare.shareId);
    spec.root = { ...(spec.root ?? {}), path: rootShare.guestPath };

    await shareBindMounts(sandbox, spec, prepared, (file, readOnly) =>
      holdSingleFile(sandbox, bundle, file, readOnly, prepared),
    );
    return prepared;
  } catch (err) {
    await releaseContainerFs(sandbox, prepared, log);
    throw err;
  }
}

/**
 * Shares the spec's bind mounts and rewrites their sources to guest paths. A single file goes through
 * `holdFile` (a holder directory containing only that file); without one (a backend that cannot mount on its
 * host, e.g. hcs) a single-file bind mount is refused rather than sharing the file's whole directory.
 */
export async function shareBindMounts(
  sandbox: Sandbox,
  spec: OciSpecLike,
  prepared: PreparedFs,
  holdFile?: (file: string, readOnly: boolean) => Promise<string>,
): Promise<void> {
  for (const m of spec.mounts ?? []) {
    const opts = m.options ?? [];
    const isBind = m.type === 'bind' || opts.includes('bind') || opts.includes('rbind');
    if (!isBind || !m.source || !isAbsolute(m.source)) continue;
    const readOnly = opts.includes('ro');
    // x-lcow.cache=MODE picks the guest's cache mode for this share; runc must not see it.
    const { cache, rest } = takeCacheOption(opts);
    if (m.options) m.options = rest;
    const st = await stat(m.source);
    if (!st.isDirectory() && !holdFile)
      throw new Error(
        `single-file bind mount ${m.source}: the ${sandbox.backend} sandbox cannot share a single file yet`,
      );
    const dir = st.isDirectory() ? m.source : await holdFile!(m.source, readOnly);
    // Host edits to a bind-mounted directory wake inotify watchers in the container (docs/share-notify.md).
    const share = await sandbox.addShare(dir, { readOnly, role: 'host-directory', cache, notify: st.isDirectory() });
    prepared.shareIds.push(share.shareId);
    m.source = st.isDirectory() ? share.guestPath : join(share.guestPath, basename(m.source));
  }
}

/** Bind-mounts one host file alone into a new holder directory under the bundle; returns the holder. */
async function holdSingleFile(
  sandbox: HostMountSandbox,
  bundle: string,
  file: string,
  readOnly: boolean,
  prepared: PreparedFs,
): Promise<string> {
  const holder = await mkdtemp(join(bundle, '.lcow-file-'));
  prepared.fileHolders.push(holder);
  const target = join(holder, basename(file));
  await writeFile(target, '', { mode: 0o600 });
  await run('mount', ['--bind', file, target]);
  sandbox.trackHostMount(target, true);
  // A bind mount ignores `ro` on creation; only a remount makes it read-only on the host side too.
  if (readOnly) await run('mount', ['-o', 'remount,bind,ro', target]);
  return holder;
}

/** Removes the shares (refcounted by the sandbox) and unmounts the host rootfs. Never throws. */
export async function releaseContainerFs(
  sandbox: Sandbox & Partial<Pick<HostMountSandbox, 'trackHostMount'>>,
  p: PreparedFs,
  log: Logger,
): Promise<void> {
  for (const id of p.shareIds.splice(0).reverse()) {
    await sandbox.removeShare(id).catch((err: unknown) => log.warn('remove share failed', { share: id, error: err }));
  }
  for (const holder of p.fileHolders.splice(0)) {
    for (const name of await readdir(holder).catch(() => [] as string[])) {
      const target = join(holder, name);
      await run('umount', [target]).catch(() =>
        run('umount', ['-l', target]).catch((err: unknown) =>
          log.warn('unmounting a single-file bind failed', { target, error: err }),
        ),
      );
      sandbox.trackHostMount?.(target, false);
    }
    await rm(holder, { recursive: true, force: true }).catch((err: unknown) =>
      log.warn('removing a single-file holder failed', { holder, error: err }),
    );
  }
  if (p.hostRootfs) {
    const root = p.hostRootfs;
    p.hostRootfs = undefined;
    await run('umount', [root]).catch(() =>
      run('umount', ['-l', root]).catch((err: unknown) =>
        log.warn('unmounting the host rootfs failed', { target: root, error: err }),
      ),
    );
    sandbox.trackHostMount?.(root, false);
  }
}
