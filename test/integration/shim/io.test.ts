// Stdio end to end with a private containerd 1.6: terminals (ctr run -t / task exec -t under a real pty, with
// a resize), stdin with EOF (ctr's CloseIO, and our own ttrpc client driving Create/CloseIO on fifos we made),
// and the binary:// and file:// log URIs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Status } from '../../../src/gen/containerd/types/task/task_pb.js';
import { containerdUnavailable, type PrivateContainerd } from '../../helpers/containerd.js';
import {
  assertNoLeaks,
  bundleDir,
  ctrOnPty,
  lcowStateRoot,
  nsMeta,
  RUNTIME,
  sleep,
  startLcowContainerd,
  taskClient,
  until,
  removeEmptyStateRoot,
} from './helpers.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : containerdUnavailable();

/** Waits in the container until `stty size` shows ROWS COLS (or 5 s), prints it as TAG:<size>. */
const awaitSize = (tag: string, size: string): string =>
  `i=0; while [ "$(stty size)" != "${size}" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; echo "${tag}:$(stty size)"`;
const TTY_SCRIPT = `${awaitSize('A', '30 100')}; read x; ${awaitSize('B', '40 120')}; exit 5`;

describe('shim stdio with ctr (process backend)', function () {
  this.timeout(120_000);
  before(function () {
    requirePrerequisite(this, skip);
  });
  let cd: PrivateContainerd;
  let image: string;
  let tmp: string;

  before(async () => {
    ({ cd, image } = await startLcowContainerd());
    tmp = mkdtempSync(join(tmpdir(), 'lcow-io-'));
  });
  after(async () => {
    await cd?.stop();
    removeEmptyStateRoot();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });
  afterEach(async () => {
    await assertNoLeaks(cd);
  });

  const longRunning = async (id: string): Promise<void> => {
    const r = await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, id, 'sleep', '1000']);
    assert.equal(r.code, 0, r.stderr);
  };
  const killAndRemove = async (id: string): Promise<void> => {
    await cd.ctr(['task', 'kill', '-s', 'SIGKILL', id]);
    await until(async () => /STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout), 10_000);
    const d = await cd.ctr(['task', 'delete', id]);
    assert.equal(d.code, 0, d.stderr);
    const c = await cd.ctr(['container', 'delete', id]);
    assert.equal(c.code, 0, c.stderr);
  };

  it('ctr run -t: output through the tty, resize reaches stty size, exit code propagates', async () => {
    const r = await ctrOnPty(
      cd,
      ['run', '--rm', '-t', '--runtime', RUNTIME, image, 'io-tty', 'sh', '-c', TTY_SCRIPT],
      [30, 100],
      [40, 120],
    );
    assert.match(r.output, /A:30 100\r*\n/, r.output);
    assert.match(r.output, /B:40 120\r*\n/, r.output);
    assert.equal(r.code, 5, r.output);
  });

  it('ctr task exec -t: the same through an exec', async () => {
    await longRunning('io-exec-tty');
    const r = await ctrOnPty(
      cd,
      ['task', 'exec', '-t', '--exec-id', 'tty1', 'io-exec-tty', 'sh', '-c', TTY_SCRIPT],
      [30, 100],
      [40, 120],
    );
    assert.match(r.output, /A:30 100\r*\n/, r.output);
    assert.match(r.output, /B:40 120\r*\n/, r.output);
    assert.equal(r.code, 5, r.output);
    await killAndRemove('io-exec-tty');
  });

  // ctr 1.6 `run` never sends CloseIO (with runc.v2 too, `cat` then waits forever); `task exec` does, once
  // Exec returned: the exec's stdin fifo must only be opened at Start, as runc's shim does.
  it('ctr task exec with piped stdin: the bytes reach the process, EOF (CloseIO) ends it', async () => {
    await longRunning('io-exec-stdin');
    const e = await cd.ctr(['task', 'exec', '--exec-id', 's1', 'io-exec-stdin', 'sh', '-c', 'cat; echo eof'], {
      input: 'from exec\n',
      timeoutMs: 20_000,
    });
    assert.equal(e.code, 0, e.stderr);
    assert.equal(e.stdout, 'from exec\neof\n');
    await killAndRemove('io-exec-stdin');
  });

  it('our ttrpc client: Create with our fifos, Start, write stdin, CloseIO delivers EOF, cat exits 0', async () => {
    // A pod sandbox started by containerd; our task joins it with a bundle the shim never saw in `start`.
    const group = ['--annotation', 'io.containerd.runc.v2.group=io-pod'];
    const p = await cd.ctr(['run', '-d', '--runtime', RUNTIME, ...group, image, 'io-pod', 'sleep', '1000']);
    assert.equal(p.code, 0, p.stderr);
    const podBundle = bundleDir(cd, 'io-pod');
    const spec = JSON.parse(readFileSync(join(podBundle, 'config.json'), 'utf8')) as {
      process: { args: string[]; terminal?: boolean };
      root: { path: string; readonly?: boolean };
      linux?: { cgroupsPath?: string };
    };
    const bundle = join(tmp, 'io-cat');
    execFileSync('mkdir', ['-p', bundle]);
    spec.process.args = ['cat'];
    spec.process.terminal = false;
    // The pod's rootfs is mounted by the agent (process backend: in its own mount namespace, under its
    // state dir), which is also where runc runs: share it read-only.
    spec.root = { path: join(lcowStateRoot(), 'io-pod', 'bundles', 'io-pod', 'rootfs'), readonly: true };
    if (spec.linux?.cgroupsPath) spec.linux.cgroupsPath = spec.linux.cgroupsPath.replace(/io-pod$/, 'io-cat');
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    const stdin = join(tmp, 'io-cat-stdin');
    const stdout = join(tmp, 'io-cat-stdout');
    execFileSync('mkfifo', [stdin, stdout]);
    const outSock = new net.Socket({
      fd: openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK),
      writable: false,
    });
    let output = '';
    outSock.on('data', (d: Buffer) => (output += d.toString()));

    const { task, client } = await taskClient(cd, 'io-pod');
    try {
      const md = nsMeta(cd);
      const c = await task.create({ id: 'io-cat', bundle, stdin, stdout, terminal: false }, md);
      assert.ok(c.pid > 0);
      const s = await task.start({ id: 'io-cat' }, md);
      assert.ok(s.pid > 0);
      const exited = task.wait({ id: 'io-cat' }, md);
      const w = openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK);
      writeFileSync(w, 'hello\n');
      closeSync(w);
      assert.ok(await until(() => output.includes('hello'), 5000), `stdout so far: ${JSON.stringify(output)}`);
      // Our writer is closed, but the shim's keepalive writer keeps cat reading until CloseIO.
      await sleep(300);
      assert.equal((await task.state({ id: 'io-cat' }, md)).status, Status.RUNNING);
      await task.closeIO({ id: 'io-cat', stdin: true }, md);
      const w8 = await exited;
      assert.equal(w8.exitStatus, 0);
      assert.equal(output, 'hello\n');
      const d = await task.delete({ id: 'io-cat' }, md);
      assert.equal(d.exitStatus, 0);
    } finally {
      client.close();
      outSock.destroy();
      await killAndRemove('io-pod');
    }
  });

  it('--log-uri binary://: fds 3/4 carry stdout/stderr, fd 5 is the ready pipe, CONTAINER_ID/NAMESPACE set', async () => {
    const logger = join(tmp, 'logger.sh');
    const dir = join(tmp, 'binlog');
    execFileSync('mkdir', ['-p', dir]);
    writeFileSync(
      logger,
      [
        '#!/bin/sh',
        `dir=${dir}`,
        'echo "$CONTAINER_ID $CONTAINER_NAMESPACE $#:$*" > $dir/env',
        '[ -p /dev/fd/3 ] && [ -p /dev/fd/4 ] && [ -p /dev/fd/5 ] && echo pipes > $dir/kinds',
        'cat <&3 > $dir/out 5>&- &',
        'cat <&4 > $dir/err 5>&- &',
        'exec 5>&-',
        // SIGTERM (sent once the pipes are closed) must not cut the copy short.
        'trap "" TERM',
        'wait',
        'echo done > $dir/done',
      ].join('\n'),
    );
    chmodSync(logger, 0o755);
    const r = await cd.ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      '--log-uri',
      `binary://${logger}?flag=value`,
      image,
      'io-binlog',
      'sh',
      '-c',
      'echo to-stdout; echo to-stderr >&2',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const read = (f: string): string => {
      try {
        return readFileSync(join(dir, f), 'utf8');
      } catch {
        return '';
      }
    };
    assert.ok(await until(() => read('done') !== '', 15_000), 'the logger saw EOF and exited');
    assert.equal(read('out'), 'to-stdout\n');
    assert.equal(read('err'), 'to-stderr\n');
    assert.equal(read('env'), `io-binlog ${cd.namespace} 2:flag value\n`);
    assert.equal(read('kinds'), 'pipes\n');
  });

  it('--log-uri file://: stdout and stderr appended to the file', async () => {
    const file = join(tmp, 'filelog', 'sub', 'x.log');
    const r = await cd.ctr([
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      '--log-uri',
      `file://${file}`,
      image,
      'io-filelog',
      'sh',
      '-c',
      'echo one; echo two >&2',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const text = readFileSync(file, 'utf8');
    assert.deepEqual(text.split('\n').filter(Boolean).sort(), ['one', 'two']);
    const mode = Number(execFileSync('stat', ['-c', '%a', file]).toString().trim());
    assert.equal(mode, 644);
  });
});
