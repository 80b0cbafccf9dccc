// Pod start and density targets (issue 11), all measured in one run and printed beside the figures measured
// before templates (the "today" column) and the targets:
//  - `ctr run --rm true` in a new pod, UVM restored from a template; also against the process backend;
//  - the same for the first pod on the host (no template yet), against the floor: a bare boot of the same
//    kernel and image to init plus `node -e 0` in that guest (lcow.mode=floor);
//  - host memory (PSS of QEMU + shim) per idle pod with 10 idle pods up at once, and shim RSS per pod;
//  - `ctr run --rm true` with the process backend against io.containerd.runc.v2.
// Each private containerd gets its own template dir, so "first pod" really finds no template.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { processPrivateBytes, processPssBytes, processRssBytes } from '../../src/util/proc.js';
import { startContainerd, type PrivateContainerd } from '../helpers/containerd.js';
import { importTestImage } from '../helpers/image.js';
import type { BenchRow, BenchSuite } from './harness.js';
import { defaultKernel, guestImageArgs } from '../../src/sandbox/qemu/config.js';
import { podProcesses, removeIdlePods, startIdlePods } from '../helpers/idle-pods.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
// The kernel the pods boot (the uncompressed vmlinux when the image has one), so the floor is measured alike.
const KERNEL = defaultKernel(join(ROOT, 'build/guest'));
const INITRD = join(ROOT, 'build/guest/initrd.img');
const ROOTFS = existsSync(join(ROOT, 'build/guest/rootfs.erofs')) ? join(ROOT, 'build/guest/rootfs.erofs') : '';
const LCOW = 'io.containerd.lcow.v1';
const RUNC = 'io.containerd.runc.v2';
const RUNS = Number(process.env.LCOW_BENCH_TARGET_RUNS ?? 3);
const IDLE_PODS = Number(process.env.LCOW_BENCH_IDLE_PODS ?? 10);
const MiB = 2 ** 20;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
};

/** Boots the image with lcow.mode=floor: ms from spawning QEMU until the guest said `node -e 0` ended. */
function floorBoot(kernel = KERNEL): Promise<number> {
  const t0 = Date.now();
  return new Promise((res, rej) => {
    const q = spawn(
      'qemu-system-x86_64',
      [
        ...['-name', `lcow-bench-floor-${process.pid}`, '-accel', 'tcg', '-machine', 'pc', '-m', '1024', '-smp', '1'],
        ...guestImageArgs(kernel, INITRD, ROOTFS),
        ...['-append', 'console=ttyS0 quiet loglevel=3 panic=-1 tsc=reliable no_timer_check lcow.mode=floor'],
      ],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let ms: number | undefined;
    createInterface({ input: q.stdout! }).on('line', (l) => {
      if (ms === undefined && l.includes('LCOW floor node-done')) {
        ms = Date.now() - t0;
        q.kill('SIGKILL');
      }
    });
    const t = setTimeout(() => q.kill('SIGKILL'), 180_000);
    q.on('error', rej);
    q.on('close', () => {
      clearTimeout(t);
      if (ms !== undefined) res(ms);
      else rej(new Error('floor boot: the guest never finished node -e 0'));
    });
  });
}

async function timedRun(cd: PrivateContainerd, runtime: string, id: string, pod?: string): Promise<number> {
  const ann = pod ? ['--annotation', `io.kubernetes.cri.sandbox-id=${pod}`] : [];
  const image = await importTestImage(cd.address, cd.namespace);
  const t0 = performance.now();
  const r = await cd.ctr(['run', '--rm', '--runtime', runtime, ...ann, image, id, 'true'], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`${runtime} ctr run ${id}: ${r.stderr}\n${cd.log().slice(-2000)}`);
  return performance.now() - t0;
}

/** RSS of an idle Node process that loaded nothing (the floor under any shim written for Node). */
async function idleNodeRssMiB(): Promise<number> {
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1 << 30)'], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 1000));
    return ((await processRssBytes(child.pid!)) ?? NaN) / MiB;
  } finally {
    child.kill('SIGKILL');
  }
}

function row(
  name: string,
  value: number,
  unit: string,
  today: string,
  target: string,
  met: boolean,
  extra: Record<string, number | string> = {},
): BenchRow {
  return { suite: 'targets', name, value, unit, extra, target: { today, goal: target, met } };
}

