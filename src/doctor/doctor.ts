// `lcowctl doctor`: checks that this host can run lcow pods and says what to fix. Every fact about the host comes
// through HostProbes (probes.ts has the real ones), so the checks are plain functions a unit test drives with
// injected answers. Statuses: ok, info (nothing to fix), warn (pods run, degraded), fail (pods will not start).
import { parse as parseToml } from 'smol-toml';
import { qemuConfig, type QemuConfig } from '../sandbox/qemu/config.js';

export type Status = 'ok' | 'info' | 'warn' | 'fail';

export interface CheckResult {
  id: string;
  title: string;
  status: Status;
  detail: string;
  /** What to do about it (warn and fail). */
  fix?: string;
}

export interface Report {
  checks: CheckResult[];
  summary: Record<Status, number>;
  exitCode: number;
}

/** Exit codes: 0 healthy, 1 at least one failure, 2 usage error, 3 warnings only. */
export const EXIT = { ok: 0, fail: 1, usage: 2, warn: 3 } as const;

export interface FileFacts {
  isFile: boolean;
  isDirectory: boolean;
  isSymlink: boolean;
  size: number;
  mode: number;
  uid: number;
}

export interface HostProbes {
  /** lstat; undefined when the path does not exist. */
  stat(path: string): FileFacts | undefined;
  /** undefined when `path` opens read-write, else the errno code. */
  openReadWrite(path: string): string | undefined;
  /** File contents; undefined when unreadable. */
  readFile(path: string): string | undefined;
  /** Runs a command (bounded time); undefined when it cannot be started (not installed). */
  run(cmd: string, args: string[]): Promise<{ code: number | null; output: string } | undefined>;
  /** The executable `name` on $PATH, or undefined. */
  which(name: string): string | undefined;
  /** undefined when a guest runs under KVM with this config; otherwise why not. */
  kvmRunsGuest(cfg: QemuConfig): Promise<string | undefined>;
  nodeVersion: string;
}

export interface DoctorOptions {
  /** The lcow runtime TOML (default: the ConfigPath of the lcow runtime in the containerd config, if any). */
  configPath?: string;
  /** containerd's config (default /etc/containerd/config.toml). */
  containerdConfigPath?: string;
}

export const RUNTIME_TYPE = 'io.containerd.lcow.v1';
export const SHIM_BINARY = 'containerd-shim-lcow-v1';
const MIN_NODE: [number, number] = [20, 19];
/** virtio-balloon free-page-reporting (on by default in our command line) came in QEMU 5.1. */
const MIN_QEMU: [number, number] = [5, 1];

const CRI = 'io.containerd.grpc.v1.cri';

function versionAtLeast(v: [number, number], min: [number, number]): boolean {
  return v[0] > min[0] || (v[0] === min[0] && v[1] >= min[1]);
}

function parseVersion(s: string): [number, number] | undefined {
  const m = /(\d+)\.(\d+)/.exec(s);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

type Table = Record<string, unknown>;
const table = (v: unknown): Table | undefined =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Table) : undefined;

interface ContainerdFacts {
  path: string;
  /** undefined: no file; Error: unparsable. */
  config: Table | undefined | Error;
  lcowRuntimes: Array<{ name: string; configPath?: string }>;
  criDisabled: boolean;
  restrictOomScoreAdj: boolean;
}

function containerdFacts(p: HostProbes, path: string): ContainerdFacts {
  const text = p.readFile(path);
  const facts: ContainerdFacts = {
    path,
    config: undefined,
    lcowRuntimes: [],
    criDisabled: false,
    restrictOomScoreAdj: false,
  };
  if (text === undefined) return facts;
  try {
    facts.config = parseToml(text) as Table;
  } catch (err) {
    facts.config = err as Error;
    return facts;
  }
  const disabled = facts.config.disabled_plugins;
  facts.criDisabled = Array.isArray(disabled) && disabled.some((d) => d === 'cri' || d === CRI);
  const cri = table(table(facts.config.plugins)?.[CRI]);
  facts.restrictOomScoreAdj = cri?.restrict_oom_score_adj === true;
  const runtimes = table(table(cri?.containerd)?.runtimes) ?? {};
  for (const [name, v] of Object.entries(runtimes)) {
    const r = table(v);
    if (r?.runtime_type !== RUNTIME_TYPE) continue;
    const cp = table(r.options)?.ConfigPath;
    facts.lcowRuntimes.push({ name, configPath: typeof cp === 'string' ? cp : undefined });
  }
  return facts;
}

const CRI_SNIPPET = `[plugins."${CRI}".containerd.runtimes.lcow]\n  runtime_type = "${RUNTIME_TYPE}"`;

