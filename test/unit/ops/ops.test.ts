// Operations pieces that need no pod: rotated log files, the per-pod log dir and its retention, boot phases
// from console lines, the instrumented agent client, lcowctl's argument parsing and reports, log levels.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from '@opentelemetry/sdk-trace';
import { Agent as AgentDesc } from '../../../src/gen/agent/v1/agent_pb.js';
import { opsConfig, POD_META } from '../../../src/ops/config.js';
import { parseArgs, EXIT } from '../../../src/ops/ctl/args.js';
import { logFiles } from '../../../src/ops/ctl/console.js';
import { duration, table } from '../../../src/ops/ctl/format.js';
import { formatStats } from '../../../src/ops/ctl/stats.js';
import { PodLogs, pruneLogs, readPodMeta } from '../../../src/ops/pod-logs.js';
import { BootPhases, BOOT_PHASE_METRIC } from '../../../src/sandbox/qemu/boot-phases.js';
import { AGENT_RPC_DURATION, instrumentClient } from '../../../src/telemetry/client.js';
import { installTracing, shutdownTelemetry, withRpcSpan } from '../../../src/telemetry/index.js';
import { MetricsRegistry, type HistogramValue } from '../../../src/telemetry/metrics.js';
import { P9Metrics } from '../../../src/telemetry/p9-metrics.js';
import { Metadata, type ServiceClient } from '../../../src/ttrpc/index.js';
import { Logger } from '../../../src/util/log.js';
import { RotatingFile } from '../../../src/util/rotating-file.js';

