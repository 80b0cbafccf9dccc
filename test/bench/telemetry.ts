// What telemetry costs when nobody asked for traces ("off and free"), in process, client and server on
// loopback, calls interleaved between configurations (the host is shared) and the median round kept:
//  - Task RPC (Task.State through the real Task server): tracing off vs the same server built from the bare
//    implementation (no telemetry code at all), and vs tracing on (for reference);
//  - agent RPC (GetInfo): the hooks that stay on when tracing is off (the agent's per-call tracing check, the
//    shim's latency histogram) vs the bare client and server;
//  - 9P (Tgetattr, one caller): the server with its metrics observer vs without.
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BatchSpanProcessor, TracerProvider, type SpanExporter } from '@opentelemetry/sdk-trace';
import { Agent as AgentDesc } from '../../src/gen/agent/v1/agent_pb.js';
import { Task as TaskV2 } from '../../src/gen/containerd/task/v2/shim_pb.js';
import { P9Server } from '../../src/p9/server.js';
import { TaskService } from '../../src/task/service.js';
import { createTaskServer } from '../../src/task/server.js';
import { instrumentClient } from '../../src/telemetry/client.js';
import { flushGuestSpans } from '../../src/telemetry/guest-spans.js';
import { installTracing, shutdownTelemetry, traceServiceImpl, withRpcSpan } from '../../src/telemetry/index.js';
import { MetricsRegistry } from '../../src/telemetry/metrics.js';
import { P9Metrics } from '../../src/telemetry/p9-metrics.js';
import { createClient, Metadata, TtrpcClient, TtrpcServer } from '../../src/ttrpc/index.js';
import { silentLogger } from '../../src/util/log.js';
import { P9Client } from '../helpers/p9client.js';
import type { BenchRow, BenchSuite } from './harness.js';

const ROUNDS = Number(process.env.BENCH_TELEMETRY_ROUNDS ?? 7);
const ROUND_MS = 400;

/**
 * Calls interleaved across configurations (A, B, A, B...: load from other processes hits all alike), each
 * timed on its own, for ROUND_MS per round; the mean latency in µs of each, median over ROUNDS rounds.
 */
