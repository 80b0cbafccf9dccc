import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpanKind } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { Task as TaskV2 } from '../../../src/gen/containerd/task/v2/shim_pb.js';
import { createTaskServer } from '../../../src/task/server.js';
import { TaskService } from '../../../src/task/service.js';
import {
  formatTraceparent,
  installTracing,
  parseTraceparent,
  shutdownTelemetry,
  tracedClient,
  tracingEnabled,
  tracingRequested,
  withRpcSpan,
} from '../../../src/telemetry/index.js';
import { createClient, Metadata, TtrpcClient } from '../../../src/ttrpc/index.js';
import { silentLogger } from '../../../src/util/log.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_ID = '00f067aa0ba902b7';
const TRACEPARENT = `00-${TRACE_ID}-${PARENT_ID}-01`;

describe('telemetry', () => {
  afterEach(async () => {
    await shutdownTelemetry();
  });

  it('is off by default and asks for nothing unless OTEL_* says so', () => {
    assert.equal(tracingEnabled(), false);
    assert.equal(tracingRequested({}), false);
    assert.equal(tracingRequested({ OTEL_TRACES_EXPORTER: 'none' }), false);
    assert.equal(tracingRequested({ OTEL_TRACES_EXPORTER: 'otlp' }), true);
    assert.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x:4318' }), true);
    assert.equal(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x', OTEL_SDK_DISABLED: 'true' }), false);
    const client = { call: () => 1 };
    assert.equal(tracedClient(client), client, 'no proxy when off');
    assert.equal(
      withRpcSpan({ service: 's', method: 'm', metadata: new Metadata() }, () => 7),
      7,
      'plain call when off',
    );
  });

  it('parses and formats W3C traceparent', () => {
    const sc = parseTraceparent(TRACEPARENT, 'vendor=abc');
    assert.ok(sc);
    assert.equal(sc.traceId, TRACE_ID);
    assert.equal(sc.spanId, PARENT_ID);
    assert.equal(sc.traceFlags, 1);
    assert.equal(sc.isRemote, true);
    assert.equal(sc.traceState?.get('vendor'), 'abc');
    assert.equal(formatTraceparent(sc), TRACEPARENT);
    for (const bad of [
      '',
      'garbage',
      `ff-${TRACE_ID}-${PARENT_ID}-01`,
      `00-${'0'.repeat(32)}-${PARENT_ID}-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `00-${TRACE_ID}-${PARENT_ID}-01-extra`,
      `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`,
    ])
      assert.equal(parseTraceparent(bad), undefined, bad);
  });

  it('a Task RPC is a SERVER span whose parent is the traceparent from ttrpc metadata; agent calls carry it on', async () => {
    const exporter = new InMemorySpanExporter();
    installTracing(
      new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] }),
      new AsyncLocalStorageContextManager(),
    );
    const svc = new TaskService({
      namespace: 'ns',
      logger: silentLogger,
      publisher: { publish: () => undefined },
      createSandbox: () => Promise.reject(new Error('no sandbox in this test')),
      stateRoot: '/nonexistent',
      hostCgroupVersion: 1,
      onShutdown: () => undefined,
    });
    const server = createTaskServer(svc, silentLogger);
    const dir = mkdtempSync(join(tmpdir(), 'otel-test-'));
    const sock = join(dir, 's.sock');
    await server.serve(sock);
    const client = await TtrpcClient.connect(sock);
    try {
      const task = createClient(TaskV2, client);
      const r = await task.connect({ id: 'x' }, { metadata: { traceparent: TRACEPARENT, tracestate: 'vendor=abc' } });
      assert.equal(r.shimPid, process.pid);
      await assert.rejects(task.state({ id: 'missing' }, { metadata: { traceparent: TRACEPARENT } }));
    } finally {
      client.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
    const spans = exporter.getFinishedSpans();
    const connect = spans.find((s) => s.name === 'containerd.task.v2.Task/Connect');
    assert.ok(connect, spans.map((s) => s.name).join(', '));
    assert.equal(connect.kind, SpanKind.SERVER);
    assert.equal(connect.spanContext().traceId, TRACE_ID);
    assert.equal(connect.parentSpanContext?.spanId, PARENT_ID);
    assert.equal(connect.spanContext().traceState?.get('vendor'), 'abc');
    const state = spans.find((s) => s.name === 'containerd.task.v2.Task/State');
    assert.ok(state);
    assert.equal(state.status.code, 2, 'an error status for NotFound');

    // Inside a served span, an outgoing (agent) call carries this span as its parent.
    let seen: Record<string, string> | undefined;
    const agent = tracedClient({
      getInfo: async (_req: unknown, opts?: { metadata?: Record<string, string> }) => (seen = opts?.metadata),
    });
    const md = new Metadata({ traceparent: TRACEPARENT });
    await withRpcSpan({ service: 'containerd.task.v2.Task', method: 'Create', metadata: md }, () =>
      agent.getInfo({}, { metadata: { 'containerd-namespace-ttrpc': 'ns' } }),
    );
    const create = exporter.getFinishedSpans().find((s) => s.name === 'containerd.task.v2.Task/Create');
    assert.ok(create && seen);
    assert.equal(seen['containerd-namespace-ttrpc'], 'ns', 'existing metadata kept');
    assert.equal(seen.traceparent, `00-${TRACE_ID}-${create.spanContext().spanId}-01`);
  });
});