function checkContainerd(p: HostProbes, f: ContainerdFacts, canLowerOom: boolean): CheckResult[] {
  const id = 'containerd-config';
  const title = 'containerd config';
  if (f.config === undefined)
    return [
      {
        id,
        title,
        status: 'warn',
        detail: `no ${f.path}: containerd's defaults have no lcow runtime for CRI (ctr --runtime ${RUNTIME_TYPE} still works)`,
        fix: `create ${f.path} with version = 2 and:\n${CRI_SNIPPET}`,
      },
    ];
  if (f.config instanceof Error)
    return [
      {
        id,
        title,
        status: 'fail',
        detail: `${f.path} is not valid TOML: ${f.config.message}`,
        fix: `fix the syntax of ${f.path} (containerd will not start with it)`,
      },
    ];
  const out: CheckResult[] = [];
  if (f.config.version !== 2)
    out.push({
      id,
      title,
      status: 'warn',
      detail: `${f.path} has version = ${String(f.config.version ?? '(none: 1)')}; the settings below are for version 2`,
      fix: `use version = 2 (containerd config migrate)`,
    });
  if (f.criDisabled)
    out.push({
      id,
      title,
      status: 'info',
      detail: 'the CRI plugin is disabled: only ctr/containerd clients can use lcow',
    });
  else if (f.lcowRuntimes.length === 0)
    out.push({
      id,
      title,
      status: 'warn',
      detail: `no CRI runtime with runtime_type = "${RUNTIME_TYPE}" in ${f.path}: Kubernetes cannot ask for lcow`,
      fix: `add to ${f.path}, then restart containerd:\n${CRI_SNIPPET}`,
    });
  else {
    out.push({
      id,
      title,
      status: 'ok',
      detail: `CRI runtime(s) ${f.lcowRuntimes.map((r) => r.name).join(', ')} use ${RUNTIME_TYPE}`,
    });
    for (const r of f.lcowRuntimes) {
      if (r.configPath === undefined) continue;
      const text = p.readFile(r.configPath);
      if (text === undefined)
        out.push({
          id,
          title,
          status: 'fail',
          detail: `runtime ${r.name}: ConfigPath ${r.configPath} cannot be read`,
          fix: `create ${r.configPath} or remove ConfigPath (every pod of ${r.name} fails to start)`,
        });
    }
  }
  if (!f.criDisabled && !f.restrictOomScoreAdj && !canLowerOom)
    out.push({
      id,
      title,
      status: 'warn',
      detail: 'this host cannot lower oom_score_adj (a container or restricted sandbox) and the CRI plugin tries to',
      fix: `set restrict_oom_score_adj = true under [plugins."${CRI}"]`,
    });
  return out;
}

/** The runtime TOML the shim would get: --config, else the lcow runtime's ConfigPath, else none. */
function runtimeConfig(
  p: HostProbes,
  opts: DoctorOptions,
  f: ContainerdFacts,
): { cfg?: QemuConfig; result: CheckResult } {
  const id = 'runtime-config';
  const title = 'lcow runtime config';
  const path = opts.configPath ?? f.lcowRuntimes.find((r) => r.configPath)?.configPath;
  let raw: Record<string, unknown> = {};
  if (path !== undefined) {
    const text = p.readFile(path);
    if (text === undefined)
      return { result: { id, title, status: 'fail', detail: `${path} cannot be read`, fix: `create ${path}` } };
    try {
      raw = parseToml(text) as Record<string, unknown>;
    } catch (err) {
      return {
        result: { id, title, status: 'fail', detail: `${path}: ${(err as Error).message}`, fix: `fix ${path}` },
      };
    }
  }
  try {
    const cfg = qemuConfig(raw, {});
    const where = path ?? 'no runtime config file (defaults)';
    return {
      cfg,
      result: {
        id,
        title,
        status: 'ok',
        detail: `${where}: ${cfg.memoryMiB} MiB per UVM, kernel ${cfg.kernel}`,
      },
    };
  } catch (err) {
    return {
      result: { id, title, status: 'fail', detail: `${path ?? 'defaults'}: ${(err as Error).message}`, fix: 'fix it' },
    };
  }
}

