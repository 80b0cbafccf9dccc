// Application tests in QEMU utility VMs through a real containerd: Debian-built images (hack/apps), one pod
// per UVM whose only container sleeps while the test drives the application with `ctr task exec`, host
// directories bind-mounted as the application's data directory, and a QEMU SIGKILL in the middle of writes.
// Every id carries process.pid: other people run lcow shims and UVMs on this host at the same time.
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { leftovers, startContainerd, type PrivateContainerd } from './containerd.js';
import { lcowctl } from './lcowctl.js';
import { P9_METRICS } from '../../src/telemetry/p9-metrics.js';
import type { HistogramValue, MetricsSnapshot } from '../../src/telemetry/metrics.js';
import { qemuPidsOfPod, shimPids, waitFor } from './host-state.js';

const execFileP = promisify(execFile);

/** Requests of one 9P message type and the server's time answering them. */
export interface OpStat {
  count: number;
  micros: number;
}
export const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
export const RUNTIME = 'io.containerd.lcow.v1';
const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
const MEMORY_ANNOTATION = 'io.microsoft.virtualmachine.computetopology.memory.sizeinmb';

/** Why the app suites cannot run here (pass to requirePrerequisite), or undefined. */
export function appsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (!existsSync('/usr/bin/mmdebstrap')) return 'no mmdebstrap (make setup)';
  return undefined;
}

/** Builds (or finds in the cache) hack/apps/images/NAME.image and imports it; returns the image ref. */
export async function appImage(cd: PrivateContainerd, name: string): Promise<string> {
  const t0 = Date.now();
  const { stdout } = await execFileP(join(ROOT, 'hack/apps/build-image.sh'), [name], {
    maxBuffer: 16 * 1024 * 1024,
    timeout: 900_000,
  });
  const tar = stdout.trim().split('\n').pop()!;
  const r = await cd.ctr(['images', 'import', tar], { timeoutMs: 300_000 });
  assert.equal(r.code, 0, `ctr images import ${tar}: ${r.stderr}`);
  // build-image.sh names the image localhost/lcow-apps/NAME:KEY and the tar NAME-KEY.tar.
  const key = new RegExp(`/${name}-([0-9a-f]+)\\.tar$`).exec(tar)?.[1];
  assert.ok(key, `unexpected image path ${tar}`);
  process.stderr.write(`      image ${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s (build or cache, import)\n`);
  return `localhost/lcow-apps/${name}:${key}`;
}

export { waitFor };

export interface Mount {
  src: string;
  dst: string;
  /** ctr mount options after rbind:rw (e.g. 'x-lcow.cache=none'). */
  extra?: string[];
}

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * A private containerd for one app suite: its own namespace, pods named <app>-<n>-<pid>. Tracks every pod it
 * started so `close()` removes them (also after a failure) and checks that nothing is left: containerd, QEMU,
 * shims, pod state.
 */
export class AppHarness {
  readonly ns: string;
  cd!: PrivateContainerd;
  private readonly pods = new Set<string>();
  private podSeq = 0;
  private execSeq = 0;
  /** Phase timings in ms, printed by the suites and collected for docs/applications.md. */
  readonly timings: Record<string, number> = {};

  constructor(
    readonly app: string,
    /** Extra environment for containerd and so the shims. */
    private readonly env: Record<string, string> = {},
  ) {
    this.ns = `lcow-apps-${app}-${process.pid}`;
  }

  async start(): Promise<void> {
    this.cd = await startContainerd({
      extraPath: [join(ROOT, 'bin')],
      logLevel: 'info',
      namespace: this.ns,
      env: this.env,
    });
  }

  /**
   * The shim's 9P counters of a pod (`lcowctl stats POD --json`, the metrics the shim always keeps): per share,
   * requests and server time by message type (Twalk, Tlopen...).
   */
  async p9Stats(pod: string): Promise<Array<{ share: string; hostPath: string; ops: Record<string, OpStat> }>> {
    const r = await lcowctl(['stats', '--namespace', this.ns, pod, '--json']);
    assert.equal(r.code, 0, `lcowctl stats ${pod}: ${r.stderr}`);
    const snap = JSON.parse(r.stdout) as MetricsSnapshot;
    const shares = new Map<string, { share: string; hostPath: string; ops: Record<string, OpStat> }>();
    for (const p of snap.metrics.find((m) => m.name === P9_METRICS.duration)?.points ?? []) {
      const { share = '', path = '', op = '' } = p.attributes;
      const h = p.value as HistogramValue;
      let e = shares.get(share);
      if (!e) shares.set(share, (e = { share, hostPath: path, ops: {} }));
      e.ops[`T${op}`] = { count: h.count, micros: Math.round(h.sum * 1e6) };
    }
    return [...shares.values()];
  }

