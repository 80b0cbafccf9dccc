// The agent's side of tcp+token in accept mode (src/agent/uvm.ts) on loopback, with the shim's real dialer as the
// peer: the 9P acceptor admits a share only while it is pending and binds its token; a wrong token or a wrong
// secret leaves the share pending for the real connection; and the secret comes from the token file READ AT EVERY
// HANDSHAKE (a template clone gets a fresh one after restore). No VM, no mount.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { P9Acceptor, acceptControl } from '../../../src/agent/uvm.js';
import {
  PeerProofError,
  dialTcpToken,
  fixedSecret,
  newSecret,
  readExactly,
  secretFromFile,
  type Conn,
} from '../../../src/transport/index.js';
import { silentLogger } from '../../../src/util/log.js';

describe('agent: accept-mode transport (9P acceptor, control listener)', function () {
  this.timeout(20_000);
  let dir: string;
  let tokenFile: string;
  let acceptor: P9Acceptor | undefined;
  const cleanup: Array<() => void> = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lcow-agent-transport-'));
    tokenFile = join(dir, 'token');
  });
  afterEach(async () => {
    for (const c of cleanup.splice(0)) c();
    await acceptor?.close();
    acceptor = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const port = (url: string): number => Number(url.split(':').pop());
  const freeUrl = (): Promise<string> =>
    new Promise((resolve) => {
      const srv = createServer();
      srv.listen(0, '127.0.0.1', () => {
        const p = (srv.address() as { port: number }).port;
        srv.close(() => resolve(`tcp+token://127.0.0.1:${p}`));
      });
    });

  const dialShare = (p: number, secret: Buffer, shareId: string, token: Buffer, timeoutMs = 5000): Promise<Conn> =>
    dialTcpToken('127.0.0.1', p, {
      secret: fixedSecret(secret),
      purpose: { kind: 'p9', shareId },
      binding: token,
      timeoutMs,
      attemptTimeoutMs: 500,
    }).then((c) => {
      cleanup.push(() => c.close());
      return c;
    });

  it('a share is connected only while pending, with its token; a wrong token or secret leaves it pending', async () => {
    const secret = newSecret();
    writeFileSync(tokenFile, secret);
    acceptor = await P9Acceptor.listen(await freeUrl(), secretFromFile(tokenFile), silentLogger, 5000);
    const p = port(acceptor.url);
    const token = newSecret().subarray(0, 16);
    // Not registered yet: the shim's dialer retries (closed without an answer) until AddShare registers it.
    const early = dialShare(p, secret, 's1', token);
    await new Promise((r) => setTimeout(r, 300));
    const waiting = acceptor.waitForShare('s1', token);
    const hostSide = await early;
    const guestSide: Socket = await waiting;
    cleanup.push(() => guestSide.destroy());
    // the accepted socket carries the protocol (the guest kernel speaks 9P on it; this process reads nothing)
    guestSide.write('Tversion');
    assert.equal((await readExactly(hostSide.stream, 8, 5000)).toString(), 'Tversion');

    const token2 = newSecret().subarray(0, 16);
    const waiting2 = acceptor.waitForShare('s2', token2);
    await assert.rejects(dialShare(p, secret, 's2', Buffer.alloc(16)), PeerProofError);
    await assert.rejects(dialShare(p, newSecret(), 's2', token2), PeerProofError);
    // still pending: the real shim connects
    await dialShare(p, secret, 's2', token2);
    (await waiting2).destroy();
    // and a share once connected is gone: a second connection for it is never admitted
    await assert.rejects(dialShare(p, secret, 's2', token2, 400), /no handshake within 400 ms/);
  });

  it('a share nobody connects to is given up after waitMs', async () => {
    writeFileSync(tokenFile, newSecret());
    acceptor = await P9Acceptor.listen(await freeUrl(), secretFromFile(tokenFile), silentLogger, 200);
    await assert.rejects(acceptor.waitForShare('s9', Buffer.alloc(16)), /no 9P connection for share s9 in 200 ms/);
  });

  it('the token file is read at every handshake: after it changes (template clone restored) only the new secret works', async () => {
    const before = newSecret();
    const after = newSecret();
    writeFileSync(tokenFile, before);
    acceptor = await P9Acceptor.listen(await freeUrl(), secretFromFile(tokenFile), silentLogger, 5000);
    const p = port(acceptor.url);
    const token = Buffer.alloc(16, 3);
    const w1 = acceptor.waitForShare('a', token);
    await dialShare(p, before, 'a', token);
    (await w1).destroy();
    writeFileSync(tokenFile, after);
    const w2 = acceptor.waitForShare('b', token);
    await assert.rejects(dialShare(p, before, 'b', token), PeerProofError);
    await dialShare(p, after, 'b', token);
    (await w2).destroy();
  });

  it('the control listener: the first authenticated connection wins, a bad one is refused', async () => {
    const secret = newSecret();
    writeFileSync(tokenFile, secret);
    const url = await freeUrl();
    const p = port(url);
    const accepted = acceptControl(url, secretFromFile(tokenFile), silentLogger);
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(
      dialTcpToken('127.0.0.1', p, { secret: fixedSecret(newSecret()), purpose: { kind: 'control' }, timeoutMs: 3000 }),
      PeerProofError,
    );
    const c = await dialTcpToken('127.0.0.1', p, {
      secret: fixedSecret(secret),
      purpose: { kind: 'control' },
      timeoutMs: 3000,
    });
    cleanup.push(() => c.close());
    const guest = await accepted;
    cleanup.push(() => guest.close());
    c.stream.write('ping');
    assert.equal((await readExactly(guest.stream, 4, 5000)).toString(), 'ping');
  });
});