export const suite: BenchSuite = {
  name: 'targets',
  unavailable: async () => {
    if (!existsSync(INITRD) || !existsSync(KERNEL)) return 'no guest image (make guest)';
    if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
    if (process.getuid?.() !== 0) return 'needs root';
    return undefined;
  },
  run: async () => {
    const rows: BenchRow[] = [];
    const tplDir = mkdtempSync('/dev/shm/lcow-bench-templates-');
    const ns = `lcow-bench-t-${process.pid}`;
    const bin = join(ROOT, 'bin');
    try {
      // 1. The process backend and runc.v2 (the first run of each warms caches).
      const proc = await startContainerd({ extraPath: [bin], env: { LCOW_SANDBOX: 'process' }, namespace: ns });
      const procMs: number[] = [];
      const runcMs: number[] = [];
      try {
        await timedRun(proc, LCOW, 'warm-lcow');
        await timedRun(proc, RUNC, 'warm-runc');
        for (let i = 0; i < RUNS + 2; i++) {
          procMs.push(await timedRun(proc, LCOW, `p-${i}`));
          runcMs.push(await timedRun(proc, RUNC, `r-${i}`));
        }
      } finally {
        await proc.stop();
      }
      const procMedian = median(procMs);
      const runcMedian = median(runcMs);

      // 2. The floor.
      const floor: number[] = [];
      for (let i = 0; i < 2; i++) floor.push(await floorBoot());
      const floorMs = median(floor);
      // The same floor with the compressed bzImage (what pods booted before the PVH vmlinux), for comparison.
      const bzImage = join(ROOT, 'build/guest/vmlinuz');
      const floorBzImage: number[] = [];
      if (KERNEL !== bzImage) for (let i = 0; i < 2; i++) floorBzImage.push(await floorBoot(bzImage));

      // 3. UVM pods with templates (fresh template dir: the first pod finds none).
      const cd = await startContainerd({ extraPath: [bin], env: { LCOW_TEMPLATE_DIR: tplDir }, namespace: ns });
      let firstMs: number;
      const cloneMs: number[] = [];
      const pss: number[] = [];
      const shimRss: number[] = [];
      const shimPrivate: number[] = [];
      const qemuPss: number[] = [];
      try {
        firstMs = await timedRun(cd, LCOW, `first-${process.pid}`, `first-${process.pid}`);
        for (let i = 0; i < RUNS; i++)
          cloneMs.push(await timedRun(cd, LCOW, `c${i}-${process.pid}`, `c${i}-${process.pid}`));
        const image = await importTestImage(cd.address, cd.namespace);
        const idle = Array.from({ length: IDLE_PODS }, (_, i) => `idle${i}-${process.pid}`);
        try {
          await startIdlePods(cd, image, idle);
          await new Promise((r) => setTimeout(r, 5000)); // settle: idle means idle
          for (const id of idle) {
            const { qemu, shim } = podProcesses(id);
            const q = (await processPssBytes(qemu)) ?? NaN;
            const s = (await processPssBytes(shim)) ?? NaN;
            qemuPss.push(q / MiB);
            pss.push((q + s) / MiB);
            shimRss.push(((await processRssBytes(shim)) ?? NaN) / MiB);
            shimPrivate.push(((await processPrivateBytes(shim)) ?? NaN) / MiB);
          }
        } finally {
          await removeIdlePods(cd, idle);
        }
      } finally {
        await cd.stop();
      }

      // 4. Templates off: the cold path.
      const cold = await startContainerd({ extraPath: [bin], env: { LCOW_TEMPLATES: '0' }, namespace: ns });
      const coldMs: number[] = [];
      try {
        for (let i = 0; i < 2; i++)
          coldMs.push(await timedRun(cold, LCOW, `cold${i}-${process.pid}`, `cold${i}-${process.pid}`));
      } finally {
        await cold.stop();
      }

      const clone = median(cloneMs);
      rows.push(
        row(
          'ctr run --rm true, new pod, UVM from a template (TCG)',
          clone,
          'ms',
          '14.6–25 s',
          '≤ 2000 ms, ≤ 3× process',
          clone <= 2000 && clone <= 3 * procMedian,
          {
            x_process: clone / procMedian,
            min: Math.min(...cloneMs),
            max: Math.max(...cloneMs),
          },
        ),
      );
      rows.push(
        row(
          'ctr run --rm true, first pod on the host (no template yet)',
          firstMs,
          'ms',
          '14.6–25 s',
          '≤ floor + 500 ms',
          firstMs <= floorMs + 500,
          {
            floor_ms: floorMs,
            ...(floorBzImage.length ? { floor_bzimage_ms: median(floorBzImage) } : {}),
            above_floor_ms: firstMs - floorMs,
          },
        ),
      );
      rows.push(
        row(
          'ctr run --rm true, templates off (cold boot)',
          median(coldMs),
          'ms',
          '14.6–25 s',
          '(cold path, no target)',
          true,
          {
            floor_ms: floorMs,
            above_floor_ms: median(coldMs) - floorMs,
          },
        ),
      );
      const pssMean = pss.reduce((a, b) => a + b, 0) / pss.length;
      rows.push(
        row(
          `idle pod PSS (QEMU + shim), ${IDLE_PODS} pods up`,
          pssMean,
          'MiB',
          '549 MiB',
          '≤ 128 MiB',
          pssMean <= 128,
          {
            qemu_pss_MiB: median(qemuPss),
            max_MiB: Math.max(...pss),
          },
        ),
      );
      rows.push(
        row(
          'ctr run --rm true, process backend vs runc.v2',
          procMedian / runcMedian,
          'x',
          '5–8×',
          '≤ 1.5×',
          procMedian / runcMedian <= 1.5,
          {
            process_ms: procMedian,
            runc_v2_ms: runcMedian,
          },
        ),
      );
      const rss = median(shimRss);
      const bareNode = await idleNodeRssMiB();
      rows.push(
        row('shim RSS per pod', rss, 'MiB', '60 MiB', '≤ 45 MiB', rss <= 45, {
          max_MiB: Math.max(...shimRss),
          // What one more pod's shim costs (its own pages), and the RSS of an idle `node` doing nothing at all.
          private_MiB: median(shimPrivate),
          bare_node_rss_MiB: bareNode,
        }),
      );
    } finally {
      rmSync(tplDir, { recursive: true, force: true });
      rmSync(`/var/log/lcow/${ns}`, { recursive: true, force: true }); // the pods' kept logs
    }
    return rows;
  },
};
