// The shim's Windows contract with containerd, checked on Linux. Named pipes are the Win32 boundary here; Node's
// net module serves and dials them with the same calls as unix sockets, so a unix socket whose (relative) name is
// the pipe name stands in for the pipe (a FAKE named pipe): the code under test is the Windows code path,
// selected by its `platform` parameter. What this cannot check: real pipe semantics (instances, security
// descriptors, ProtectedPrefix), which only Windows has.
import assert from 'node:assert/strict';
import { readFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Task as TaskV2, DeleteResponseSchema } from '../../../src/gen/containerd/task/v2/shim_pb.js';
import { fromBinary } from '@bufbuild/protobuf';
import { deleteAction, shimAlive } from '../../../src/shim/delete.js';
import { parseFlags } from '../../../src/shim/flags.js';
import { PipeLogSink, isPipePath, shimLogPipe, shimPipeAddress, waitForPipe } from '../../../src/shim/npipe.js';
import { startAction } from '../../../src/shim/start.js';
import { SANDBOX_RECORD_FILE, stateRootFor } from '../../../src/task/record.js';
import { PipeStdin, pipeSink, validateStdioPath } from '../../../src/task/stdio.js';
import { TtrpcClient, createClient, NAMESPACE_KEY } from '../../../src/ttrpc/index.js';

const SHIM = join(dirname(fileURLToPath(import.meta.url)), '../../../shim/containerd-shim-lcow-v1.js');

function listen(path: string, onConn: (s: net.Socket) => void = () => undefined): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer(onConn);
    srv.once('error', reject);
    srv.listen(path, () => resolve(srv));
  });
}

const readAll = (s: net.Socket): Promise<string> =>
  new Promise((resolve) => {
    let out = '';
    s.setEncoding('utf8').on('data', (d: string) => (out += d));
    s.on('close', () => resolve(out));
  });

describe('shim on Windows: names and paths', () => {
  it('names the Task API pipe as hcsshim does and the log pipe as containerd dials it', () => {
    assert.equal(
      shimPipeAddress('k8s.io', '3f2a9c'),
      '\\\\.\\pipe\\ProtectedPrefix\\Administrators\\containerd-shim-k8s.io-3f2a9c-pipe',
    );
    assert.equal(shimLogPipe('default', 'c1'), '\\\\.\\pipe\\containerd-shim-default-c1-log');
    assert.throws(() => shimPipeAddress('default', 'a\\b'), /invalid id/);
    assert.throws(() => shimLogPipe('../x', 'c1'), /invalid namespace/);
    assert.ok(isPipePath('\\\\.\\pipe\\containerd-x-stdout'));
    assert.ok(!isPipePath('C:\\pipe\\x'));
  });

  it('accepts containerd-for-Windows stdio (named pipes, file:// output) and nothing else there', () => {
    validateStdioPath('stdin', '\\\\.\\pipe\\containerd-default-c1-stdin', 'win32');
    validateStdioPath('stdout', 'file:///C:/logs/c1.log', 'win32');
    assert.throws(() => validateStdioPath('stdout', '/run/fifo', 'win32'), /named pipe/);
    assert.throws(() => validateStdioPath('stdin', 'file:///C:/x', 'win32'), /named pipe/);
    assert.throws(() => validateStdioPath('stdout', 'binary:///logger', 'win32'), /named pipe/);
    // Linux is unchanged: fifos and binary:// as before.
    validateStdioPath('stdout', 'binary:///logger', 'linux');
    assert.throws(() => validateStdioPath('stdout', '\\\\.\\pipe\\x', 'linux'), /absolute fifo path/);
  });

  it('keeps state under %ProgramData% on Windows, /run/lcow on Linux', () => {
    const saved = process.env.ProgramData;
    process.env.ProgramData = 'D:\\PD';
    try {
      assert.equal(stateRootFor('k8s.io', 'win32'), 'D:\\PD\\containerd-shim-lcow\\state\\k8s.io');
      assert.equal(stateRootFor('k8s.io', 'linux'), '/run/lcow/k8s.io');
    } finally {
      if (saved === undefined) delete process.env.ProgramData;
      else process.env.ProgramData = saved;
    }
  });
});

