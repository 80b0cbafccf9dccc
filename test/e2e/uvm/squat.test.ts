// Issue 9, "a local user squats the hostfwd port before QEMU binds it", against a real QEMU guest and its real
// agent: the first host port the backend picks is already held by a local process that answers the handshake
// without the secret. Boot must notice (the failed proof, or QEMU failing to bind), log it, restart QEMU on new
// ports with a new secret, and the squatter must have received nothing but HELLO frames. The backend runs under
// umask 000 here: its state dir, token file and QMP socket keep 0700 / 0600, and a second local user (nobody)
// can neither read the token nor reach QMP. A local user poking the guest's forwarded 9P port gets no answer.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QemuSandbox } from '../../../src/sandbox/qemu/qemu.js';
import { decodeHello, encodeChallenge, encodeHello, Direction, newSecret } from '../../../src/transport/index.js';
import { Logger } from '../../../src/util/log.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { qemuPidsOfPod } from '../../helpers/host-state.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const ID = `squat-${process.pid}`;

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

const ourQemus = (): number[] => qemuPidsOfPod(ID);

function asNobody(op: 'connect' | 'read', path: string): Promise<string> {
  const script =
    op === 'connect'
      ? `const s=require('net').connect(process.argv[1]);s.on('connect',()=>{console.log('CONNECTED');process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)})`
      : `try{require('fs').readFileSync(process.argv[1]);console.log('READ')}catch(e){console.log(e.code)}`;
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, ['-e', script, path], {
      uid: 65534,
      gid: 65534,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', rej);
    c.on('close', () => res(out.trim()));
  });
}

/** Bytes a local client gets back from HOST:PORT after sending `bytes` (until the peer closes or 3 s pass). */
function poke(port: number, bytes: Buffer): Promise<{ answer: Buffer; closed: boolean }> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    const got: Buffer[] = [];
    s.on('error', () => undefined);
    s.on('connect', () => s.write(bytes));
    s.on('data', (d: Buffer) => got.push(d));
    const t = setTimeout(() => {
      s.destroy();
      res({ answer: Buffer.concat(got), closed: false });
    }, 3000);
    s.on('close', () => {
      clearTimeout(t);
      res({ answer: Buffer.concat(got), closed: true });
    });
  });
}

describe('e2e: a squatted hostfwd port on a real QEMU UVM (umask 000)', function () {
  this.timeout(300_000);
  let dir: string;
  let squatter: Server | undefined;
  const squatSockets: Socket[] = [];
  const received: Buffer[][] = [];
  let sb: QemuSandbox | undefined;
  let oldUmask: number | undefined;
  const lines: string[] = [];

  before(function () {
    requirePrerequisite(this, unavailable);
  });
  after(async () => {
    if (oldUmask !== undefined) process.umask(oldUmask);
    await sb?.stop('force');
    for (const s of squatSockets) s.destroy();
    squatter?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (!unavailable) assert.deepEqual(ourQemus(), [], 'a QEMU was left running');
  });

  it('boot detects the squatter, restarts on new ports; the squatter got only HELLOs; modes stay private', async () => {
    dir = mkdtempSync(join(tmpdir(), `lcow-e2e-squat-${process.pid}-`));
    // The squatter: holds a port before QEMU, answers any HELLO with a CHALLENGE whose MAC it can only guess.
    squatter = createServer((s) => {
      const mine: Buffer[] = [];
      received.push(mine);
      squatSockets.push(s);
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        mine.push(d);
        s.write(encodeChallenge({ nonce: newSecret(), mac: newSecret() }));
      });
    });
    await new Promise<void>((r) => squatter!.listen({ host: '127.0.0.1', port: 0, exclusive: true }, r));
    const squatted = (squatter.address() as { port: number }).port;
    let picks = 0;
    const freePort = (): Promise<number> =>
      picks++ === 0
        ? Promise.resolve(squatted)
        : new Promise((res) => {
            const srv = createServer();
            srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
              const p = (srv.address() as { port: number }).port;
              srv.close(() => res(p));
            });
          });
    oldUmask = process.umask(0o000);
    const stateDir = join(dir, 'state');
    sb = new QemuSandbox({
      id: ID,
      stateDir,
      logger: new Logger({ write: (l: string) => lines.push(l) }, 'info', {}),
      annotations: {},
      // hostfwd ports are what this suite is about (on a host with vhost-vsock, auto would pick vsock)
      runtimeConfig: { transport: 'tcp' },
      freePort,
    });
    await sb.boot();
    process.umask(oldUmask);
    oldUmask = undefined;

    const warned = lines.filter(
      (l) =>
        l.includes('SECURITY: another local process answered on a forwarded host port') ||
        l.includes('a forwarded host port was taken by another local process'),
    );
    assert.ok(warned.length >= 1, `no squat warning in:\n${lines.join('')}`);
    const ports = (sb as unknown as { ports: { control: number; p9: number } }).ports;
    assert.notEqual(ports.control, squatted);
    assert.notEqual(ports.p9, squatted);

    // Everything the squatter received: whole HELLO frames for the control channel, nothing else.
    for (const conn of received) {
      const got = Buffer.concat(conn);
      if (got.length === 0) continue;
      assert.equal(got.length, 41, `the squatter got ${got.length} bytes`);
      assert.deepEqual(decodeHello(got).purpose, { kind: 'control' });
    }
    const token = readFileSync(join(stateDir, 'token'));
    assert.equal(Buffer.concat(received.flat()).indexOf(token), -1);

    // Modes under umask 000, and a second local user's view.
    const mode = (p: string): number => lstatSync(p).mode & 0o7777;
    assert.equal(mode(stateDir), 0o700);
    assert.equal(mode(join(stateDir, 'token')), 0o600);
    assert.equal(mode(sb.qmpSocket), 0o600);
    assert.equal(await asNobody('read', join(stateDir, 'token')), 'EACCES');
    assert.equal(await asNobody('connect', sb.qmpSocket), 'EACCES');

    // A 9P share still connects through the real guest (the handshake binds the share's token), and a local user
    // poking the forwarded 9P port gets no answer: not to a HELLO for that share (no longer pending), not to the
    // raw secret (the old protocol), not to junk.
    const shared = join(dir, 'shared');
    mkdirSync(shared);
    writeFileSync(join(shared, 'f'), 'x');
    const share = await sb.addShare(shared, { readOnly: true });
    assert.match(share.guestPath, /^\//);
    for (const bytes of [
      encodeHello({
        direction: Direction.hostToGuest,
        purpose: { kind: 'p9', shareId: share.shareId },
        nonce: newSecret(),
      }),
      token,
      Buffer.from('GET / HTTP/1.0\r\n\r\n'),
    ]) {
      const r = await poke(ports.p9, bytes);
      assert.equal(r.answer.length, 0, 'the agent answered a local user');
    }
    await sb.removeShare(share.shareId);
  });
});
