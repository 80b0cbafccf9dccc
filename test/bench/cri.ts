// Kubernetes-path benchmarks through containerd's CRI plugin, lcow pods against runc pods on the same CNI bridge
// network: RunPodSandbox + CreateContainer + StartContainer latency, TCP throughput host -> pod (32 MiB into
// `nc -e wc -c` in the pod: the pod answers the count once it has every byte), TCP round-trip time host -> pod
// (1-byte echoes through `nc -e cat`), and the memory of an idle lcow pod (QEMU + shim RSS), which
// docs/kubernetes.md uses for the RuntimeClass's overhead.podFixed. Each lcow pod boots a UVM (TCG: 12-25 s).
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { criUnavailable, qemuPidsFor, shimPidsFor, startCri, type CriEnv, type Handler } from '../helpers/cri.js';
import type { BenchRow, BenchSuite } from './harness.js';

const LATENCY_RUNS = {
  runc: Number(process.env.BENCH_CRI_RUNC_RUNS ?? 5),
  lcow: Number(process.env.BENCH_CRI_LCOW_RUNS ?? 3),
};
const UPLOAD_BYTES = 32 << 20;
const ECHOES = 200;
const SERVER = 'while true; do nc -l -p 5001 -e wc -c; done & while true; do nc -l -p 5003 -e cat; done & wait';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    s.setNoDelay(true);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

async function retry<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/** Sends `bytes` then half-closes; resolves Mbit/s once the pod answered the byte count it received. */
async function upload(host: string, bytes: number): Promise<number> {
  const s = await retry(() => connect(host, 5001), 30_000);
  const chunk = Buffer.alloc(64 << 10, 0x61);
  const t0 = performance.now();
  let reply = '';
  const done = new Promise<void>((resolve, reject) => {
    s.setEncoding('utf8');
    s.on('data', (d: string) => (reply += d));
    s.on('end', () => resolve());
    s.on('error', reject);
  });
  for (let sent = 0; sent < bytes; sent += chunk.length)
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  s.end();
  await done;
  const secs = (performance.now() - t0) / 1000;
  if (Number(reply.trim()) !== bytes) throw new Error(`the pod counted ${reply.trim()} bytes, not ${bytes}`);
  s.destroy();
  return (bytes * 8) / secs / 1e6;
}

/** Median round trip of 1-byte echoes, ms. */
async function rtt(host: string): Promise<number> {
  const s = await retry(() => connect(host, 5003), 30_000);
  const times: number[] = [];
  let failed: Error | undefined;
  s.on('error', (e) => (failed = e));
  try {
    for (let i = 0; i < ECHOES; i++) {
      if (failed) throw failed;
      const t0 = performance.now();
      await new Promise<void>((resolve, reject) => {
        const onData = (): void => {
          s.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          s.off('data', onData);
          reject(failed ?? new Error('the echo connection closed'));
        };
        s.once('data', onData);
        s.once('close', onClose);
        s.write('x');
      });
      times.push(performance.now() - t0);
    }
  } finally {
    s.destroy();
  }
  return median(times.slice(10));
}

interface HandlerResult {
  startMs: number;
  mbps: number;
  rttMs: number;
  idleBytes?: number;
}

async function measure(env: CriEnv, handler: Handler): Promise<HandlerResult> {
  const c = env.client;
  const starts: number[] = [];
  let result: Omit<HandlerResult, 'startMs'> | undefined;
  for (let i = 0; i < LATENCY_RUNS[handler]; i++) {
    const config = env.podConfig(`bench-${handler}-${i}`);
    const t0 = performance.now();
    const pod = await c.runPodSandbox({ config, runtimeHandler: handler });
    const ctr = await c.createContainer({
      podSandboxId: pod.podSandboxId,
      sandboxConfig: config,
      config: { metadata: { name: 'srv' }, image: { image: env.image }, command: ['sh', '-c', SERVER] },
    });
    await c.startContainer({ containerId: ctr.containerId });
    starts.push(performance.now() - t0);
    try {
      if (i === 0) {
        const ip = (await c.podSandboxStatus({ podSandboxId: pod.podSandboxId })).status.network?.ip ?? '';
        await upload(ip, 1 << 20); // warm up (ARP, TCP, the guest's page cache)
        const mbps = median([
          await upload(ip, UPLOAD_BYTES),
          await upload(ip, UPLOAD_BYTES),
          await upload(ip, UPLOAD_BYTES),
        ]);
        const rttMs = await rtt(ip);
        let idleBytes: number | undefined;
        if (handler === 'lcow') {
          await new Promise((r) => setTimeout(r, 5000)); // let the guest return freed pages (free page reporting)
          const qemu = qemuPidsFor(pod.podSandboxId);
          const shims = shimPidsFor(env.cd);
          idleBytes = [...qemu, ...shims].reduce((a, p) => a + rssBytes(p), 0);
        }
        result = { mbps, rttMs, idleBytes };
      }
    } finally {
      await c.stopPodSandbox({ podSandboxId: pod.podSandboxId });
      await c.removePodSandbox({ podSandboxId: pod.podSandboxId });
    }
  }
  return { startMs: median(starts), ...result! };
}

export const suite: BenchSuite = {
  name: 'cri',
  async unavailable() {
    return criUnavailable(['runc', 'lcow']);
  },
  async run() {
    const env = await startCri();
    try {
      const runc = await measure(env, 'runc');
      const lcow = await measure(env, 'lcow');
      const rows: BenchRow[] = [
        {
          suite: 'cri',
          name: `RunPodSandbox+CreateContainer+StartContainer, median (lcow ${LATENCY_RUNS.lcow}, runc ${LATENCY_RUNS.runc} runs)`,
          value: lcow.startMs,
          unit: 'ms',
          extra: { runc: runc.startMs, ratio: lcow.startMs / runc.startMs },
        },
        {
          suite: 'cri',
          name: 'TCP throughput host -> pod IP (32 MiB, median of 3)',
          value: lcow.mbps,
          unit: 'Mbit/s',
          extra: { runc: runc.mbps, ratio: lcow.mbps / runc.mbps },
        },
        {
          suite: 'cri',
          name: `TCP round trip host -> pod IP (1-byte echo, median of ${ECHOES - 10})`,
          value: lcow.rttMs,
          unit: 'ms',
          extra: { runc: runc.rttMs, ratio: lcow.rttMs / runc.rttMs },
        },
        {
          suite: 'cri',
          name: 'idle lcow pod memory (QEMU + shim RSS, default 1024 MiB UVM)',
          value: (lcow.idleBytes ?? 0) / 2 ** 20,
          unit: 'MiB',
        },
      ];
      return rows;
    } finally {
      await env.stop();
    }
  },
};