describe('ops', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'lcow-ops-'))));
  afterEach(async () => {
    rmSync(dir, { recursive: true, force: true });
    await shutdownTelemetry();
  });

  it('a rotated log never holds more than (keep + 1) files of maxBytes', () => {
    const f = new RotatingFile(join(dir, 'console.log'), { maxBytes: 4096, keep: 2 });
    for (let i = 0; i < 1000; i++) f.writeLine(`line ${i} ${'x'.repeat(40)}`);
    f.close();
    const names = readdirSync(dir).sort();
    assert.deepEqual(names, ['console.log', 'console.log.1', 'console.log.2']);
    for (const n of names) assert.ok(readFileSync(join(dir, n)).length <= 4096, n);
    const text = logFiles(dir, 'console.log')
      .map((p) => readFileSync(p, 'utf8'))
      .join('');
    const lines = text.trim().split('\n');
    assert.match(lines.at(-1)!, /^line 999 /, 'newest last');
    const nums = lines.map((l) => Number(l.split(' ')[1]));
    assert.deepEqual(
      nums,
      [...nums].sort((a, b) => a - b),
      'oldest file first, in order',
    );
  });

  it("pod logs: the console whole, the agent's JSON lines apart and in the shim's log with the pod id", () => {
    const shimLines: string[] = [];
    const log = new Logger({ write: (l: string) => shimLines.push(l) }, 'info').with({ pod: 'p1' });
    const cfg = opsConfig({ log_root: dir });
    const logs = new PodLogs(
      cfg,
      {
        id: 'p1',
        namespace: 'ns',
        backend: 'qemu',
        shimPid: process.pid,
        startedAt: new Date().toISOString(),
        stateDir: '/run/x',
      },
      log,
    );
    logs.console('[    1.0] Linux version 6.1');
    logs.console('LCOW init uptime=1.23 kernel=6.1');
    logs.console(
      JSON.stringify({ time: 't', level: 'warn', msg: 'container create failed', container: 'c1', component: 'agent' }),
    );
    logs.console(JSON.stringify({ time: 't', level: 'debug', msg: 'noise' }));
    logs.update({ stoppedAt: new Date().toISOString(), exit: { kind: 'crashed', code: 1, signal: null } });
    logs.close();
    const podDir = join(dir, 'ns', 'p1');
    assert.equal(readFileSync(join(podDir, 'console.log'), 'utf8').split('\n').length, 5, 'every console line');
    const agent = readFileSync(join(podDir, 'agent.log'), 'utf8').trim().split('\n');
    assert.equal(agent.length, 2);
    assert.equal(shimLines.length, 1, 'debug lines stay below the shim level');
    const relogged = JSON.parse(shimLines[0]!);
    assert.equal(relogged.level, 'warn');
    assert.equal(relogged.pod, 'p1');
    assert.equal(relogged.msg, 'agent: container create failed');
    assert.equal(relogged.agent.container, 'c1');
    const meta = readPodMeta(podDir)!;
    assert.equal(meta.exit?.kind, 'crashed');
    assert.equal(meta.logDir, podDir);
    assert.ok(meta.stoppedAt);
  });

  it('retention keeps the newest stopped pods and none too old', () => {
    const mk = (id: string, stoppedDaysAgo: number | undefined, shimPid = 999_999_999): void => {
      const d = join(dir, 'ns', id);
      new PodLogs(
        opsConfig({ log_root: dir }),
        { id, namespace: 'ns', backend: 'qemu', shimPid, startedAt: new Date().toISOString(), stateDir: '/x' },
        new Logger({ write: () => undefined }, 'error'),
      ).close();
      if (stoppedDaysAgo !== undefined) {
        const m = JSON.parse(readFileSync(join(d, POD_META), 'utf8'));
        m.stoppedAt = new Date(Date.now() - stoppedDaysAgo * 86_400_000).toISOString();
        writeFileSync(join(d, POD_META), JSON.stringify(m));
      }
    };
    mk('new', 0.1);
    mk('mid', 1);
    mk('old', 2);
    mk('ancient', 30);
    mk('dead-shim', undefined); // no stoppedAt and its shim is gone: stopped at its dir's mtime
    const longAgo = new Date(Date.now() - 40 * 86_400_000);
    utimesSync(join(dir, 'ns', 'dead-shim'), longAgo, longAgo);
    // Keep 1 stopped pod and nothing older than 7 days; 'new' is the pod starting now.
    assert.deepEqual(pruneLogs(dir, 'ns', 1, 7, 'new').sort(), ['ancient', 'dead-shim', 'old']);
    assert.ok(existsSync(join(dir, 'ns', 'new')) && existsSync(join(dir, 'ns', 'mid')));
  });

  it('boot phases come from console lines; the kernel start from the uptime init prints', () => {
    let now = 1_000_000;
    const phases = new BootPhases(() => now);
    phases.spawned();
    now += 3000;
    phases.consoleLine('garbage');
    phases.consoleLine('LCOW init uptime=2.50 kernel=6.1.0');
    now += 400;
    phases.consoleLine('LCOW ready-for-agent uptime=2.90');
    now += 5000;
    phases.connected();
    now += 200;
    phases.ready();
    assert.deepEqual(
      phases.phases().map((p) => [p.name, p.end - p.start]),
      [
        ['qemu start', 500],
        ['kernel', 2500],
        ['init', 400],
        ['agent start', 5000],
        ['agent ready', 200],
      ],
    );
    const registry = new MetricsRegistry();
    phases.report({ accel: 'tcg' }, registry);
    const pts = registry.snapshot().metrics.find((m) => m.name === BOOT_PHASE_METRIC)!.points;
    const total = pts.find((p) => p.attributes.phase === 'total')!.value as HistogramValue;
    assert.equal(total.sum, 8.6);
    // A lying guest (uptime larger than the time since spawn) cannot move the kernel start before the spawn.
    const p2 = new BootPhases(() => now);
    p2.spawned();
    now += 100;
    p2.consoleLine('LCOW init uptime=99999');
    assert.equal(p2.phases()[0]!.end - p2.phases()[0]!.start, 0);
  });

  it('a UVM restored from a template reports a restore phase and no kernel or init (its boot was the template)', () => {
    let now = 2_000_000;
    const phases = new BootPhases(() => now);
    phases.spawned();
    now += 300;
    phases.restoring();
    // A clone's console may still print; nothing in it is a boot of this VM.
    phases.consoleLine('LCOW init uptime=1.00 kernel=6.1.0');
    now += 150;
    phases.restored();
    now += 250;
    phases.connected();
    now += 100;
    phases.ready();
    assert.deepEqual(
      phases.phases().map((p) => [p.name, p.end - p.start]),
      [
        ['qemu start', 300],
        ['restore', 150],
        ['agent start', 250],
        ['agent ready', 100],
      ],
    );
    const registry = new MetricsRegistry();
    phases.report({ accel: 'tcg', start: 'template' }, registry);
    const pts = registry.snapshot().metrics.find((m) => m.name === BOOT_PHASE_METRIC)!.points;
    assert.deepEqual(pts.map((p) => p.attributes.phase).sort(), [
      'agent ready',
      'agent start',
      'qemu start',
      'restore',
      'total',
    ]);
    assert.equal((pts.find((p) => p.attributes.phase === 'total')!.value as HistogramValue).sum, 0.8);
    // A failed restore falls back to a cold boot: spawned() starts the phases over, console lines count again.
    phases.spawned();
    now += 1000;
    phases.consoleLine('LCOW init uptime=0.50');
    assert.deepEqual(
      phases.phases().map((p) => p.name),
      ['qemu start', 'kernel'],
    );
  });

  it('the instrumented agent client times unary calls, and traces them as CLIENT spans carrying the context', async () => {
    const registry = new MetricsRegistry();
    const seen: Array<Record<string, string> | undefined> = [];
    const raw = {
      getInfo: async (_r: unknown, o?: { metadata?: Record<string, string> }) => (
        seen.push(o?.metadata),
        { version: '1' }
      ),
      waitProcess: async () => ({ exitStatus: 0 }),
      readOutput: () => 'stream',
    } as unknown as ServiceClient<(typeof AgentDesc)['method']>;
    const agent = instrumentClient(AgentDesc, raw, { registry, background: ['WaitProcess'] });
    await agent.getInfo({});
    await agent.waitProcess({});
    assert.equal(agent.readOutput({}) as unknown, 'stream', 'streams pass through');
    const pts = registry.snapshot().metrics.find((m) => m.name === AGENT_RPC_DURATION)!.points;
    assert.deepEqual(
      pts.map((p) => [p.attributes.method, p.attributes.outcome, (p.value as HistogramValue).count]),
      [['GetInfo', 'ok', 1]],
    );
    assert.equal(seen[0], undefined, 'no metadata when not tracing');

    const exporter = new InMemorySpanExporter();
    installTracing(
      new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] }),
      new AsyncLocalStorageContextManager(),
    );
    await withRpcSpan({ service: 'containerd.task.v2.Task', method: 'Create', metadata: new Metadata() }, () =>
      agent.getInfo({}),
    );
    const client = exporter.getFinishedSpans().find((s) => s.name === 'lcow.agent.v1.Agent/GetInfo')!;
    assert.ok(client);
    assert.equal(client.kind, 2);
    assert.equal(seen[1]?.traceparent, `00-${client.spanContext().traceId}-${client.spanContext().spanId}-01`);
  });

  it('log level is shared by derived loggers; lines inside a span carry its trace id', async () => {
    const lines: string[] = [];
    const root = new Logger({ write: (l: string) => lines.push(l) }, 'info');
    const child = root.with({ pod: 'p' });
    child.debug('hidden');
    root.setLevel('debug');
    child.debug('shown');
    assert.equal(lines.length, 1);
    const exporter = new InMemorySpanExporter();
    installTracing(
      new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] }),
      new AsyncLocalStorageContextManager(),
    );
    await withRpcSpan({ service: 's', method: 'm', metadata: new Metadata() }, () => child.info('in span'));
    const entry = JSON.parse(lines[1]!);
    assert.equal(entry.trace_id, exporter.getFinishedSpans()[0]!.spanContext().traceId);
    assert.equal(entry.pod, 'p');
  });

  it('runtime config keys, with defaults', () => {
    const d = opsConfig({}, {});
    assert.deepEqual(
      [d.logRoot, d.logMaxBytes, d.logFiles, d.logKeepPods, d.logKeepDays, d.allowUvmExec, d.logLevel],
      ['/var/log/lcow', 1 << 20, 2, 20, 7, false, undefined],
    );
    const c = opsConfig({ log_level: 'WARNING', log_root: '/tmp/l', allow_uvm_exec: true, log_max_bytes: 10 }, {});
    assert.deepEqual([c.logLevel, c.logRoot, c.allowUvmExec, c.logMaxBytes], ['warn', '/tmp/l', true, 1 << 20]);
    assert.equal(opsConfig({ allow_uvm_exec: 'yes' }, {}).allowUvmExec, false, 'only a TOML true enables exec');
  });

  it('lcowctl: flags, usage errors, tables, durations', () => {
    const a = parseArgs(
      ['--json', 'p1', '-n', 'k8s.io', '--lines=5', '-f', '--', 'ls', '-l'],
      ['lines=', 'follow'],
      { f: 'follow' },
      {},
    );
    assert.deepEqual(
      [a.common.json, a.common.namespace, a.flags.lines, a.flags.follow, a.positional, a.rest],
      [true, 'k8s.io', '5', true, ['p1'], ['ls', '-l']],
    );
    assert.throws(
      () => parseArgs(['--bogus'], [], {}, {}),
      (e: { exitCode?: number }) => e.exitCode === EXIT.usage,
    );
    assert.throws(
      () => parseArgs(['--lines'], ['lines='], {}, {}),
      (e: { exitCode?: number }) => e.exitCode === EXIT.usage,
    );
    assert.equal(table(['A', 'BB'], [['xxx', 'y']]), 'A    BB\nxxx  y\n');
    assert.equal(duration(3_723_000), '1h2m');
    assert.equal(duration(59_000), '59s');
  });

  it('lcowctl stats reads a snapshot: 9P by share and operation, boot phases, agent RPCs', () => {
    const r = new MetricsRegistry();
    const p9 = new P9Metrics({ share: 's1', path: '/data' }, r);
    p9.request({ session: 1, type: 110, bytesIn: 20, bytesOut: 22, seconds: 0.0002, error: false, fids: 2 });
    p9.request({ session: 1, type: 110, bytesIn: 20, bytesOut: 11, seconds: 0.0004, error: true, fids: 2 });
    r.histogram(AGENT_RPC_DURATION, '', 's').record(0.01, { method: 'CreateContainer', outcome: 'ok' });
    r.histogram(BOOT_PHASE_METRIC, '', 's').record(2.5, { phase: 'kernel' });
    const text = formatStats('ns/p1', r.snapshot());
    assert.match(text, /9P share s1 \(\/data\)/);
    assert.match(text, /^walk\s+2\s+1\s+/m);
    assert.match(text, /^kernel\s+2\.50s$/m);
    assert.match(text, /^CreateContainer\s+1\s+0\s+/m);
    assert.match(text, /^s1\s+1\s+2$/m, 'fids per connection');
  });
});

