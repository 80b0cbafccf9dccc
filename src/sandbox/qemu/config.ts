// QEMU UVM configuration: sizing (runtime config TOML, then hcsshim's annotations), guest image paths, the
// accelerator probe (KVM only if it really runs a guest here, else TCG) and the command line.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { release } from 'node:os';
import { dirname, join } from 'node:path';
import type { Logger } from '../../util/log.js';
import { mkdirPrivate, writePrivateFile } from '../../util/private-fs.js';
import { parseShareSecurity, type ShareSecurity } from '../../p9/security.js';
import { configPicker, defaultGuestDir, positiveInt as num, uvmSizing } from '../sizing.js';
import { ROOTFS_SHARE_CACHE_MODES, SHARE_CACHE_MODES, type ShareCache } from '../sandbox.js';
import { parseTransportSetting, type TransportSetting } from './vsock.js';

export { CPU_ANNOTATION, MEMORY_ANNOTATION, defaultGuestDir } from '../sizing.js';
/** The guest's address on QEMU user networking (eth0); the agent listens there, QEMU's hostfwd targets it. */
export const GUEST_ADDR = '10.0.2.15';
export const GUEST_CONTROL_PORT = 1024;
export const GUEST_P9_PORT = 564;

export type Accel = 'kvm' | 'tcg';

/** The OCI runtimes the guest image carries (hack/guest/build-image.sh); the agent runs containers with one. */
export const GUEST_RUNTIMES = ['runc', 'crun'] as const;
export type GuestRuntime = (typeof GUEST_RUNTIMES)[number];
/** The default OCI runtime in the guest: the one place to flip it. */
export const DEFAULT_GUEST_RUNTIME: GuestRuntime = 'runc';

export interface QemuConfig {
  binary: string;
  kernel: string;
  initrd: string;
  /**
   * The read-only root image (erofs) on virtio-blk; the initrd is then only the early stage that mounts it.
   * Default: <guest_dir>/rootfs.erofs when it exists (config `rootfs`; "" for an initrd-only image).
   */
  rootfs: string;
  memoryMiB: number;
  cpus: number;
  /** Forced accelerator (config `accel` or LCOW_QEMU_ACCEL); undefined: probe. */
  accel?: Accel;
  bootTimeoutMs: number;
  debug: boolean;
  /**
   * virtio-balloon with free page reporting (config `free_page_reporting`, default on): the guest hands pages it
   * freed back to QEMU, which drops them. The boot frees a lot (the initrd image after unpacking, the initramfs
   * after the switch to tmpfs), so this is what keeps QEMU's anonymous RSS near what the guest really uses.
   */
  freePageReporting: boolean;
  /**
   * 9P share security models (docs/security.md): `rootfs_share_security` for container rootfs snapshots
   * (default passthrough-existing: image setuid files and capabilities keep working; the snapshot lives under
   * root-only directories), `host_share_security` for every other host directory (default mapped).
   */
  rootfsShareSecurity: ShareSecurity;
  hostShareSecurity: ShareSecurity;
  /**
   * The guest's v9fs cache mode for shares that do not ask for one (config `share_cache`, default `mmap`:
   * writable shared mmap works, reads and writes stay uncached). A bind mount chooses its own with the OCI
   * mount option `x-lcow.cache=none|mmap` (task/uvm-fs.ts).
   */
  shareCache: ShareCache;
  /**
   * The cache mode of container rootfs snapshots (config `rootfs_share_cache`, default `mmap`). `loose` is
   * correct (the snapshot is this container's own; the host does not change it while it runs) and much faster
   * for path-heavy starts, but v9fs then keeps a fid for every cached dentry, and a container touching more than
   * the server's fid bound of distinct paths (a big node_modules tree) would get ENFILE: opt-in for now.
   */
  rootfsShareCache: ShareCache;
  /**
   * Host changes under bind mounts reach inotify watchers in the guest (docs/share-notify.md): config
   * `share_notify` (default on), `share_notify_pin_dirs` (directories per share the guest keeps referenced,
   * default 4096), `share_notify_max_dirs` (host directories watched per share, default 65536),
   * `share_notify_uid` (the replay fsuid, default 4294901760; never a uid a container uses).
   */
  shareNotify: { enabled: boolean; pinDirs: number; maxDirs: number; uid: number };
  /**
   * UVM templates (config `templates`, default on; LCOW_TEMPLATES=0 turns them off): pods start by restoring a
   * snapshot of a booted UVM instead of booting (src/sandbox/qemu/template.ts).
   */
  templates: boolean;
  /** Where templates live (config `template_dir` or LCOW_TEMPLATE_DIR); default: see template.ts. */
  templateDir?: string;
  /**
   * TCG only: the translated-code cache in MiB (config `tcg_tb_size_mb` or LCOW_TCG_TB_MB; default 64; 0:
   * QEMU's default, up to 1 GiB). Every TCG VM fills its own cache as the guest runs: measured here, a cold boot
   * left 362 MiB of private memory in QEMU with QEMU's default and 224 MiB with 32 MiB. A full cache is flushed
   * and refilled, which costs time only to guests that run much more code than that.
   */
  tcgTbSizeMiB: number;
  /**
   * Whether the guest agent's Node compiles JavaScript to machine code (config `agent_jit` or LCOW_AGENT_JIT:
   * `auto`, `on`, `off`). `auto` (default): off in a UVM that boots cold under TCG, on with KVM and in templates
   * (and so in their clones). Under TCG every code blob V8 generates is translated again by QEMU, while the
   * interpreter's handlers live in the node binary and are translated once: a cold `ctr run --rm true` took 12.2 s
   * jitless against 14.0 s with JIT. A clone is the opposite case: its agent's hot code was compiled before the
   * snapshot, and jitless it took 6.2 s against about 3 s.
   */
  agentJit: AgentJit;
  /**
   * The control and 9P channels (config `transport` or LCOW_QEMU_TRANSPORT): `auto` (default: virtio-vsock when
   * the host can, else tcp), `vsock`, `tcp` (tcp+token through hostfwd). See vsock.ts.
   */
  transport: TransportSetting;
  /**
   * The OCI runtime the guest agent runs containers with (config `guest_runtime` or LCOW_GUEST_RUNTIME: `runc` or
   * `crun`; default DEFAULT_GUEST_RUNTIME). Passed on the kernel command line (`lcow.runtime=`), so a template is
   * built per runtime; a guest image without that binary fails the boot saying so.
   */
  guestRuntime: GuestRuntime;
}

