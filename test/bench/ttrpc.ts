// ttrpc unary round trips over a unix socket: throughput and latency with 1 and 64 concurrent callers,
// small payloads and 64 KiB ones. The server runs in a worker thread, as the peer is another process in
// real use: with both ends on one JS thread, batches of in-flight calls outlive young-generation GCs and
// the figures measure the garbage collector instead of ttrpc.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { TtrpcClient, TtrpcServer } from '../../src/ttrpc/index.js';
import { percentile, type BenchRow, type BenchSuite } from './harness.js';

const SERVICE = 'bench.Echo';
const DURATION_MS = 2500;
const WARMUP_MS = 400;

interface Case {
  name: string;
  callers: number;
  payloadBytes: number;
}

const CASES: Case[] = [
  { name: 'unary round trips, 1 caller, 32 B', callers: 1, payloadBytes: 32 },
  { name: 'unary round trips, 64 callers, 32 B', callers: 64, payloadBytes: 32 },
  { name: 'unary round trips, 1 caller, 64 KiB', callers: 1, payloadBytes: 64 * 1024 },
  { name: 'unary round trips, 64 callers, 64 KiB', callers: 64, payloadBytes: 64 * 1024 },
];

const WORKER_ROLE = 'ttrpc-bench-server';

/** Worker side: serve Echo on the given path until told to stop. */
async function runServerWorker(path: string): Promise<void> {
  const server = new TtrpcServer();
  server.register(SERVICE, 'Echo', async (p) => p);
  await server.serve(path);
  parentPort!.postMessage('ready');
  parentPort!.once('message', () => void server.close().then(() => parentPort!.close()));
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === WORKER_ROLE) {
  await runServerWorker((workerData as { path: string }).path);
}

async function startServerWorker(path: string): Promise<Worker> {
  const worker = new Worker(new URL(import.meta.url), { workerData: { role: WORKER_ROLE, path } });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', () => resolve());
    worker.once('error', reject);
  });
  return worker;
}

async function measure(
  client: TtrpcClient,
  c: Case,
  durationMs: number,
): Promise<{ calls: number; lat: Float64Array }> {
  const payload = new Uint8Array(c.payloadBytes).fill(7);
  // Preallocated: a growing JS array would itself churn the heap being measured.
  let lat = new Float64Array(1 << 16);
  let calls = 0;
  const end = performance.now() + durationMs;
  await Promise.all(
    Array.from({ length: c.callers }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const reply = await client.call(SERVICE, 'Echo', payload);
        if (calls === lat.length) {
          const grown = new Float64Array(lat.length * 2);
          grown.set(lat);
          lat = grown;
        }
        lat[calls++] = performance.now() - t0;
        if (reply.length !== payload.length) throw new Error('bad echo');
      }
    }),
  );
  return { calls, lat: lat.subarray(0, calls) };
}

export const suite: BenchSuite = {
  name: 'ttrpc',
  async run(): Promise<BenchRow[]> {
    const dir = mkdtempSync(join(tmpdir(), 'ttrpc-bench-'));
    const rows: BenchRow[] = [];
    const worker = await startServerWorker(join(dir, 'bench.sock'));
    try {
      const client = await TtrpcClient.connect(join(dir, 'bench.sock'));
      try {
        for (const c of CASES) {
          await measure(client, c, WARMUP_MS);
          const started = performance.now();
          const { calls, lat } = await measure(client, c, DURATION_MS);
          const seconds = (performance.now() - started) / 1000;
          const sorted = Array.from(lat.sort());
          rows.push({
            suite: 'ttrpc',
            name: c.name,
            value: Math.round(calls / seconds),
            unit: 'calls/s',
            extra: {
              p50_us: Math.round(percentile(sorted, 50) * 1000),
              p99_us: Math.round(percentile(sorted, 99) * 1000),
              MiB_per_s: Number(((calls * c.payloadBytes * 2) / seconds / (1 << 20)).toFixed(1)),
            },
          });
        }
      } finally {
        client.close();
      }
    } finally {
      worker.postMessage('stop');
      await new Promise((resolve) => worker.once('exit', resolve));
      rmSync(dir, { recursive: true, force: true });
    }
    return rows;
  },
};