async function checkKvm(p: HostProbes, cfg: QemuConfig | undefined): Promise<CheckResult> {
  const id = 'kvm';
  const title = 'KVM';
  const tcgCost = 'pods boot in software emulation (TCG): about 12-25 s to agent-ready instead of 1-2 s';
  const nested =
    'enable VT-x/AMD-V in the firmware and load kvm_intel or kvm_amd; inside a VM, turn on nested virtualization';
  if (cfg?.accel)
    return { id, title, status: 'info', detail: `accelerator forced to ${cfg.accel} by the configuration` };
  if (!p.stat('/dev/kvm')) return { id, title, status: 'warn', detail: `no /dev/kvm: ${tcgCost}`, fix: nested };
  const denied = p.openReadWrite('/dev/kvm');
  if (denied)
    return {
      id,
      title,
      status: 'warn',
      detail: `/dev/kvm cannot be opened (${denied}): ${tcgCost}`,
      fix: 'run the shim as root (as containerd does), or give its user access to /dev/kvm',
    };
  if (!cfg || !p.stat(cfg.kernel))
    return {
      id,
      title,
      status: 'warn',
      detail: '/dev/kvm opens, but without a guest kernel the probe cannot tell whether a guest runs under it',
      fix: 'build the guest image (make guest), then run lcowctl doctor again',
    };
  const why = await p.kvmRunsGuest(cfg);
  if (why === undefined) return { id, title, status: 'ok', detail: 'KVM runs a guest: UVMs use it' };
  return {
    id,
    title,
    status: 'warn',
    detail: `/dev/kvm exists but a guest does not run under it (${why}): ${tcgCost}`,
    fix: `${nested}; check dmesg for KVM errors`,
  };
}

function checkVsock(p: HostProbes, cfg: QemuConfig | undefined): CheckResult {
  const base = { id: 'vhost-vsock', title: 'vhost-vsock' };
  const tcp =
    'the QEMU backend uses the tcp+token transport (loopback TCP through hostfwd, mutual HMAC handshake; see docs/security.md)';
  const setting = cfg?.transport ?? 'auto';
  const present = !!p.stat('/dev/vhost-vsock');
  if (setting === 'tcp')
    return {
      ...base,
      status: 'info',
      detail: `transport = "tcp": ${tcp}${present ? ' (/dev/vhost-vsock present)' : ''}`,
    };
  if (present)
    return {
      ...base,
      status: 'ok',
      detail:
        `/dev/vhost-vsock present: transport = "${setting}" uses virtio-vsock when the shim can open it read-write and ` +
        'bind an AF_VSOCK socket (no TCP port; never run end to end by this project: docs/operations.md, "Transports")',
    };
  if (setting === 'vsock')
    return {
      ...base,
      status: 'fail',
      detail: 'transport = "vsock" but there is no /dev/vhost-vsock: every pod fails to start',
      fix: 'modprobe vhost_vsock, or set transport = "tcp" (or "auto") in the runtime config',
    };
  return { ...base, status: 'info', detail: `no /dev/vhost-vsock: ${tcp}` };
}

async function checkQemu(p: HostProbes, cfg: QemuConfig | undefined): Promise<CheckResult> {
  const id = 'qemu';
  const title = 'QEMU';
  const binary = cfg?.binary ?? 'qemu-system-x86_64';
  const r = await p.run(binary, ['--version']);
  if (!r || r.code !== 0)
    return {
      id,
      title,
      status: 'fail',
      detail: `${binary} ${r ? `exits with ${r.code}` : 'not found'}`,
      fix: 'apt-get install qemu-system-x86 (or set qemu_binary in the runtime config)',
    };
  const line = r.output.split('\n')[0]!.trim();
  const v = parseVersion(line);
  if (!v) return { id, title, status: 'warn', detail: `cannot read a version from "${line}"` };
  const needed: [number, number] = cfg?.freePageReporting === false ? [2, 12] : MIN_QEMU;
  if (!versionAtLeast(v, needed))
    return {
      id,
      title,
      status: 'fail',
      detail: `${line}: older than ${needed.join('.')}`,
      fix:
        needed === MIN_QEMU
          ? `upgrade QEMU to ${MIN_QEMU.join('.')} or later, or set free_page_reporting = false in the runtime config`
          : `upgrade QEMU`,
    };
  return { id, title, status: 'ok', detail: line };
}

async function checkRunc(p: HostProbes): Promise<CheckResult> {
  const id = 'runc';
  const title = 'runc';
  const r = await p.run('runc', ['--version']);
  if (!r || r.code !== 0)
    return {
      id,
      title,
      status: 'warn',
      detail:
        'runc not found on the host: needed to build the guest image (it is copied in) and by the process backend',
      fix: 'apt-get install runc',
    };
  const line = r.output.split('\n')[0]!.trim();
  return { id, title, status: 'ok', detail: `${line} (host; the guest image carries the runc it was built with)` };
}

