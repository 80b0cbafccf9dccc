// Runs the 9P kernel test guest (hack/guest/p9test-initrd.sh) in QEMU and parses what it reports.
//
// The guest mounts each job's export with the real Linux 9P client (trans=tcp or trans=fd), runs the action
// (POSIX battery, read-only checks, benchmarks) and powers off. Results come back on the second serial port;
// the kernel console goes to the first. QEMU is killed on every path (timeout, error, process exit).
//
// Networking: QEMU user networking. 'restricted' (the default, as production wants it) sets restrict=on and
// forwards one guest address:port per connection with guestfwd to a chardev connected to the host port. slirp
// refuses guestfwd on its own gateway address 10.0.2.2, so the guest dials 10.0.2.4 instead. A chardev connects
// once, at QEMU start, and carries exactly one guest connection: every mount gets its own rule, and the servers
// must be listening before the guest starts. A `tcp:` chardev has Nagle on, and multi-segment guest messages
// (Twrite) then wait for the server's delayed ACK: ~4 MiB/s writes and ~15 small files/s under TCG. The
// 'guestfwd-nodelay' (`-chardev socket,...,nodelay=on`), 'guestfwd-unix' and 'hostfwd' modes do not have that
// stall; `cmd:socat` (production's current choice) stays slow with or without socat's nodelay. Benchmarks of
// the servers use 'open': plain user networking where 10.0.2.2 reaches the host's loopback (the guest could
// reach any host loopback service: tests only). `node dist/test/bench/run.js p9-transport` compares the modes.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { defaultKernel } from '../../src/sandbox/qemu/config.js';

const execFileP = promisify(execFile);

/** Repository root (this file is dist/test/helpers/qemu-guest.js once compiled). */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export type Accel = 'kvm' | 'tcg';
export type Trans = 'tcp' | 'fd';
/**
 * How guest and host reach each other (QEMU user networking):
 *  - 'open': plain user networking; the guest dials 10.0.2.2, which reaches the host's loopback (tests only);
 *  - 'restricted': restrict=on + guestfwd to a `tcp:` chardev per connection (the guest dials 10.0.2.4);
 *  - 'guestfwd-cmd': restrict=on + guestfwd `cmd:socat - TCP:127.0.0.1:PORT` (socat per connection);
 *  - 'guestfwd-cmd-nodelay': the same with socat's `nodelay` option (TCP_NODELAY on socat's host connection),
 *    through a wrapper script in the run's temp dir;
 *  - 'guestfwd-nodelay': restrict=on + guestfwd to a `-chardev socket,...,nodelay=on` (no Nagle on the host leg);
 *  - 'guestfwd-unix': restrict=on + guestfwd to a `-chardev socket,path=...` (the server listens on job.hostSocket);
 *  - 'hostfwd': restrict=on + hostfwd=tcp:127.0.0.1:HOSTPORT-:GUESTPORT: the guest LISTENS and the host dials in
 *    (job.hostPort is then the host port QEMU binds; see dialHostfwd).
 */
export type GuestNetwork =
  'open' | 'restricted' | 'guestfwd-cmd' | 'guestfwd-cmd-nodelay' | 'guestfwd-nodelay' | 'guestfwd-unix' | 'hostfwd';
export type JobAction = 'battery' | 'ro' | 'bench' | 'mount';

export interface GuestAssets {
  dir: string;
  kernel: string;
  initrd: string;
}

export interface GuestJob {
  /** [a-z0-9_-]+, unique per run. */
  name: string;
  trans: Trans;
  /** Host TCP port of the 9P server (127.0.0.1). */
  hostPort: number;
  action: JobAction;
  /** 9P mount options without trans/port/fd, e.g. version=9p2000.L,msize=262144,aname=/x. No ':' or spaces. */
  options: string;
  /** network 'guestfwd-unix': the server's unix socket (hostPort is then unused). */
  hostSocket?: string;
  /** battery: host port for a second mount of the same export (cross-mount lock checks). */
  peerHostPort?: number;
}

export interface GuestRunOptions {
  jobs: GuestJob[];
  network?: GuestNetwork;
  /** Whole run, boot to power-off. */
  timeoutMs?: number;
  memoryMiB?: number;
  cpus?: number;
  benchArgs?: string[];
  /** Run only these battery checks. */
  checks?: string[];
  assets?: GuestAssets;
  accel?: Accel;
}

export interface CheckResult {
  name: string;
  status: 'ok' | 'not ok' | 'skip';
  /** Failure or skip reason; for ok, the note after '#'. */
  detail: string;
}

