// Agent core against real runc (root): create/start/wait, stdio, exec, kill, pause/resume, stats.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Agent, AgentError } from '../../../src/agent/agent.js';
import { toV1Metrics } from '../../../src/agent/stats.js';
import { buildBusyboxRootfs } from '../../helpers/image.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const canRun = process.getuid?.() === 0;

function spec(rootfs: string, args: string[]): Uint8Array {
  const dir = mkdtempSync(join(tmpdir(), 'spec-'));
  execFileSync('runc', ['spec', '--bundle', dir]);
  const s = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  rmSync(dir, { recursive: true });
  s.root = { path: rootfs, readonly: false };
  s.process.args = args;
  s.process.terminal = false;
  s.linux.cgroupsPath = `/lcow-test/${Math.random().toString(16).slice(2)}`;
  return Buffer.from(JSON.stringify(s));
}

async function collect(s: Readable | undefined): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of s!) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

const noStdio = { terminal: false, stdin: false, stdout: true, stderr: true };

describe('agent core (runc)', function () {
  this.timeout(30000);
  before(function () {
    requirePrerequisite(this, canRun ? undefined : 'needs root (runc)');
  });
  let dir: string;
  let rootfs: string;
  let agent: Agent;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agent-test-'));
    rootfs = join(dir, 'rootfs');
    await buildBusyboxRootfs(rootfs);
  });
  beforeEach(async () => {
    agent = new Agent({ stateDir: join(dir, 'state-' + Math.random().toString(16).slice(2)) });
    await agent.init();
  });
  afterEach(async () => {
    await agent.shutdown();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('runs a container: output, exit status', async () => {
    const { pid } = await agent.createContainer({
      containerId: 'c1',
      specJson: spec(rootfs, ['sh', '-c', 'echo hi; echo err >&2; exit 3']),
      rootfs: [],
      stdio: noStdio,
    });
    assert.ok(pid > 0);
    const c = agent.container('c1');
    const out = collect(c.init.io.stdout).then((s) => (c.init.allOutputDone(), s));
    const err = collect(c.init.io.stderr);
    assert.equal(await agent.startProcess('c1', ''), pid);
    const e = await agent.waitProcess('c1', '');
    assert.equal(e.status, 3);
    assert.equal(await out, 'hi\n');
    assert.equal(await err, 'err\n');
    await agent.deleteContainer('c1');
    await assert.rejects(
      () => agent.startProcess('c1', ''),
      (e: AgentError) => e.code === 'NotFound',
    );
  });

  it('stdin, exec, kill, duplicate exec', async () => {
    await agent.createContainer({
      containerId: 'c2',
      specJson: spec(rootfs, ['cat']),
      rootfs: [],
      stdio: { ...noStdio, stdin: true },
    });
    const c = agent.container('c2');
    const out = collect(c.init.io.stdout);
    await agent.startProcess('c2', '');
    const proc = Buffer.from(JSON.stringify({ args: ['sh', '-c', 'echo exec; exit 5'], cwd: '/', env: ['PATH=/bin'] }));
    await agent.execProcess({ containerId: 'c2', execId: 'e1', processJson: proc, stdio: noStdio });
    await assert.rejects(
      () => agent.execProcess({ containerId: 'c2', execId: 'e1', processJson: proc, stdio: noStdio }),
      (e: AgentError) => e.code === 'AlreadyExists',
    );
    const eout = collect(c.execs.get('e1')!.io.stdout);
    await agent.startProcess('c2', 'e1');
    assert.equal((await agent.waitProcess('c2', 'e1')).status, 5);
    assert.equal(await eout, 'exec\n');
    const pids = await agent.listProcesses('c2');
    assert.ok(pids.length >= 1);
    const metrics = toV1Metrics(await agent.stats('c2'));
    assert.ok(metrics.memory !== undefined);
    await agent.pause('c2');
    await agent.resume('c2');
    c.init.io.stdin!.write('typed\n');
    agent.closeStdin('c2', '');
    assert.equal((await agent.waitProcess('c2', '')).status, 0);
    assert.equal(await out, 'typed\n');
    await assert.rejects(
      () => agent.signalProcess('c2', '', 9, false),
      (e: AgentError) => e.code === 'NotFound',
    );
  });

  it('SIGKILL gives 137; terminal mode', async () => {
    await agent.createContainer({
      containerId: 'c3',
      specJson: spec(rootfs, ['sleep', '100']),
      rootfs: [],
      stdio: noStdio,
    });
    await agent.startProcess('c3', '');
    await agent.signalProcess('c3', '', 9, false);
    assert.equal((await agent.waitProcess('c3', '')).status, 137);
    await agent.createContainer({
      containerId: 'c4',
      specJson: spec(rootfs, ['sh', '-c', 'stty size; echo tty']),
      rootfs: [],
      stdio: { terminal: true, stdin: true, stdout: true, stderr: false, width: 100, height: 40 },
    });
    const c = agent.container('c4');
    const out = collect(c.init.io.stdout);
    await agent.startProcess('c4', '');
    assert.equal((await agent.waitProcess('c4', '')).status, 0);
    assert.match(await out, /40 100\r?\n.*tty/s);
  });

  it('terminal mode: stdin reaches the pty, resize is visible to stty', async () => {
    await agent.createContainer({
      containerId: 'c5',
      specJson: spec(rootfs, ['sh', '-c', 'read x; echo got:$x; stty size']),
      rootfs: [],
      stdio: { terminal: true, stdin: true, stdout: true, stderr: false, width: 80, height: 24 },
    });
    const c = agent.container('c5');
    const out = collect(c.init.io.stdout);
    await agent.startProcess('c5', '');
    agent.resizePty('c5', '', 120, 40);
    c.init.io.stdin!.write('hello\r');
    assert.equal((await agent.waitProcess('c5', '')).status, 0);
    assert.match(await out, /got:hello\r?\n40 120/);
  });
});
