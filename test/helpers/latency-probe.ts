// Measures how long another connection waits for the 9P server while an attack runs: a worker thread (its own
// event loop, so the attacker's client-side work in the test never inflates the numbers) attaches to the
// server and sends Tgetattr every few milliseconds, keeping the slowest round trip.
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { P9Client } from './p9client.js';

export interface ProbeResult {
  /** Slowest Tgetattr round trip, ms. */
  maxMs: number;
  /** Round trips completed. */
  count: number;
  /** A request was still waiting when the probe stopped (its wait so far counts in maxMs). */
  pending: boolean;
}

export interface LatencyProbe {
  stop(): Promise<ProbeResult>;
}

interface ProbeData {
  port: number;
  aname: string;
  intervalMs: number;
}

/** Starts probing; resolves once the probe is attached and has one answer. */
export async function startLatencyProbe(port: number, aname: string, intervalMs = 5): Promise<LatencyProbe> {
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { port, aname, intervalMs } as ProbeData });
  await new Promise<void>((resolve, reject) => {
    worker.once('message', (m: { ready?: boolean; error?: string }) =>
      m.ready ? resolve() : reject(new Error(`latency probe: ${m.error}`)),
    );
    worker.once('error', reject);
  });
  return {
    stop: async () => {
      const result = new Promise<ProbeResult>((resolve, reject) => {
        worker.once('message', (m: ProbeResult) => resolve(m));
        worker.once('error', reject);
      });
      worker.postMessage('stop');
      const r = await result;
      await worker.terminate();
      return r;
    },
  };
}

async function probeMain(d: ProbeData): Promise<void> {
  let c: P9Client;
  let root: number;
  try {
    c = await P9Client.connect(d.port);
    await c.version(65536);
    root = (await c.attach(d.aname)).fid;
    await c.getattr(root);
  } catch (err) {
    parentPort!.postMessage({ error: String(err) });
    return;
  }
  let stopped = false;
  let maxMs = 0;
  let count = 0;
  let inflightSince = 0;
  parentPort!.on('message', () => {
    stopped = true;
    const waiting = inflightSince > 0 ? performance.now() - inflightSince : 0;
    parentPort!.postMessage({ maxMs: Math.max(maxMs, waiting), count, pending: inflightSince > 0 } as ProbeResult);
    c.close();
  });
  parentPort!.postMessage({ ready: true });
  while (!stopped) {
    inflightSince = performance.now();
    try {
      await c.getattr(root);
    } catch {
      break;
    }
    const ms = performance.now() - inflightSince;
    inflightSince = 0;
    count++;
    if (ms > maxMs) maxMs = ms;
    await new Promise((r) => setTimeout(r, d.intervalMs));
  }
}

if (!isMainThread && (workerData as ProbeData | undefined)?.port !== undefined) void probeMain(workerData as ProbeData);