export const DEFAULT_REPLAY_UID = 0xffff0000;

/**
 * Sizing: annotations win over the runtime config (`memory_mb`, `cpus` or `[qemu]` table), then defaults.
 * Defaults: 1024 MiB; 2 vCPUs with KVM, 1 with TCG (a second TCG vCPU slows boot on small hosts).
 */
export function qemuConfig(runtime: Record<string, unknown>, annotations: Record<string, string>): QemuConfig {
  const pick = configPicker(runtime, 'qemu');
  const guestDir = typeof pick('guest_dir') === 'string' ? (pick('guest_dir') as string) : defaultGuestDir();
  const accelRaw = (process.env.LCOW_QEMU_ACCEL || (pick('accel') as string | undefined) || '').trim();
  const { memoryMiB, cpus } = uvmSizing(pick, annotations, { memoryMiB: 1024, cpus: 0 });
  const shareCache = oneOf(pick('share_cache') ?? 'mmap', 'share_cache', SHARE_CACHE_MODES);
  const rootfsShareCache = oneOf(pick('rootfs_share_cache') ?? 'mmap', 'rootfs_share_cache', ROOTFS_SHARE_CACHE_MODES);
  return {
    binary: (pick('qemu_binary') as string | undefined) ?? 'qemu-system-x86_64',
    kernel: (pick('kernel') as string | undefined) ?? defaultKernel(guestDir),
    initrd: (pick('initrd') as string | undefined) ?? join(guestDir, 'initrd.img'),
    rootfs:
      (pick('rootfs') as string | undefined) ??
      (existsSync(join(guestDir, 'rootfs.erofs')) ? join(guestDir, 'rootfs.erofs') : ''),
    memoryMiB,
    cpus,
    accel: accelRaw === 'kvm' || accelRaw === 'tcg' ? accelRaw : undefined,
    bootTimeoutMs: num(pick('boot_timeout_ms')) ?? 120_000,
    debug: pick('debug') === true || process.env.LCOW_GUEST_DEBUG === '1',
    freePageReporting: pick('free_page_reporting') !== false,
    rootfsShareSecurity: parseShareSecurity(pick('rootfs_share_security') ?? 'passthrough-existing'),
    hostShareSecurity: parseShareSecurity(pick('host_share_security') ?? 'mapped'),
    shareCache,
    rootfsShareCache,
    shareNotify: {
      enabled: pick('share_notify') !== false,
      pinDirs: num(pick('share_notify_pin_dirs')) ?? 4096,
      maxDirs: num(pick('share_notify_max_dirs')) ?? 65_536,
      uid: replayUid(pick('share_notify_uid')),
    },
    tcgTbSizeMiB: tbSize(process.env.LCOW_TCG_TB_MB ?? pick('tcg_tb_size_mb')),
    agentJit: agentJit(process.env.LCOW_AGENT_JIT ?? pick('agent_jit')),
    templates: process.env.LCOW_TEMPLATES ? process.env.LCOW_TEMPLATES !== '0' : pick('templates') !== false,
    transport: parseTransportSetting(process.env.LCOW_QEMU_TRANSPORT, pick('transport')),
    guestRuntime: oneOf(
      process.env.LCOW_GUEST_RUNTIME || pick('guest_runtime') || DEFAULT_GUEST_RUNTIME,
      'guest_runtime',
      GUEST_RUNTIMES,
    ),
    templateDir:
      process.env.LCOW_TEMPLATE_DIR ||
      (typeof pick('template_dir') === 'string' ? (pick('template_dir') as string) : undefined),
  };
}

