// HCS UVM configuration: sizing (hcsshim's annotations, then the runtime config, then defaults, through the
// parser every VM backend shares), the guest image (kernel + initrd, or kernel + rootfs VHD) and the vsock ports
// the guest dials on the host. Pure: no Windows calls, tested on any OS.
import { cpus as hostCpus } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { configPicker, defaultGuestDir, positiveInt, uvmSizing } from '../sizing.js';

/** Guest vsock ports on the host (services <port>-facb-11e6-bd58-64006a7986d3). */
export const HCS_CONTROL_PORT = 1024;
export const HCS_P9_PORT = 564;
/** Where the guest fetches the per-UVM secret once at boot (there is no fw_cfg under Hyper-V). */
export const HCS_SECRET_PORT = 1025;

export interface HcsConfig {
  kernel: string;
  /** Exactly one of initrd and rootfsVhd. */
  initrd?: string;
  rootfsVhd?: string;
  memoryMiB: number;
  cpus: number;
  bootTimeoutMs: number;
  debug: boolean;
  /** The document's Owner (shown by `hcsdiag list`). */
  owner: string;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);

function absolute(p: string, what: string): string {
  // HCS resolves nothing: the VM worker process opens exactly the path it is given.
  if (!isAbsolute(p)) throw new Error(`${what} must be an absolute path (got ${JSON.stringify(p)})`);
  return resolve(p);
}

/**
 * Annotations win over the runtime config (`memory_mb`, `cpus`, or the `[hcs]` table), then defaults:
 * 1024 MiB, and 2 vCPUs (1 on a single-CPU host), as hcsshim. The guest image: `kernel` + `initrd` (default
 * <guest_dir>/vmlinuz and initrd-full.img: the whole image as one initramfs, since HCS attaches no virtio-blk
 * disk for the QEMU backend's erofs root; `make windows` builds it), or `rootfs_vhd` instead of the initrd.
 */
export function hcsConfig(runtime: Record<string, unknown>, annotations: Record<string, string>): HcsConfig {
  const pick = configPicker(runtime, 'hcs');
  const guestDir = str(pick('guest_dir')) ?? defaultGuestDir();
  const { memoryMiB, cpus } = uvmSizing(pick, annotations, {
    memoryMiB: 1024,
    cpus: Math.min(2, Math.max(1, hostCpus().length)),
  });
  const rootfsVhd = str(pick('rootfs_vhd'));
  const initrd = str(pick('initrd'));
  if (rootfsVhd && initrd) throw new Error('set either initrd or rootfs_vhd, not both');
  return {
    kernel: absolute(str(pick('kernel')) ?? join(guestDir, 'vmlinuz'), 'kernel'),
    initrd: rootfsVhd ? undefined : absolute(initrd ?? join(guestDir, 'initrd-full.img'), 'initrd'),
    rootfsVhd: rootfsVhd ? absolute(rootfsVhd, 'rootfs_vhd') : undefined,
    memoryMiB,
    cpus,
    bootTimeoutMs: positiveInt(pick('boot_timeout_ms')) ?? 120_000,
    debug: pick('debug') === true || process.env.LCOW_GUEST_DEBUG === '1',
    owner: str(pick('owner')) ?? 'containerd-shim-lcow-v1',
  };
}

/** Our words of the guest kernel command line: where the agent dials and fetches its secret. No secret here. */
export function guestKernelArgs(cfg: Pick<HcsConfig, 'debug' | 'rootfsVhd'>): string[] {
  // Booted from a disk, the root is a real filesystem (runc can pivot_root): no copy into a tmpfs first.
  const args = cfg.rootfsVhd ? ['lcow.noswitch=1'] : [];
  args.push(
    'lcow.hv=1',
    `lcow.dial=vsock://2:${HCS_CONTROL_PORT}`,
    `lcow.p9=vsock://2:${HCS_P9_PORT}`,
    `lcow.token=vsock://2:${HCS_SECRET_PORT}`,
  );
  if (cfg.debug) args.push('lcow.debug=1');
  return args;
}