async function compare(configs: Record<string, () => Promise<unknown>>): Promise<Record<string, number>> {
  const entries = Object.entries(configs);
  for (const [, call] of entries) for (let i = 0; i < 200; i++) await call(); // warm
  const samples: Record<string, number[]> = Object.fromEntries(entries.map(([k]) => [k, []]));
  for (let r = 0; r < ROUNDS; r++) {
    const sum: Record<string, number> = Object.fromEntries(entries.map(([k]) => [k, 0]));
    let n = 0;
    const end = performance.now() + ROUND_MS * entries.length;
    while (performance.now() < end) {
      for (const [k, call] of entries) {
        const t0 = performance.now();
        await call();
        sum[k]! += performance.now() - t0;
      }
      n++;
    }
    for (const [k] of entries) samples[k]!.push((sum[k]! * 1000) / n);
  }
  return Object.fromEntries(
    Object.entries(samples).map(([k, xs]) => [k, [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!]),
  );
}

async function serve(server: TtrpcServer, dir: string, name: string): Promise<TtrpcClient> {
  const sock = join(dir, name);
  await server.serve(sock);
  return TtrpcClient.connect(sock);
}

const nullExporter: SpanExporter = { export: (_s, done) => done({ code: 0 }), shutdown: async () => undefined };

function taskService(): TaskService {
  return new TaskService({
    namespace: 'bench',
    logger: silentLogger,
    publisher: { publish: () => undefined },
    createSandbox: () => Promise.reject(new Error('no sandbox in this bench')),
    stateRoot: '/nonexistent',
    hostCgroupVersion: 2,
    onShutdown: () => undefined,
  });
}

async function run(): Promise<BenchRow[]> {
  const dir = mkdtempSync(join(tmpdir(), 'lcow-bench-tel-'));
  const closers: Array<() => unknown> = [];
  const rows: BenchRow[] = [];
  try {
    // ---- Task RPC: Connect (answered by the service itself) ----
    const svc = taskService();
    const offServer = createTaskServer(svc, silentLogger); // tracing is off here
    const bareServer = new TtrpcServer({ logger: silentLogger });
    bareServer.registerService(TaskV2, { connect: async (r) => svc.connect(r) });
    installTracing(
      new TracerProvider({ spanProcessors: [new BatchSpanProcessor({ exporter: nullExporter })] }),
      new AsyncLocalStorageContextManager(),
    );
    const onServer = createTaskServer(svc, silentLogger); // built while tracing is on: every RPC a span
    await shutdownTelemetry();
    const clients: Record<string, ReturnType<typeof createClient<(typeof TaskV2)['method']>>> = {};
    for (const [name, server] of Object.entries({ off: offServer, bare: bareServer, on: onServer })) {
      const c = await serve(server, dir, `task-${name}.sock`);
      closers.push(
        () => c.close(),
        () => server.close(),
      );
      clients[name] = createClient(TaskV2, c);
    }
    const req = { id: 'x' };
    const task = await compare({
      bare: () => clients.bare!.connect(req),
      off: () => clients.off!.connect(req),
    });
    installTracing(
      new TracerProvider({ spanProcessors: [new BatchSpanProcessor({ exporter: nullExporter })] }),
      new AsyncLocalStorageContextManager(),
    );
    const taskOn = await compare({ on: () => clients.on!.connect(req) });
    await shutdownTelemetry();
    rows.push({
      suite: 'telemetry',
      name: 'Task RPC (Connect) latency, tracing off',
      value: task.off!,
      unit: 'µs',
      extra: { no_hooks_us: task.bare!, ratio: task.off! / task.bare!, tracing_on_us: taskOn.on! },
    });

    // ---- agent RPC: GetInfo through the hooks that stay on ----
    const info = async () => ({ version: 'bench', pid: process.pid, cgroupVersion: 2, kernel: '', runcVersion: '' });
    const bareAgent = new TtrpcServer({ logger: silentLogger });
    bareAgent.registerService(AgentDesc, { getInfo: info });
    const hookedAgent = new TtrpcServer({ logger: silentLogger });
    // As src/agent/server.ts builds it.
    hookedAgent.registerService(
      AgentDesc,
      traceServiceImpl({ getInfo: info }, { requireParent: true, afterEnd: flushGuestSpans }, ['streamSpans']),
    );
    const bareConn = await serve(bareAgent, dir, 'agent-bare.sock');
    const hookedConn = await serve(hookedAgent, dir, 'agent-hooked.sock');
    closers.push(
      () => bareConn.close(),
      () => hookedConn.close(),
      () => bareAgent.close(),
      () => hookedAgent.close(),
    );
    const bareClient = createClient(AgentDesc, bareConn);
    const hookedClient = instrumentClient(AgentDesc, createClient(AgentDesc, hookedConn), {
      registry: new MetricsRegistry(),
    });
    const agent = await compare({
      bare: () => bareClient.getInfo({}),
      hooked: () => hookedClient.getInfo({}),
    });
    installTracing(
      new TracerProvider({ spanProcessors: [new BatchSpanProcessor({ exporter: nullExporter })] }),
      new AsyncLocalStorageContextManager(),
    );
    const md = new Metadata();
    const agentOn = await compare({
      on: async () => withRpcSpan({ service: 'b', method: 'b', metadata: md }, () => hookedClient.getInfo({})),
    });
    await shutdownTelemetry();
    rows.push({
      suite: 'telemetry',
      name: 'agent RPC (GetInfo) latency, tracing off (metrics on)',
      value: agent.hooked!,
      unit: 'µs',
      extra: { no_hooks_us: agent.bare!, ratio: agent.hooked! / agent.bare!, tracing_on_us: agentOn.on! },
    });

    // ---- 9P getattr with and without the metrics observer ----
    const exportDir = mkdtempSync(join(dir, 'p9-'));
    const p9 = async (observer?: P9Metrics): Promise<() => Promise<unknown>> => {
      const server = new P9Server({ exports: [{ name: 'b', path: exportDir }], observer });
      const listener = net.createServer((s) => server.handleConnection(s));
      await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
      const c = await P9Client.connect((listener.address() as net.AddressInfo).port);
      await c.version(65536);
      const { fid } = await c.attach('b');
      closers.push(
        () => c.close(),
        () => server.close(),
        () => listener.close(),
      );
      return () => c.getattr(fid);
    };
    const p9r = await compare({
      bare: await p9(),
      observed: await p9(new P9Metrics({ share: 'b', path: exportDir }, new MetricsRegistry())),
    });
    rows.push({
      suite: 'telemetry',
      name: '9P getattr latency with metrics (1 caller)',
      value: p9r.observed!,
      unit: 'µs',
      extra: { no_hooks_us: p9r.bare!, ratio: p9r.observed! / p9r.bare! },
    });

    // ---- the hooks alone, per call (no I/O: stable on a busy host) ----
    const hookNs = async (withHook: () => unknown, without: () => unknown): Promise<number> => {
      const N = 200_000;
      const time = async (f: () => unknown): Promise<number> => {
        const t0 = performance.now();
        for (let i = 0; i < N; i++) await f();
        return ((performance.now() - t0) * 1e6) / N;
      };
      const a: number[] = [];
      const b: number[] = [];
      for (let r = 0; r < 5; r++) {
        a.push(await time(withHook));
        b.push(await time(without));
      }
      const med = (xs: number[]): number => [...xs].sort((x, y) => x - y)[2]!;
      return Math.max(0, med(a) - med(b));
    };
    const registry = new MetricsRegistry();
    const observer = new P9Metrics({ share: 'b', path: '/b' }, registry);
    const { RequestTimer } = await import('../../src/p9/observer.js');
    const timer = new RequestTimer(observer, 1, () => 3);
    const tframe = Buffer.from([11, 0, 0, 0, 24, 1, 0, 1, 0, 0, 0]);
    const rframe = Buffer.alloc(160);
    rframe.writeUInt32LE(160, 0);
    rframe[4] = 25;
    rframe.writeUInt16LE(1, 5);
    const p9Hook = await hookNs(
      () => (timer.arrived(tframe), timer.replied(rframe)),
      () => undefined,
    );
    const rawInfo = { getInfo: info } as unknown as Parameters<typeof instrumentClient>[1];
    const hooked = instrumentClient(AgentDesc, rawInfo, { registry });
    const clientHook = await hookNs(
      () => hooked.getInfo({}),
      () => info(),
    );
    const served = traceServiceImpl({ getInfo: info }, { requireParent: true, afterEnd: flushGuestSpans });
    const ctx = { service: 's', method: 'm', metadata: new Metadata() };
    const serverHook = await hookNs(
      () => (served.getInfo as (c: unknown) => unknown)(ctx),
      () => info(),
    );
    rows.push({
      suite: 'telemetry',
      name: 'hook cost per call, tracing off: 9P observer',
      value: p9Hook,
      unit: 'ns',
      extra: { of_round_trip: p9Hook / 1000 / p9r.bare! },
    });
    rows.push({
      suite: 'telemetry',
      name: 'hook cost per call, tracing off: agent client + server',
      value: clientHook + serverHook,
      unit: 'ns',
      extra: { of_round_trip: (clientHook + serverHook) / 1000 / agent.bare! },
    });
  } finally {
    await shutdownTelemetry();
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export const suite: BenchSuite = { name: 'telemetry', run };