export const AGENT_JIT_SETTINGS = ['auto', 'on', 'off'] as const;
export type AgentJit = (typeof AGENT_JIT_SETTINGS)[number];

/** agent_jit: absent -> auto; anything but auto, on, off is refused, naming the key. */
function agentJit(v: unknown): AgentJit {
  if (v === undefined || v === '') return 'auto';
  if (typeof v === 'string' && (AGENT_JIT_SETTINGS as readonly string[]).includes(v)) return v as AgentJit;
  throw new Error(`agent_jit = ${JSON.stringify(v)}: want one of ${AGENT_JIT_SETTINGS.join(', ')}`);
}

/**
 * Whether the agent of a UVM on `accel` runs with its JIT (agent_jit; auto: not when the UVM boots cold under TCG,
 * but in a template, whose clones run the code compiled before the snapshot).
 */
export function agentJitOn(setting: AgentJit, accel: Accel, template: boolean): boolean {
  return setting === 'auto' ? accel !== 'tcg' || template : setting === 'on';
}

/** tcg_tb_size_mb: absent -> 64, 0 -> QEMU's own default, else the number. */
function tbSize(v: unknown): number {
  if (v === undefined || v === null || v === '') return 64;
  if (Number(v) === 0) return 0;
  return num(v) ?? 64;
}

/** A setting that must be one of `allowed`, refused naming the key and the choices. */
function oneOf<T extends string>(v: unknown, key: string, allowed: readonly T[]): T {
  if (!allowed.includes(v as T))
    throw new Error(`${key} must be one of ${allowed.join(', ')}, not ${JSON.stringify(v)}`);
  return v as T;
}

function replayUid(v: unknown): number {
  if (v === undefined) return DEFAULT_REPLAY_UID;
  const n = num(v);
  if (n === undefined || n >= 0xffffffff)
    throw new Error(`share_notify_uid must be in 1..4294967294, not ${String(v)}`);
  return n;
}

let probeMemo: Promise<Accel> | undefined;

/**
 * KVM when it really runs a guest, else TCG. /dev/kvm existing is not enough: on some hosts KVM_RUN never
 * makes progress. Boot the guest kernel with KVM and a short deadline, wait for its first console line. The
 * answer is cached per host boot in /run/lcow/accel.json (key: host kernel, QEMU binary, /dev/kvm).
 */
