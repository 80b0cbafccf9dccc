// UVM bench: what a pod costs with the QEMU backend on this host (KVM or TCG, shown in every row).
//  - bare boot of the UVM image to its init, which then powers off (lcow.mode=none: no agent): the floor;
//  - boot to agent-ready through QemuSandbox (QEMU spawned -> the agent answered on the control channel);
//  - `ctr run --rm true`: a cold pod (boots a UVM) and a warm second container in the same pod;
//  - RSS of the shim and of QEMU for one pod.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QemuSandbox } from '../../src/sandbox/qemu/qemu.js';
import { silentLogger } from '../../src/util/log.js';
import { startContainerd } from '../helpers/containerd.js';
import { importTestImage } from '../helpers/image.js';
import type { BenchRow, BenchSuite } from './harness.js';
import { defaultKernel, guestImageArgs } from '../../src/sandbox/qemu/config.js';
import { pidsWhere } from '../helpers/host-state.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
// The kernel the pods boot (the uncompressed vmlinux when the image has one), so the floor is measured alike.
const KERNEL = defaultKernel(join(ROOT, 'build/guest'));
const INITRD = join(ROOT, 'build/guest/initrd.img');
const ROOTFS = existsSync(join(ROOT, 'build/guest/rootfs.erofs')) ? join(ROOT, 'build/guest/rootfs.erofs') : '';
const RUNTIME = 'io.containerd.lcow.v1';
const RUNS = Number(process.env.LCOW_BENCH_UVM_RUNS ?? 3);

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const stats = (xs: number[]): Record<string, number> => {
  const s = [...xs].sort((a, b) => a - b);
  return { min: s[0]!, median: s[Math.floor(s.length / 2)]!, max: s[s.length - 1]!, runs: s.length };
};

/** Boots the image with lcow.mode=none (init, modules, network, then poweroff): ms until QEMU exited. */
function bareBoot(accel: string): Promise<number> {
  const t0 = Date.now();
  return new Promise((res, rej) => {
    const q = spawn(
      'qemu-system-x86_64',
      [
        ...['-name', `lcow-bench-bare-${process.pid}`, '-accel', accel, '-machine', 'pc', '-m', '1024', '-smp', '1'],
        ...guestImageArgs(KERNEL, INITRD, ROOTFS),
        ...['-append', 'console=ttyS0 quiet loglevel=3 panic=-1 tsc=reliable no_timer_check lcow.mode=none'],
      ],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    const t = setTimeout(() => q.kill('SIGKILL'), 180_000);
    q.on('error', rej);
    q.on('close', (code) => {
      clearTimeout(t);
      if (code === 0) res(Date.now() - t0);
      else rej(new Error(`bare boot: qemu exited ${code}`));
    });
  });
}

export const suite: BenchSuite = {
  name: 'uvm',
  unavailable: async () => {
    if (!existsSync(INITRD) || !existsSync(KERNEL)) return 'no guest image (make guest)';
    if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
    if (process.getuid?.() !== 0) return 'needs root';
    return undefined;
  },
  run: async () => {
    const rows: BenchRow[] = [];
    // Boot to agent-ready through the sandbox itself.
    const ready: number[] = [];
    const qemuRss: number[] = [];
    let accel = 'tcg';
    for (let i = 0; i < RUNS; i++) {
      const dir = mkdtempSync(join(tmpdir(), 'lcow-bench-uvm-'));
      const sb = new QemuSandbox({
        id: `bench-${process.pid}-${i}`,
        stateDir: dir,
        logger: silentLogger,
        annotations: {},
      });
      try {
        const b = await sb.boot();
        accel = sb.accel ?? accel;
        ready.push(sb.timings.ready ?? NaN);
        qemuRss.push(rssMiB(b.pids[0]!));
      } finally {
        await sb.stop('force').catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      }
    }
    const col = { accel: accel.toUpperCase() };
    const bare: number[] = [];
    for (let i = 0; i < RUNS; i++) bare.push(await bareBoot(accel));
    rows.push({
      suite: 'uvm',
      name: 'bare boot to init + poweroff (floor)',
      value: stats(bare).median!,
      unit: 'ms',
      extra: { ...stats(bare), ...col },
    });
    rows.push({
      suite: 'uvm',
      name: 'boot to agent-ready (QemuSandbox)',
      value: stats(ready).median!,
      unit: 'ms',
      extra: { ...stats(ready), ...col },
    });
    rows.push({
      suite: 'uvm',
      name: 'QEMU RSS after agent-ready',
      value: stats(qemuRss).median!,
      unit: 'MiB',
      extra: col,
    });

    // Through containerd: cold pod, then a warm container in the same pod.
    const ns = `lcow-bench-${process.pid}`;
    const cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'warn', namespace: ns });
    try {
      const image = await importTestImage(cd.address, cd.namespace);
      const cold: number[] = [];
      const warm: number[] = [];
      const shimRss: number[] = [];
      const podRss: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const pod = `bench-pod-${i}`;
        const ann = ['--annotation', `io.kubernetes.cri.sandbox-id=${pod}`];
        let t = Date.now();
        const c = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...ann, image, pod, 'true'], {
          timeoutMs: 240_000,
        });
        if (c.code !== 0) throw new Error(`cold ctr run: ${c.stderr}`);
        cold.push(Date.now() - t);
        // Keep a pod up for the warm runs and the RSS figures.
        const keep = `${pod}-sleep`;
        const k = await cd.ctr(['run', '-d', '--runtime', RUNTIME, ...ann, image, keep, 'sleep', '600'], {
          timeoutMs: 240_000,
        });
        if (k.code !== 0) throw new Error(`ctr run -d: ${k.stderr}`);
        t = Date.now();
        const w = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...ann, image, `${pod}-warm`, 'true'], {
          timeoutMs: 120_000,
        });
        if (w.code !== 0) throw new Error(`warm ctr run: ${w.stderr}`);
        warm.push(Date.now() - t);
        for (const p of pidsWhere((a) => a.some((x) => x.includes('containerd-shim-lcow-v1')) && a.includes(ns)))
          shimRss.push(rssMiB(p));
        for (const p of pidsWhere((a) => a[0]?.startsWith('qemu-system') === true && a.includes(`lcow-${pod}`)))
          podRss.push(rssMiB(p));
        await cd.ctr(['task', 'kill', '-s', 'KILL', keep]);
        for (let j = 0; j < 150 && !/STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout); j++)
          await new Promise((r) => setTimeout(r, 200));
        await cd.ctr(['task', 'delete', keep]);
        await cd.ctr(['container', 'rm', keep]);
      }
      rows.push({
        suite: 'uvm',
        name: 'ctr run --rm true, cold pod (boots a UVM)',
        value: stats(cold).median!,
        unit: 'ms',
        extra: { ...stats(cold), ...col },
      });
      rows.push({
        suite: 'uvm',
        name: 'ctr run --rm true, warm (2nd container, same pod)',
        value: stats(warm).median!,
        unit: 'ms',
        extra: { ...stats(warm), ...col },
      });
      rows.push({
        suite: 'uvm',
        name: 'shim RSS per pod (2 containers)',
        value: stats(shimRss).median!,
        unit: 'MiB',
        extra: col,
      });
      rows.push({
        suite: 'uvm',
        name: 'QEMU RSS per pod (2 containers)',
        value: stats(podRss).median!,
        unit: 'MiB',
        extra: col,
      });
    } finally {
      await cd.stop();
    }
    return rows;
  },
};
