// Foreign clients against `lcowctl 9p serve`: Debian's diodls and diodcat (libnpclient, which we did not
// write) must list and read our export exactly. Also: SIGTERM shuts the server down cleanly.

import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const run = promisify(execFile);
const lcowctl = path.resolve('dist/shim/lcowctl.js');
const diodTools = ['/usr/sbin/diodls', '/usr/sbin/diodcat'];

interface Served {
  proc: ChildProcess;
  listen: string;
  stderr: () => string;
}

/** Starts `lcowctl 9p serve` and waits for its one "listening on ..." line. */
async function serve(args: string[]): Promise<Served> {
  const proc = spawn(process.execPath, [lcowctl, '9p', 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const listen = await new Promise<string>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^listening on (\S+)\n/.exec(out);
      if (m) resolve(m[1]!);
    });
    proc.once('exit', (code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
  return { proc, listen, stderr: () => err };
}

function exited(proc: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (proc.exitCode !== null || proc.signalCode !== null) {
    return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  }
  return new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
}

describe('p9 server with diod tools', function () {
  this.timeout(60_000);
  let dir: string;
  let srv: Served;
  let hostPort: string;
  const big = crypto.randomBytes(3 * 1024 * 1024 + 123);

  before(async function () {
    const missing = diodTools.filter((t) => !fs.existsSync(t));
    // The Debian diod package provides the only foreign 9P2000.L clients that run without a kernel.
    requirePrerequisite(
      this,
      missing.length > 0 ? `${missing.join(', ')} missing (make setup installs diod)` : undefined,
    );
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9diod-'));
    fs.writeFileSync(path.join(dir, 'hello.txt'), 'hello from the host\n');
    fs.writeFileSync(path.join(dir, 'big.bin'), big);
    fs.writeFileSync(path.join(dir, 'empty'), '');
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'nested.txt'), 'nested');
    fs.symlinkSync('/etc/passwd', path.join(dir, 'outside-link'));
    srv = await serve(['--listen', 'tcp:127.0.0.1:0', '--export', `share=${dir}`]);
    assert.match(srv.listen, /^tcp:127\.0\.0\.1:\d+$/);
    hostPort = srv.listen.slice('tcp:'.length);
  });

  after(async () => {
    if (srv?.proc.exitCode === null) {
      srv.proc.kill('SIGTERM');
      await exited(srv.proc);
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('diodls lists the export root exactly, by name and by path', async () => {
    for (const aname of ['share', dir]) {
      const { stdout } = await run('diodls', ['-s', hostPort, '-a', aname], { timeout: 20_000 });
      const names = stdout.split('\n').filter(Boolean).sort();
      const expected = fs.readdirSync(dir).sort();
      // diodls prints every directory entry; it may or may not include . and ..
      assert.deepEqual(
        names.filter((n) => n !== '.' && n !== '..'),
        expected,
      );
    }
  });

  it('diodls -l shows sizes matching the host', async () => {
    const { stdout } = await run('diodls', ['-l', '-s', hostPort, '-a', 'share'], { timeout: 20_000 });
    const line = stdout.split('\n').find((l) => l.endsWith(' big.bin'));
    assert.ok(line, stdout);
    assert.ok(line.includes(String(big.length)), line);
  });

  it('diodcat reads small, empty, nested and multi-MiB files byte-exactly', async () => {
    const cat = async (file: string, msize?: number): Promise<Buffer> => {
      const args = ['-s', hostPort, '-a', 'share', ...(msize ? ['-m', String(msize)] : []), file];
      const { stdout } = await run('diodcat', args, { encoding: 'buffer', maxBuffer: 64 << 20, timeout: 30_000 });
      return stdout;
    };
    assert.equal((await cat('hello.txt')).toString(), 'hello from the host\n');
    assert.equal((await cat('empty')).length, 0);
    assert.equal((await cat('sub/nested.txt')).toString(), 'nested');
    assert.ok((await cat('big.bin')).equals(big));
    assert.ok((await cat('big.bin', 8192)).equals(big));
  });

  it('diodcat cannot read through a symlink that points outside the export', async () => {
    await assert.rejects(run('diodcat', ['-s', hostPort, '-a', 'share', 'outside-link'], { timeout: 20_000 }));
  });

  it('SIGTERM closes listener and connections and exits 0; the unix socket file is removed', async () => {
    const sockPath = path.join(dir, '..', `p9-${process.pid}.sock`);
    const s = await serve(['--listen', `unix:${sockPath}`, '--export', dir]);
    assert.equal(s.listen, `unix:${sockPath}`);
    assert.ok(fs.statSync(sockPath).isSocket());
    const { stdout } = await run('diodls', ['-s', sockPath, '-a', dir], { timeout: 20_000 });
    assert.ok(stdout.includes('hello.txt'));
    s.proc.kill('SIGTERM');
    const { code } = await exited(s.proc);
    assert.equal(code, 0, s.stderr());
    assert.equal(fs.existsSync(sockPath), false);
  });

  it('SIGTERM with a client still connected exits promptly', async () => {
    const s = await serve(['--listen', 'tcp:127.0.0.1:0', '--export', dir]);
    const net = await import('node:net');
    const [host, port] = [s.listen.split(':')[1]!, Number(s.listen.split(':')[2])];
    const sock = net.connect({ host, port });
    // The server going away may reset the connection: expected here, not an uncaught error.
    sock.on('error', () => undefined);
    await new Promise((r) => sock.once('connect', r));
    const closed = new Promise((r) => sock.once('close', r));
    s.proc.kill('SIGTERM');
    const { code } = await exited(s.proc);
    assert.equal(code, 0);
    await closed;
  });

  it('rejects bad command lines with exit code 2', async () => {
    await assert.rejects(run(process.execPath, [lcowctl, '9p', 'serve', '--export', dir]), (e: { code?: number }) => {
      assert.equal(e.code, 2);
      return true;
    });
  });
});