export interface JobResult {
  name: string;
  begun: boolean;
  mounted: boolean;
  /** "P9T job NAME error ..." lines (mount failures, umount failures...). */
  errors: string[];
  rc?: number;
  seconds?: number;
  checks: CheckResult[];
  summary?: { passed: number; failed: number; skipped: number };
  bench: Record<string, { value: number; unit: string }>;
  /** Every line the job produced, for diagnostics. */
  lines: string[];
}

export interface GuestRunResult {
  accel: Accel;
  /** Guest uptime when /init started, and at power-off. */
  bootSeconds?: number;
  doneSeconds?: number;
  wallSeconds: number;
  /** The guest reached "P9T done". */
  done: boolean;
  timedOut: boolean;
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** "P9T error" lines outside jobs (insmod, network). */
  errors: string[];
  jobs: JobResult[];
  console: string;
  results: string;
  commandLine: string[];
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}

/** Builds (or reuses, when no input changed) kernel + initrd. */
export async function buildGuestAssets(): Promise<GuestAssets> {
  const script = join(repoRoot, 'hack/guest/p9test-initrd.sh');
  const { stdout } = await execFileP('bash', [script], { maxBuffer: 16 << 20 }).catch((err: unknown) => {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${script} failed: ${e.stderr ?? ''}${e.message}`);
  });
  const dir = stdout.trim().split('\n').pop()!;
  const assets = { dir, kernel: defaultKernel(dir), initrd: join(dir, 'initrd.img') };
  for (const f of [assets.kernel, assets.initrd]) if (!existsSync(f)) throw new Error(`guest build produced no ${f}`);
  return assets;
}

/** Why QEMU cannot run here, or undefined. */
export async function guestUnavailable(): Promise<string | undefined> {
  try {
    await execFileP('qemu-system-x86_64', ['--version']);
  } catch {
    return 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)';
  }
  return undefined;
}

async function qemuVersion(): Promise<string> {
  const { stdout } = await execFileP('qemu-system-x86_64', ['--version']);
  return stdout.split('\n')[0]!.trim();
}

let accelMemo: Promise<Accel> | undefined;

/**
 * KVM when it really runs a guest, else TCG. /dev/kvm existing is not enough (on some hosts KVM_RUN spins and the
 * guest never prints a byte), so boot the test guest with KVM once with a short deadline. The answer is cached in
 * build/guest/accel.json, keyed by host kernel, QEMU version and /dev/kvm presence.
 */
export function probeAccel(assets: GuestAssets): Promise<Accel> {
  accelMemo ??= (async (): Promise<Accel> => {
    if (process.env.P9TEST_ACCEL === 'kvm' || process.env.P9TEST_ACCEL === 'tcg') return process.env.P9TEST_ACCEL;
    if (!existsSync('/dev/kvm')) return 'tcg';
    const key = `${release()}|${await qemuVersion()}|kvm`;
    const cacheFile = join(repoRoot, 'build/guest/accel.json');
    try {
      const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as { key: string; accel: Accel };
      if (cached.key === key) return cached.accel;
    } catch {
      // no cache yet
    }
    const r = await runGuest({ jobs: [], assets, accel: 'kvm', timeoutMs: 15_000, network: 'open' });
    const accel: Accel = r.done ? 'kvm' : 'tcg';
    mkdirSync(dirname(cacheFile), { recursive: true });
    writeFileSync(cacheFile, JSON.stringify({ key, accel, probedAt: new Date().toISOString() }) + '\n');
    return accel;
  })();
  return accelMemo;
}

const GUESTFWD_ADDR = '10.0.2.4';
const GUEST_PORT_BASE = 5640;

/** The QEMU argv (without the binary) and the kernel command line for a run. */
export function qemuArgs(
  opts: GuestRunOptions & { assets: GuestAssets; accel: Accel },
  consoleFile: string,
  resultsFile: string,
): string[] {
  const network = opts.network ?? 'restricted';
  const forwards: string[] = [];
  const chardevs: string[] = [];
  let nextGuestPort = GUEST_PORT_BASE;
  const guestPort = (hostPort: number, hostSocket?: string): number => {
    if (network === 'open') return hostPort;
    const p = nextGuestPort++;
    if (network === 'hostfwd') forwards.push(`hostfwd=tcp:127.0.0.1:${hostPort}-:${p}`);
    else if (network === 'guestfwd-cmd')
      forwards.push(`guestfwd=tcp:${GUESTFWD_ADDR}:${p}-cmd:socat -lf /dev/null - TCP:127.0.0.1:${hostPort}`);
    else if (network === 'guestfwd-cmd-nodelay') {
      // socat's address options are comma-separated, and QEMU 7.2 drops a ',,'-escaped ",nodelay" from the cmd:
      // string (observed: socat ran without it), so the option lives in a wrapper script.
      const wrapper = join(dirname(consoleFile), 'socat-nodelay.sh');
      writeFileSync(wrapper, '#!/bin/sh\nexec socat -lf /dev/null - "TCP:127.0.0.1:$1,nodelay"\n', { mode: 0o755 });
      forwards.push(`guestfwd=tcp:${GUESTFWD_ADDR}:${p}-cmd:${wrapper} ${hostPort}`);
    } else if (network === 'guestfwd-unix') {
      if (!hostSocket || /[,\s]/.test(hostSocket)) throw new Error(`guestfwd-unix needs a plain hostSocket path`);
      chardevs.push('-chardev', `socket,id=gf${p},path=${hostSocket}`);
      forwards.push(`guestfwd=tcp:${GUESTFWD_ADDR}:${p}-chardev:gf${p}`);
    } else if (network === 'guestfwd-nodelay') {
      chardevs.push('-chardev', `socket,id=gf${p},host=127.0.0.1,port=${hostPort},nodelay=on`);
      forwards.push(`guestfwd=tcp:${GUESTFWD_ADDR}:${p}-chardev:gf${p}`);
    } else forwards.push(`guestfwd=tcp:${GUESTFWD_ADDR}:${p}-tcp:127.0.0.1:${hostPort}`);
    return p;
  };
  const cmdline = ['console=ttyS0', 'panic=-1', 'quiet', 'loglevel=4'];
  cmdline.push(`p9t.host=${network === 'open' ? '10.0.2.2' : GUESTFWD_ADDR}`);
  for (const job of opts.jobs) {
    if (!/^[a-z0-9_-]+$/.test(job.name)) throw new Error(`bad job name ${job.name}`);
    if (/[:\s]/.test(job.options)) throw new Error(`mount options may not hold ':' or spaces: ${job.options}`);
    const trans = network === 'hostfwd' ? 'listen' : job.trans;
    const fields = [job.name, trans, String(guestPort(job.hostPort, job.hostSocket)), job.action, job.options];
    if (job.peerHostPort !== undefined) fields.push(String(guestPort(job.peerHostPort)));
    cmdline.push(`p9t.job=${fields.join(':')}`);
  }
  if (opts.benchArgs?.length) cmdline.push(`p9t.bench=${opts.benchArgs.join(',')}`);
  if (opts.checks?.length) cmdline.push(`p9t.checks=${opts.checks.join(',')}`);
  const netdev = ['user', 'id=n0', ...(network !== 'open' ? ['restrict=on', ...forwards] : [])].join(',');
  return [
    '-accel',
    opts.accel,
    '-m',
    String(opts.memoryMiB ?? 512),
    '-smp',
    String(opts.cpus ?? 1),
    '-nodefaults',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    opts.assets.kernel,
    '-initrd',
    opts.assets.initrd,
    '-append',
    cmdline.join(' '),
    ...chardevs,
    '-netdev',
    netdev,
    '-device',
    'virtio-net-pci,netdev=n0',
    '-serial',
    `file:${consoleFile}`,
    '-serial',
    `file:${resultsFile}`,
  ];
}

/**
 * network 'hostfwd': dials QEMU's host port until the guest accepts (slirp accepts on the host side at once and
 * drops the connection when the guest is not listening yet), then hands the connection to `serve` once the
 * guest's first bytes (Tversion) arrive (they are put back for `serve` to read). Returns a stop function.
 */
export function dialHostfwd(port: number, serve: (sock: net.Socket) => void): () => void {
  let stopped = false;
  let current: net.Socket | undefined;
  const attempt = (): void => {
    if (stopped) return;
    const sock = net.connect({ port, host: '127.0.0.1', noDelay: true });
    current = sock;
    let served = false;
    sock.once('data', (first: Buffer) => {
      served = true;
      sock.pause();
      sock.unshift(first);
      serve(sock);
      sock.resume();
    });
    sock.once('close', () => {
      if (!served && !stopped) setTimeout(attempt, 100);
    });
    sock.on('error', () => undefined);
  };
  attempt();
  return () => {
    stopped = true;
    current?.destroy();
  };
}

/** Parses the guest's result stream (second serial port). */
export function parseResults(
  text: string,
): Pick<GuestRunResult, 'bootSeconds' | 'doneSeconds' | 'done' | 'errors' | 'jobs'> {
  const jobs: JobResult[] = [];
  const errors: string[] = [];
  let current: JobResult | undefined;
  let bootSeconds: number | undefined;
  let doneSeconds: number | undefined;
  let done = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\r$/, '');
    if (!line) continue;
    let m: RegExpExecArray | null;
    if ((m = /^P9T boot uptime=([\d.]+)/.exec(line))) {
      bootSeconds = Number(m[1]);
    } else if ((m = /^P9T done uptime=([\d.]+)/.exec(line))) {
      done = true;
      doneSeconds = Number(m[1]);
      current = undefined;
    } else if ((m = /^P9T job (\S+) begin/.exec(line))) {
      current = { name: m[1]!, begun: true, mounted: false, errors: [], checks: [], bench: {}, lines: [line] };
      jobs.push(current);
    } else if (/^P9T job (\S+) mounted/.test(line) && current) {
      current.mounted = true;
      current.lines.push(line);
    } else if ((m = /^P9T job (\S+) error (.*)$/.exec(line))) {
      (current ?? { errors }).errors.push(m[2]!);
      current?.lines.push(line);
    } else if ((m = /^P9T job (\S+) end rc=(\d+)(?: seconds=([\d.]+))?/.exec(line)) && current) {
      current.rc = Number(m[2]);
      if (m[3] !== undefined) current.seconds = Number(m[3]);
      current.lines.push(line);
      current = undefined;
    } else if ((m = /^P9T error (.*)$/.exec(line))) {
      errors.push(m[1]!);
    } else if (current) {
      current.lines.push(line);
      if ((m = /^ok (\S+)(?: # (.*))?$/.exec(line)))
        current.checks.push({ name: m[1]!, status: 'ok', detail: m[2] ?? '' });
      else if ((m = /^not ok (\S+): (.*)$/.exec(line)))
        current.checks.push({ name: m[1]!, status: 'not ok', detail: m[2]! });
      else if ((m = /^skip (\S+): (.*)$/.exec(line)))
        current.checks.push({ name: m[1]!, status: 'skip', detail: m[2]! });
      else if ((m = /^summary passed=(\d+) failed=(\d+) skipped=(\d+)/.exec(line)))
        current.summary = { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3]) };
      else if ((m = /^bench (\S+) ([\d.]+) (\S+)/.exec(line)))
        current.bench[m[1]!] = { value: Number(m[2]), unit: m[3]! };
    }
  }
  return { bootSeconds, doneSeconds, done, errors, jobs };
}

/** Boots the guest, runs the jobs, returns what it reported. Never leaves QEMU running. */
export async function runGuest(opts: GuestRunOptions): Promise<GuestRunResult> {
  const assets = opts.assets ?? (await buildGuestAssets());
  const accel = opts.accel ?? (await probeAccel(assets));
  const dir = mkdtempSync(join(tmpdir(), 'p9guest-'));
  const consoleFile = join(dir, 'console.log');
  const resultsFile = join(dir, 'results.log');
  const args = qemuArgs({ ...opts, assets, accel }, consoleFile, resultsFile);
  const timeoutMs = opts.timeoutMs ?? 600_000;
  const started = Date.now();
  let timedOut = false;
  let stderr = '';
  try {
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    track(child);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < 65536) stderr += d;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) => {
      child.once('error', (err) => {
        stderr += String(err);
        res([null, null]);
      });
      child.once('exit', (code, sig) => res([code, sig]));
    }).finally(() => clearTimeout(timer));
    const read = (f: string): string => (existsSync(f) ? readFileSync(f, 'utf8') : '');
    const results = read(resultsFile);
    const consoleText = read(consoleFile) + (stderr ? `\n[qemu stderr]\n${stderr}` : '');
    return {
      accel,
      wallSeconds: (Date.now() - started) / 1000,
      timedOut,
      exitCode,
      signal,
      console: consoleText,
      results,
      commandLine: ['qemu-system-x86_64', ...args],
      ...parseResults(results),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A short description of a run for assertion messages: errors and the console's tail. */
export function describeRun(r: GuestRunResult, consoleLines = 25): string {
  const tail = r.console.trimEnd().split('\n').slice(-consoleLines).join('\n');
  return [
    `accel=${r.accel} done=${r.done} timedOut=${r.timedOut} exit=${r.exitCode ?? r.signal} wall=${r.wallSeconds}s`,
    ...r.errors.map((e) => `guest error: ${e}`),
    ...r.jobs.flatMap((j) => j.errors.map((e) => `job ${j.name} error: ${e}`)),
    '--- console tail ---',
    tail,
  ].join('\n');
}