function checkGuestImage(p: HostProbes, cfg: QemuConfig | undefined): CheckResult {
  const id = 'guest-image';
  const title = 'guest image';
  if (!cfg) return { id, title, status: 'fail', detail: 'no usable runtime config (see above)' };
  // The erofs root image when the config has one (the default when the guest dir holds rootfs.erofs).
  const files = [cfg.kernel, cfg.initrd, ...(cfg.rootfs ? [cfg.rootfs] : [])];
  const missing = files.filter((f) => {
    const s = p.stat(f);
    return !s || !s.isFile || s.size === 0;
  });
  if (missing.length > 0)
    return {
      id,
      title,
      status: 'fail',
      detail: `missing or empty: ${missing.join(', ')}`,
      fix: 'make guest (or make install), or point guest_dir / kernel / initrd / rootfs in the runtime config (or LCOW_GUEST_DIR) at a built image',
    };
  const kv = p.readFile(cfg.kernel.replace(/vmlinu[zx]$/, 'kernel-version'))?.trim();
  return { id, title, status: 'ok', detail: `${files.join(', ')}${kv ? ` (guest kernel ${kv})` : ''}` };
}

function checkShimOnPath(p: HostProbes): CheckResult {
  const found = p.which(SHIM_BINARY);
  const base = { id: 'shim-binary', title: 'shim on PATH' };
  if (found) return { ...base, status: 'ok', detail: found };
  return {
    ...base,
    status: 'warn',
    detail: `${SHIM_BINARY} is not on this PATH; containerd finds ${RUNTIME_TYPE} by that name on ITS PATH`,
    fix: "make install PREFIX=/usr/local, or put the build's bin/ on containerd's PATH",
  };
}

function checkNode(p: HostProbes): CheckResult {
  const v = parseVersion(p.nodeVersion);
  const base = { id: 'node', title: 'Node.js' };
  if (v && versionAtLeast(v, MIN_NODE)) return { ...base, status: 'ok', detail: `Node ${p.nodeVersion}` };
  return {
    ...base,
    status: 'fail',
    detail: `Node ${p.nodeVersion}: the shim needs ${MIN_NODE.join('.')} or later`,
    fix: 'install Node 20.19 or later',
  };
}

function checkStateDir(p: HostProbes): CheckResult {
  const base = { id: 'state-dir', title: 'state dir' };
  const s = p.stat('/run/lcow');
  if (!s) return { ...base, status: 'ok', detail: '/run/lcow does not exist yet (the shim creates it 0700)' };
  if (s.isSymlink || !s.isDirectory)
    return {
      ...base,
      status: 'fail',
      detail: '/run/lcow is not a directory: the shim refuses it',
      fix: 'remove /run/lcow (no pod may be running)',
    };
  if (s.uid !== 0 || (s.mode & 0o077) !== 0)
    return {
      ...base,
      status: 'warn',
      detail: `/run/lcow is mode ${(s.mode & 0o7777).toString(8)} uid ${s.uid}; it holds pod secrets and QMP sockets`,
      fix: 'chown root /run/lcow && chmod 0700 /run/lcow (the shim also does on start)',
    };
  return { ...base, status: 'ok', detail: '/run/lcow: 0700 root' };
}

/** Runs every check; never throws (a probe that fails becomes a failed check). */
export async function runDoctor(p: HostProbes, opts: DoctorOptions = {}): Promise<Report> {
  const cdPath = opts.containerdConfigPath ?? '/etc/containerd/config.toml';
  const facts = containerdFacts(p, cdPath);
  const oom = await p.run('sh', ['-c', 'echo -1000 > /proc/self/oom_score_adj']);
  const { cfg, result: rc } = runtimeConfig(p, opts, facts);
  const checks: CheckResult[] = [
    checkNode(p),
    rc,
    checkGuestImage(p, cfg),
    await checkQemu(p, cfg),
    await checkKvm(p, cfg),
    checkVsock(p, cfg),
    await checkRunc(p),
    checkShimOnPath(p),
    ...checkContainerd(p, facts, oom?.code === 0),
    checkStateDir(p),
  ];
  const summary: Record<Status, number> = { ok: 0, info: 0, warn: 0, fail: 0 };
  for (const c of checks) summary[c.status]++;
  const exitCode = summary.fail > 0 ? EXIT.fail : summary.warn > 0 ? EXIT.warn : EXIT.ok;
  return { checks, summary, exitCode };
}

/** Human output: one aligned row per check, its fix indented below. */
export function renderHuman(r: Report): string {
  const width = Math.max(...r.checks.map((c) => c.title.length));
  const lines: string[] = [];
  for (const c of r.checks) {
    lines.push(`${c.status.toUpperCase().padEnd(4)}  ${c.title.padEnd(width)}  ${c.detail}`);
    if (c.fix)
      for (const [i, l] of c.fix.split('\n').entries())
        lines.push(`${' '.repeat(width + 8)}${i === 0 ? 'fix: ' : '     '}${l}`);
  }
  const s = r.summary;
  lines.push('', `${s.ok} ok, ${s.info} info, ${s.warn} warning(s), ${s.fail} failure(s)`);
  return lines.join('\n') + '\n';
}
