// Churn: many pods created, used and deleted through a real containerd, first one after another, then several at
// a time, while one anchor pod stays up and has containers churned inside it (its shim lives through the whole
// run, so a leak per container would show in its RSS and fds). Before/after figures: the anchor shim's RSS and
// fds, containerd's fds, our host mounts, /run state, shim sockets, our shims and QEMUs, free memory.
//
// Sizes: LCOW_CHURN=full (make stress) runs the sizes the issue asks for; the default is what `make test` can
// afford on a 2-core TCG machine.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { socketPath } from '../../src/shim/address.js';
import type { PrivateContainerd } from './containerd.js';
import {
  dirEntries,
  fdCount,
  memAvailableMiB,
  mountsMatching,
  qemuPids,
  rssKiB,
  shimPids,
  waitFor,
} from './host-state.js';

export const FULL = process.env.LCOW_CHURN === 'full';
const RUNTIME = 'io.containerd.lcow.v1';
const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';

export interface ChurnSizes {
  /** Pods created, used and deleted one after another. */
  serial: number;
  /** Then this many at a time ... */
  parallel: number;
  /** ... for this many rounds. */
  rounds: number;
}

export interface Snapshot {
  anchorShimRssKiB: number;
  anchorShimFds: number;
  containerdFds: number;
  mounts: number;
  runState: number;
  shimSockets: number;
  shims: number;
  qemus: number;
  memAvailableMiB: number;
}

export class Churn {
  readonly sockets = new Set<string>();
  private anchorShim = 0;
  /** Pods and containers done, for the report. */
  done = 0;

  constructor(
    readonly cd: PrivateContainerd,
    readonly image: string,
    /** A directory of ours: each pod's bind mount lives under it. */
    readonly work: string,
    /** Prefix of every pod id of this run (it includes the test process's pid). */
    readonly prefix: string,
  ) {}

  get anchor(): string {
    return `${this.prefix}anchor`;
  }

  private bundle(id: string): string {
    return join(this.cd.dir, 'state', 'io.containerd.runtime.v2.task', this.cd.namespace, id);
  }

  private async status(id: string): Promise<string | undefined> {
    const ls = (await this.cd.ctr(['task', 'ls'])).stdout;
    return new RegExp(`^${id}\\s+\\d+\\s+(\\w+)`, 'm').exec(ls)?.[1];
  }