describe('shim on Windows: pipes (FAKE named pipes: unix sockets)', function () {
  this.timeout(20_000);
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), `npipe-${process.pid}-`))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('log pipe: drops lines with no reader, the newest reader gets them, a reconnect works', async () => {
    const path = join(dir, 'log');
    const sink = await PipeLogSink.listen(path);
    try {
      assert.equal(sink.write('lost\n'), false);
      const first = net.connect(path);
      const firstGot = readAll(first);
      await new Promise((r) => first.once('connect', r));
      await new Promise((r) => setTimeout(r, 20));
      sink.write('one\n');
      const second = net.connect(path);
      const secondGot = readAll(second);
      await new Promise((r) => second.once('connect', r));
      await new Promise((r) => setTimeout(r, 20));
      sink.write('two\n');
      await new Promise((r) => setTimeout(r, 20));
      second.destroy();
      assert.equal(await firstGot, 'one\n', 'the older reader is dropped when containerd reconnects');
      assert.equal(await secondGot, 'two\n');
    } finally {
      sink.close();
    }
  });

  it('stdio: output pipes are dialed and written; stdin EOFs on CloseIO after the bytes so far', async () => {
    const outPath = join(dir, 'stdout');
    const inPath = join(dir, 'stdin');
    let outConn: Promise<string> | undefined;
    const outSrv = await listen(outPath, (s) => {
      outConn = readAll(s);
    });
    let clientSide: net.Socket | undefined;
    const inSrv = await listen(inPath, (s) => (clientSide = s));
    try {
      const out = pipeSink(outPath);
      out.stream.write('hello ');
      out.stream.write('world');
      out.close();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(await outConn, 'hello world');

      const stdin = new PipeStdin(inPath, () => undefined);
      const got: Buffer[] = [];
      const ended = new Promise<void>((resolve) => {
        stdin.feed.on('data', (d: Buffer) => got.push(d));
        stdin.feed.on('end', () => resolve());
      });
      for (let i = 0; i < 100 && !clientSide; i++) await new Promise((r) => setTimeout(r, 5));
      clientSide!.write('typed');
      await new Promise((r) => setTimeout(r, 30));
      stdin.close(); // CloseIO: containerd's client keeps its end open, the relay still sees EOF
      await ended;
      assert.equal(Buffer.concat(got).toString(), 'typed');
      stdin.close();
    } finally {
      outSrv.close();
      inSrv.close();
    }
  });

  it('waitForPipe: waits for a daemon to serve, or reports that it exited first', async () => {
    const path = join(dir, 'task');
    const later = setTimeout(() => void listen(path).then((s) => (srv = s)), 60);
    let srv: net.Server | undefined;
    await waitForPipe(path, () => undefined, 5000);
    clearTimeout(later);
    srv?.close();
    await assert.rejects(
      waitForPipe(join(dir, 'never'), () => 'exited (code 1, signal null)', 5000),
      /exited \(code 1/,
    );
    await assert.rejects(
      waitForPipe(join(dir, 'never'), () => undefined, 100),
      /did not serve .* within 100 ms/,
    );
  });

  it('start / delete: the daemon serves its pipe itself, start waits for it, records it, reuses it', async () => {
    const bundle = mkdtempSync(join(dir, 'bundle-'));
    writeFileSync(
      join(bundle, 'config.json'),
      JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'pod1' } }),
    );
    const cwd = process.cwd();
    // The fake pipe is a unix socket named like the pipe, relative to the bundle (containerd runs start there).
    process.chdir(bundle);
    const flags = parseFlags([
      '-namespace',
      'default',
      '-id',
      'c1',
      '-address',
      join(dir, 'containerd.sock'),
      '-bundle',
      bundle,
      'start',
    ]);
    let client: TtrpcClient | undefined;
    try {
      const address = await startAction(flags, SHIM, 'win32', Readable.from([]));
      assert.equal(address, shimPipeAddress('default', 'pod1'));
      assert.equal(readFileSync(join(bundle, 'address'), 'utf8'), address);
      const pid = Number(readFileSync(join(bundle, 'shim.pid'), 'utf8'));
      client = await TtrpcClient.connect(address);
      const task = createClient(TaskV2, client);
      const md = { metadata: { [NAMESPACE_KEY]: 'default' } };
      assert.equal((await task.connect({ id: 'c1' }, md)).shimPid, pid, 'the daemon start spawned serves the pipe');
      // A second container of the pod: the live daemon serves it, nothing is spawned.
      const again = await startAction({ ...flags, id: 'c2' }, SHIM, 'win32', Readable.from([]));
      assert.equal(again, address);
      assert.equal(Number(readFileSync(join(bundle, 'shim.pid'), 'utf8')), pid);
      // delete while the daemon lives: the pipe answers, so it is alive and nothing is torn down.
      writeFileSync(
        join(bundle, SANDBOX_RECORD_FILE),
        JSON.stringify({
          shimPid: pid,
          namespace: 'default',
          pod: 'pod1',
          owner: true,
          sandbox: { backend: 'hcs', id: 'pod1', stateDir: join(dir, 'st'), pids: [], hcsId: 'pod1@x' },
        }),
      );
      assert.equal(await shimAlive(pid, bundle, 'win32'), true);
      const r = fromBinary(DeleteResponseSchema, await deleteAction({ ...flags, action: 'delete' }, 'win32'));
      assert.equal(r.exitStatus, 137);
      await task.shutdown({ id: 'c1', now: true }, md).catch(() => undefined);
      client.close();
      client = undefined;
      for (let i = 0; i < 200 && (await shimAlive(pid, bundle, 'win32')); i++)
        await new Promise((r) => setTimeout(r, 10));
      assert.equal(await shimAlive(pid, bundle, 'win32'), false, 'a dead daemon no longer answers');
    } finally {
      client?.close();
      process.chdir(cwd);
      try {
        process.kill(Number(readFileSync(join(bundle, 'shim.pid'), 'utf8')), 'SIGKILL');
      } catch {
        // exited
      }
    }
  });
});