export function probeAccel(cfg: QemuConfig, log: Logger, cacheFile = '/run/lcow/accel.json'): Promise<Accel> {
  if (cfg.accel) return Promise.resolve(cfg.accel);
  probeMemo ??= (async (): Promise<Accel> => {
    if (!existsSync('/dev/kvm')) {
      log.info('no /dev/kvm: using TCG (software emulation)');
      return 'tcg';
    }
    let key = release();
    try {
      key += `|${statSync('/dev/kvm').ino}|${execFileSync(cfg.binary, ['--version'], { encoding: 'utf8' }).split('\n')[0]}`;
    } catch {
      // keep the partial key
    }
    try {
      const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as { key: string; accel: Accel; why?: string };
      if (cached.key === key) {
        if (cached.accel === 'tcg') log.info(`KVM unusable on this host (${cached.why ?? 'cached probe'}): using TCG`);
        return cached.accel;
      }
    } catch {
      // no cache
    }
    const why = await kvmRunsGuest(cfg);
    const accel: Accel = why === undefined ? 'kvm' : 'tcg';
    if (accel === 'tcg') log.info(`KVM unusable on this host (${why}): using TCG`);
    try {
      // The shim's state root: 0700 and the cache 0600 whatever the umask (nobody else may plant a verdict).
      mkdirPrivate(dirname(cacheFile));
      writePrivateFile(cacheFile, JSON.stringify({ key, accel, why, probedAt: new Date().toISOString() }) + '\n');
    } catch {
      // not cached
    }
    return accel;
  })();
  return probeMemo;
}

/**
 * The guest image's kernel: the uncompressed vmlinux when `make guest` could extract one (an ELF with the PVH entry
 * note, booted without firmware real-mode setup or decompressor: seconds less per cold boot under TCG), else the
 * bzImage. hack/guest/extract-vmlinux.sh says more.
 */
export function defaultKernel(guestDir: string): string {
  const vmlinux = join(guestDir, 'vmlinux');
  return existsSync(vmlinux) ? vmlinux : join(guestDir, 'vmlinuz');
}

/**
 * The flags every guest we start shares: no default devices or user config, no display, no reboot (a guest
 * panic or power-off ends QEMU), the serial console on stdio, direct kernel boot.
 */
export function headlessKernelBootArgs(kernel: string): string[] {
  return ['-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-serial', 'stdio', '-kernel', kernel];
}

/**
 * The guest image on the command line: direct kernel boot with the early initrd, and the root image as a
 * read-only virtio-blk disk (/dev/vda: the first and only disk). QEMU reads it through the host's page cache,
 * which every UVM shares.
 */
export function guestImageArgs(kernel: string, initrd: string, rootfs: string): string[] {
  const args = [...headlessKernelBootArgs(kernel), '-initrd', initrd];
  if (rootfs) {
    if (rootfs.includes(',')) throw new Error(`root image path ${rootfs} must not contain a comma`);
    args.push(
      '-drive',
      `file=${rootfs},if=none,id=rootfs,format=raw,readonly=on`,
      '-device',
      'virtio-blk-pci,drive=rootfs',
    );
  }
  return args;
}

/** undefined when a KVM guest printed its first kernel line in time; otherwise why not. */
export function kvmRunsGuest(cfg: QemuConfig, deadlineMs = 6000): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn(
      cfg.binary,
      [
        '-accel',
        'kvm',
        '-m',
        '256',
        ...headlessKernelBootArgs(cfg.kernel),
        '-append',
        'console=ttyS0 panic=-1 rdinit=/nonexistent',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    let settled = false;
    const finish = (why: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(why);
    };
    const timer = setTimeout(() => finish(`a KVM guest printed nothing in ${deadlineMs} ms`), deadlineMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('Linux version')) finish(undefined);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', (e) => finish(`cannot run ${cfg.binary}: ${e.message}`));
    child.on('exit', (code) => finish(`qemu -accel kvm exited with ${code}: ${err.trim().split('\n').pop() ?? ''}`));
  });
}

export interface CommandLineInputs {
  cfg: QemuConfig;
  accel: Accel;
  cpus: number;
  name: string;
  qmpSocket: string;
  tokenFile: string;
  /** tcp+token: host ports (127.0.0.1) QEMU forwards to the agent's control and 9P listeners (hostfwd). */
  controlPort?: number;
  p9Port?: number;
  /**
   * virtio-vsock instead (no user network, no hostfwd): the guest's CID, and the file holding the host ports the
   * agent dials (fw_cfg opt/lcow/vsock, like the token).
   */
  vsock?: { cid: number; portsFile: string };
  /**
   * Templates: guest RAM in a file (shared: the template's own boot, its RAM saved there; private: a clone,
   * copy-on-write over the template's pages), a vmgenid device (the guest kernel reseeds its RNG when the
   * generation id changes at restore), and -incoming defer (a clone waits for its device state over QMP).
   */
  ramFile?: { path: string; shared: boolean };
  vmgenid?: boolean;
  incoming?: boolean;
}