describe('lcowctl console --follow', () => {
  it('prints what is there, then new lines across a rotation, until the pod stops', async function () {
    this.timeout(10_000);
    const root = mkdtempSync(join(tmpdir(), 'lcow-follow-'));
    try {
      const cfg = opsConfig({ log_root: join(root, 'logs'), log_max_bytes: 4096, log_files: 1 });
      const logs = new PodLogs(
        cfg,
        {
          id: 'p1',
          namespace: 'ns',
          backend: 'qemu',
          shimPid: process.pid,
          startedAt: new Date().toISOString(),
          stateDir: '/x',
        },
        new Logger({ write: () => undefined }, 'error'),
      );
      logs.console('line 0');
      let text = '';
      const out = {
        stdout: (s: string) => void (text += s),
        stderr: () => undefined,
        stdoutBytes: () => undefined,
        stderrBytes: () => undefined,
      };
      const { consoleCommand } = await import('../../../src/ops/ctl/console.js');
      const done = consoleCommand(
        ['p1', '--follow', '--state-root', join(root, 'run'), '--log-root', join(root, 'logs')],
        out,
      );
      await new Promise((r) => setTimeout(r, 400));
      // ~8 KiB of lines: the file rotates (4 KiB each) while followed.
      for (let i = 1; i <= 100; i++) {
        logs.console(`line ${i} ${'x'.repeat(70)}`);
        if (i % 20 === 0) await new Promise((r) => setTimeout(r, 150));
      }
      await new Promise((r) => setTimeout(r, 400));
      logs.update({ stoppedAt: new Date().toISOString() });
      logs.close();
      assert.equal(await done, EXIT.ok);
      const nums = text
        .trim()
        .split('\n')
        .map((l) => Number(l.split(' ')[1]));
      assert.deepEqual(
        nums,
        Array.from({ length: 101 }, (_, i) => i),
        'every line once, in order',
      );
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