  /** One container of pod `pod`: run with a bind mount, write and read through it, kill, delete. */
  async useContainer(pod: string, id: string): Promise<void> {
    const dir = join(this.work, id);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'in'), `${id}\n`);
    const cd = this.cd;
    const r = await cd.ctr(
      [
        'run',
        '-d',
        '--runtime',
        RUNTIME,
        '--annotation',
        `${SANDBOX_ID}=${pod}`,
        '--mount',
        `type=bind,src=${dir},dst=/data,options=rbind:rw`,
        this.image,
        id,
        'sleep',
        '600',
      ],
      { timeoutMs: 300_000 },
    );
    assert.equal(r.code, 0, `run ${id}: ${r.stderr}`);
    const addr = join(this.bundle(id), 'address');
    if (existsSync(addr)) this.sockets.add(socketPath(readFileSync(addr, 'utf8').trim()));
    const e = await cd.ctr(
      ['task', 'exec', '--exec-id', 'use', id, 'sh', '-c', 'cat /data/in > /data/out; cat /data/out'],
      {
        timeoutMs: 120_000,
      },
    );
    assert.equal(e.code, 0, `exec ${id}: ${e.stderr}`);
    assert.equal(e.stdout, `${id}\n`);
    assert.equal(readFileSync(join(dir, 'out'), 'utf8'), `${id}\n`);
    assert.equal((await cd.ctr(['task', 'kill', '-s', 'KILL', id])).code, 0);
    assert.ok(await waitFor(async () => (await this.status(id)) === 'STOPPED', 60_000), `${id} never stopped`);
    const d = await cd.ctr(['task', 'delete', id]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal((await cd.ctr(['container', 'rm', id])).code, 0);
    this.done++;
  }

  /** A pod of its own (its first container is its sandbox) plus one container churned in the anchor pod. */
  async iteration(tag: string): Promise<void> {
    const p = `${this.prefix}${tag}`;
    await this.useContainer(p, p);
    await this.useContainer(this.anchor, `${this.anchor}-${tag}`);
  }

  async startAnchor(): Promise<void> {
    const r = await this.cd.ctr(
      [
        'run',
        '-d',
        '--runtime',
        RUNTIME,
        '--annotation',
        `${SANDBOX_ID}=${this.anchor}`,
        this.image,
        this.anchor,
        'sleep',
        '86400',
      ],
      { timeoutMs: 300_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    const rec = JSON.parse(readFileSync(join(this.bundle(this.anchor), 'lcow-sandbox.json'), 'utf8')) as {
      shimPid: number;
    };
    this.anchorShim = rec.shimPid;
  }

  async stopAnchor(): Promise<void> {
    await this.cd.ctr(['task', 'kill', '-s', 'KILL', this.anchor]);
    await waitFor(async () => (await this.status(this.anchor)) !== 'RUNNING', 60_000);
    await this.cd.ctr(['task', 'delete', this.anchor]);
    await this.cd.ctr(['container', 'rm', this.anchor]);
  }

  snapshot(): Snapshot {
    const ns = this.cd.namespace;
    return {
      anchorShimRssKiB: rssKiB(this.anchorShim),
      anchorShimFds: fdCount(this.anchorShim),
      containerdFds: fdCount(this.cd.pid),
      mounts: mountsMatching(`/run/lcow/${ns}/`, `v2.task/${ns}/`, this.work).length,
      runState: dirEntries(`/run/lcow/${ns}`).length,
      shimSockets: [...this.sockets].filter((s) => existsSync(s)).length,
      shims: shimPids(ns).length,
      qemus: qemuPids((id) => id.startsWith(this.prefix)).length,
      memAvailableMiB: memAvailableMiB(),
    };
  }

  /** Runs the sizes: serial pods, then rounds of parallel ones. */
  async run(sizes: ChurnSizes, log: (line: string) => void): Promise<void> {
    for (let i = 0; i < sizes.serial; i++) {
      await this.iteration(`s${i}`);
      if ((i + 1) % 10 === 0) log(`      ${i + 1}/${sizes.serial} in a row`);
    }
    for (let r = 0; r < sizes.rounds; r++) {
      await Promise.all(Array.from({ length: sizes.parallel }, (_, k) => this.iteration(`r${r}p${k}`)));
      log(`      round ${r + 1}/${sizes.rounds}: ${sizes.parallel} at a time`);
    }
  }
}

const ROWS: Array<[keyof Snapshot, string]> = [
  ['anchorShimRssKiB', 'anchor shim RSS (KiB)'],
  ['anchorShimFds', 'anchor shim fds'],
  ['containerdFds', 'containerd fds'],
  ['mounts', 'host mounts (ours)'],
  ['runState', '/run/lcow/<ns> entries'],
  ['shimSockets', 'shim sockets left'],
  ['shims', 'shim processes'],
  ['qemus', 'QEMU processes'],
  ['memAvailableMiB', 'MemAvailable (MiB, host-wide)'],
];

export function table(title: string, before: Snapshot, after: Snapshot): string {
  const lines = [`      ${title}`, `      ${'figure'.padEnd(30)} ${'before'.padStart(10)} ${'after'.padStart(10)}`];
  for (const [k, name] of ROWS)
    lines.push(`      ${name.padEnd(30)} ${String(before[k]).padStart(10)} ${String(after[k]).padStart(10)}`);
  return lines.join('\n');
}

/**
 * Zero growth beyond noise. Counts must come back exactly (fds within 2: lazily opened files); the anchor shim's
 * RSS within 16 MiB (a Node heap between collections). MemAvailable is host-wide and other people's VMs move it
 * by gigabytes on this machine: it is reported, not asserted; that none of our processes remain is.
 */
export function assertNoGrowth(before: Snapshot, after: Snapshot): void {
  assert.ok(
    after.containerdFds <= before.containerdFds + 2,
    `containerd fds ${before.containerdFds} -> ${after.containerdFds}`,
  );
  assert.ok(
    after.anchorShimFds <= before.anchorShimFds + 2,
    `anchor shim fds ${before.anchorShimFds} -> ${after.anchorShimFds}`,
  );
  assert.ok(
    after.anchorShimRssKiB <= before.anchorShimRssKiB + 16 * 1024,
    `anchor shim RSS ${before.anchorShimRssKiB} -> ${after.anchorShimRssKiB} KiB`,
  );
  for (const k of ['mounts', 'runState', 'shimSockets', 'shims', 'qemus'] as const)
    assert.equal(after[k], before[k], `${k} ${before[k]} -> ${after[k]}`);
}