/**
 * argv (without the binary). The secret is only referenced by file (fw_cfg), never on the command line. The
 * channels: tcp+token (controlPort, p9Port): user mode networking, restrict=on (the guest reaches nothing
 * outside, no guestfwd: not the host either), and two hostfwd rules from the host's loopback to the agent's
 * listeners; the shim dials in. vsock: a vhost-vsock-pci device with the guest's CID and no network device at
 * all (a pod network is hot-added, podnet.ts); the agent dials the host's listeners at the ports fw_cfg names.
 */
export function qemuArgs(i: CommandLineInputs): string[] {
  const fwd = (hostPort: number, guestPort: number): string => `hostfwd=tcp:127.0.0.1:${hostPort}-:${guestPort}`;
  const cmdline = [
    'console=ttyS0',
    'quiet',
    'loglevel=3',
    'panic=-1',
    'tsc=reliable',
    'no_timer_check',
    'noreplace-smp',
    'i8042.noaux',
    'i8042.nomux',
    'i8042.nopnp',
    'i8042.dumbkbd',
    'cryptomgr.notests',
    'random.trust_cpu=on',
  ];
  let channels: string[];
  if (i.vsock) {
    const { cid, portsFile } = i.vsock;
    if (!Number.isInteger(cid) || cid <= 2 || cid >= 0xffffffff) throw new Error(`invalid guest CID ${cid}`);
    if (portsFile.includes(',')) throw new Error(`vsock ports file ${portsFile} must not contain a comma`);
    cmdline.push('lcow.transport=vsock');
    channels = [
      '-fw_cfg',
      `name=opt/lcow/vsock,file=${portsFile}`,
      '-device',
      `vhost-vsock-pci,id=vsock0,guest-cid=${cid}`,
    ];
  } else {
    if (i.controlPort === undefined || i.p9Port === undefined) throw new Error('tcp+token needs two host ports');
    cmdline.push(
      `lcow.accept=tcp+token://${GUEST_ADDR}:${GUEST_CONTROL_PORT}`,
      `lcow.p9accept=tcp+token://${GUEST_ADDR}:${GUEST_P9_PORT}`,
    );
    channels = [
      '-netdev',
      ['user', 'id=n0', 'restrict=on', fwd(i.controlPort, GUEST_CONTROL_PORT), fwd(i.p9Port, GUEST_P9_PORT)].join(','),
      '-device',
      'virtio-net-pci,netdev=n0',
    ];
  }
  if (i.cfg.debug) cmdline.push('lcow.debug=1');
  // Validated by qemuConfig; checked again here because it goes on a command line.
  if (!GUEST_RUNTIMES.includes(i.cfg.guestRuntime)) throw new Error(`invalid guest runtime ${i.cfg.guestRuntime}`);
  cmdline.push(`lcow.runtime=${i.cfg.guestRuntime}`);
  if (!agentJitOn(i.cfg.agentJit, i.accel, i.ramFile !== undefined)) cmdline.push('lcow.jitless=1');
  return [
    '-name',
    i.name,
    '-accel',
    i.accel === 'tcg' && i.cfg.tcgTbSizeMiB > 0 ? `tcg,tb-size=${i.cfg.tcgTbSizeMiB}` : i.accel,
    ...(i.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-machine',
    i.ramFile ? 'pc,memory-backend=ram0' : 'pc',
    '-m',
    String(i.cfg.memoryMiB),
    ...(i.ramFile
      ? [
          '-object',
          `memory-backend-file,id=ram0,size=${i.cfg.memoryMiB}M,mem-path=${i.ramFile.path},share=${i.ramFile.shared ? 'on' : 'off'}`,
        ]
      : []),
    '-smp',
    String(i.cpus),
    ...guestImageArgs(i.cfg.kernel, i.cfg.initrd, i.cfg.rootfs),
    '-append',
    cmdline.join(' '),
    '-qmp',
    `unix:${i.qmpSocket},server=on,wait=off`,
    '-fw_cfg',
    `name=opt/lcow/token,file=${i.tokenFile}`,
    ...channels,
    ...(i.cfg.freePageReporting ? ['-device', 'virtio-balloon-pci,free-page-reporting=on'] : []),
    ...(i.vmgenid ? ['-device', 'vmgenid'] : []),
    ...(i.incoming ? ['-incoming', 'defer'] : []),
  ];
}
