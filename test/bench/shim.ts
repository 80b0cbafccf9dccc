// Shim benchmarks against the same private containerd and image: `ctr run --rm ... true` latency (ours with
// the process backend vs io.containerd.runc.v2), shim RSS, and Task.State round trips per second with the
// same ttrpc client against each shim.
import { readFileSync, readdirSync } from 'node:fs';
import { create, toBinary } from '@bufbuild/protobuf';
import { StateRequestSchema } from '../../src/gen/containerd/task/v2/shim_pb.js';
import { socketAddress, socketPath } from '../../src/shim/address.js';
import { NAMESPACE_KEY, TtrpcClient } from '../../src/ttrpc/index.js';
import { containerdUnavailable, startContainerd } from '../helpers/containerd.js';
import { importTestImage } from '../helpers/image.js';
import { BIN_DIR } from '../integration/shim/helpers.js';
import type { BenchRow, BenchSuite } from './harness.js';

const RUNS = Number(process.env.BENCH_SHIM_RUNS ?? 10);
const STATE_SECONDS = 2;
const RUNTIMES = { lcow: 'io.containerd.lcow.v1', runc: 'io.containerd.runc.v2' } as const;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

function rssOf(pattern: RegExp): number {
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (!pattern.test(cmd)) continue;
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    } catch {
      // gone
    }
  }
  return 0;
}

export const suite: BenchSuite = {
  name: 'shim',
  async unavailable() {
    if (process.getuid?.() !== 0) return 'needs root (runc)';
    return containerdUnavailable();
  },
  async run() {
    const cd = await startContainerd({ extraPath: [BIN_DIR], env: { LCOW_SANDBOX: 'process' }, logLevel: 'info' });
    const rows: BenchRow[] = [];
    try {
      const image = await importTestImage(cd.address, cd.namespace);
      const lat: Record<string, number> = {};
      for (const [name, rt] of Object.entries(RUNTIMES)) {
        const ms: number[] = [];
        for (let i = 0; i < RUNS + 1; i++) {
          const t0 = performance.now();
          const r = await cd.ctr(['run', '--rm', '--runtime', rt, image, `bench-${name}-${i}`, 'true'], {
            timeoutMs: 60_000,
          });
          if (r.code !== 0) throw new Error(`${rt}: ctr run failed: ${r.stderr}`);
          if (i > 0) ms.push(performance.now() - t0); // first run warms caches
        }
        lat[name] = median(ms);
      }
      rows.push({
        suite: 'shim',
        name: `ctr run --rm true, median of ${RUNS}, lcow (process backend)`,
        value: lat.lcow!,
        unit: 'ms',
        extra: { runc_v2_ms: lat.runc!, ratio: lat.lcow! / lat.runc! },
      });

      // Long-running containers for RSS and State round trips.
      for (const [name, rt] of Object.entries(RUNTIMES)) {
        const r = await cd.ctr(['run', '-d', '--runtime', rt, image, `bench-long-${name}`, 'sleep', '1000']);
        if (r.code !== 0) throw new Error(`${rt}: ctr run -d failed: ${r.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 500));
      const oursRss = rssOf(/containerd-shim-lcow-v1.*-id bench-long-lcow.*serve/);
      const agentRss = rssOf(/lcow-agent.*\/bench-long-lcow\/agent\.sock/);
      const runcRss = rssOf(/containerd-shim-runc-v2.*-id bench-long-runc/);
      rows.push({
        suite: 'shim',
        name: 'shim RSS, one running container',
        value: oursRss / 2 ** 20,
        unit: 'MiB',
        extra: { agent_MiB: agentRss / 2 ** 20, runc_v2_MiB: runcRss / 2 ** 20, ratio: oursRss / runcRss },
      });

      const rps: Record<string, number> = {};
      for (const name of Object.keys(RUNTIMES)) {
        const id = `bench-long-${name}`;
        const client = await TtrpcClient.connect(socketPath(socketAddress(cd.address, cd.namespace, id)));
        const payload = toBinary(StateRequestSchema, create(StateRequestSchema, { id }));
        const md = { [NAMESPACE_KEY]: cd.namespace };
        let n = 0;
        const end = performance.now() + STATE_SECONDS * 1000;
        const worker = async (): Promise<void> => {
          while (performance.now() < end) {
            await client.call('containerd.task.v2.Task', 'State', payload, { metadata: md });
            n++;
          }
        };
        await Promise.all(Array.from({ length: 8 }, worker));
        client.close();
        rps[name] = n / STATE_SECONDS;
      }
      rows.push({
        suite: 'shim',
        name: 'Task.State round trips, 8 callers',
        value: rps.lcow!,
        unit: 'calls/s',
        extra: { runc_v2: rps.runc!, ratio: rps.lcow! / rps.runc! },
      });
      for (const name of Object.keys(RUNTIMES)) {
        await cd.ctr(['task', 'kill', '-s', 'SIGKILL', `bench-long-${name}`]);
        await new Promise((r) => setTimeout(r, 300));
        await cd.ctr(['task', 'delete', `bench-long-${name}`]);
        await cd.ctr(['container', 'delete', `bench-long-${name}`]);
      }
    } finally {
      await cd.stop();
    }
    return rows;
  },
};