  async time<T>(phase: string, f: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    try {
      return await f();
    } finally {
      this.timings[phase] = Date.now() - t0;
      process.stderr.write(`      ${this.app}: ${phase} ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    }
  }

  /** Starts a new pod (a new UVM) whose container sleeps; returns its id. */
  async startPod(
    image: string,
    mounts: Mount[],
    opts: { memoryMiB?: number; tmpfs?: string[]; runtimeConfigPath?: string } = {},
  ): Promise<string> {
    const id = `${this.app}-${++this.podSeq}-${process.pid}`;
    const args = ['run', '-d', '--runtime', RUNTIME, '--annotation', `${SANDBOX_ID}=${id}`];
    // The runtime's TOML (share_cache, rootfs_share_cache...), as a runtime's ConfigPath option gives it.
    if (opts.runtimeConfigPath) args.push('--runtime-config-path', opts.runtimeConfigPath);
    if (opts.memoryMiB) args.push('--annotation', `${MEMORY_ANNOTATION}=${opts.memoryMiB}`);
    for (const m of mounts)
      args.push(
        '--mount',
        `type=bind,src=${m.src},dst=${m.dst},options=${['rbind', 'rw', ...(m.extra ?? [])].join(':')}`,
      );
    for (const dst of opts.tmpfs ?? []) args.push('--mount', `type=tmpfs,src=tmpfs,dst=${dst},options=mode=1777`);
    args.push(image, id, 'sleep', 'infinity');
    this.pods.add(id);
    const r = await this.cd.ctr(args, { timeoutMs: 300_000 });
    assert.equal(r.code, 0, `ctr run ${id}: ${r.stderr}\n${this.cd.log().slice(-3000)}`);
    return id;
  }

  /** `sh -c script` in the pod's container; resolves with its output (never rejects on a non-zero exit). */
  async exec(pod: string, script: string, timeoutMs = 300_000): Promise<ExecResult> {
    const t0 = Date.now();
    const r = await this.cd.ctr(['task', 'exec', '--exec-id', `x${++this.execSeq}`, pod, 'sh', '-c', script], {
      timeoutMs,
    });
    return { ...r, ms: Date.now() - t0 };
  }

  /** exec that must exit 0; returns stdout. */
  async sh(pod: string, script: string, timeoutMs = 300_000): Promise<string> {
    const r = await this.exec(pod, script, timeoutMs);
    assert.equal(
      r.code,
      0,
      `in ${pod}: ${script}\nexit ${r.code}\nstdout: ${r.stdout.slice(-3000)}\nstderr: ${r.stderr.slice(-3000)}`,
    );
    return r.stdout;
  }

  /** A long-running exec whose stdout the caller reads as it comes (the writer of a crash test). */
  spawnExec(pod: string, script: string): ChildProcess {
    return this.cd.spawnCtr(['task', 'exec', '--exec-id', `x${++this.execSeq}`, pod, 'sh', '-c', script]);
  }

  /** SIGKILL of the pod's QEMU process: the UVM dies with whatever the guest had not sent yet. */
  killUvm(pod: string): void {
    const pids = qemuPidsOfPod(pod);
    assert.equal(pids.length, 1, `QEMU processes of ${pod}: ${pids.join(',')}`);
    process.kill(pids[0]!, 'SIGKILL');
  }

  /** Ends the pod: SIGKILL of its container (the app was stopped before, or the UVM is dead), delete. */
  async removePod(pod: string): Promise<void> {
    const cd = this.cd;
    await cd.ctr(['task', 'kill', '-s', 'KILL', pod]);
    await waitFor(async () => {
      const ls = (await cd.ctr(['task', 'ls'])).stdout;
      return !ls.includes(pod) || new RegExp(`${pod}\\s+\\d+\\s+STOPPED`).test(ls);
    }, 60_000);
    await cd.ctr(['task', 'delete', pod], { timeoutMs: 60_000 });
    await cd.ctr(['container', 'rm', pod]);
    assert.ok(await waitFor(() => qemuPidsOfPod(pod).length === 0, 30_000), `the UVM of ${pod} is still running`);
    this.pods.delete(pod);
  }

  /** Removes every pod left, stops containerd and asserts that nothing of this suite is left running. */
  async close(): Promise<void> {
    const errors: unknown[] = [];
    if (this.cd) {
      for (const pod of [...this.pods]) await this.removePod(pod).catch((e: unknown) => errors.push(e));
      await this.cd.stop();
    }
    assert.deepEqual(leftovers(), []);
    const pods = Array.from({ length: this.podSeq }, (_, i) => `${this.app}-${i + 1}-${process.pid}`);
    assert.ok(
      await waitFor(() => pods.every((p) => qemuPidsOfPod(p).length === 0), 20_000),
      'a QEMU UVM was left running',
    );
    assert.ok(await waitFor(() => shimPids(this.ns).length === 0, 20_000), 'a shim was left running');
    const stateRoot = `/run/lcow/${this.ns}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(readdirSync(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
    if (errors.length) throw errors[0];
  }
}

/**
 * Reads `ack N` lines from a writer's stdout as they arrive. `acked` holds every N the client saw committed:
 * the database must still have all of them after the crash.
 */
export function collectAcks(child: ChildProcess): { acked: number[]; output: () => string } {
  const acked: number[] = [];
  let buf = '';
  let all = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    all += d;
    buf += d;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const m = /^ack (\d+)$/.exec(buf.slice(0, nl).trim());
      if (m) acked.push(Number(m[1]));
      buf = buf.slice(nl + 1);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (all += d));
  return { acked, output: () => all };
}

/** Kills the pod's UVM once the writer acknowledged `minAcks` commits (or `maxMs` passed); returns the acks. */
export async function crashMidWrite(
  h: AppHarness,
  pod: string,
  writer: string,
  minAcks: number,
  maxMs = 240_000,
): Promise<number[]> {
  const child = h.spawnExec(pod, writer);
  const { acked, output } = collectAcks(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const enough = await waitFor(() => acked.length >= minAcks || child.exitCode !== null, maxMs, 50);
  assert.ok(enough && child.exitCode === null, `the writer did not get ${minAcks} commits: ${output().slice(-2000)}`);
  h.killUvm(pod);
  await Promise.race([exited, new Promise((r) => setTimeout(r, 60_000))]);
  child.kill('SIGKILL');
  process.stderr.write(`      ${h.app}: UVM killed after ${acked.length} acknowledged commits\n`);
  return [...acked];
}
