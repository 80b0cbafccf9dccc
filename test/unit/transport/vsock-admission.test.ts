// The vsock listener's admission (src/transport/vsock.ts VsockAdmission): vsock ports are host-wide, so a UVM's
// listener on the host admits only connections whose peer CID is that UVM's; every other CID (another guest on
// the host, or the host itself over vsock_loopback) is closed before a byte is read, and the handshake still runs
// for the right one. Exercised on unix socketpairs with injected peer addresses (the same fd code as AF_VSOCK;
// this host has no vhost-vsock), plus the sockaddr_vm layout and a real AF_VSOCK bind to VMADDR_PORT_ANY.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import {
  Direction,
  FdStream,
  VMADDR_PORT_ANY,
  VsockAdmission,
  VsockListener,
  controlOnly,
  dialerHandshake,
  fixedSecret,
  newSecret,
  parseSockaddrVm,
  type Conn,
  type Purpose,
} from '../../../src/transport/index.js';
import { readExactly, streamIo } from '../../../src/transport/transport.js';
import { sockaddrVm } from '../../../src/transport/vsock.js';
import { Logger } from '../../../src/util/log.js';

const require = createRequire(import.meta.url);

function socketpair(): [number, number] {
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  const sp = c.func('int socketpair(int domain, int type, int protocol, void *sv)');
  const sv = Buffer.alloc(8);
  if (sp(1, 1 | 0o2000000, 0, sv) !== 0) throw new Error('socketpair failed');
  return [sv.readInt32LE(0), sv.readInt32LE(4)];
}

const GUEST = 70_123;

describe('transport: vsock peer-CID admission', function () {
  this.timeout(20_000);
  const secret = fixedSecret(newSecret());
  let logs: string[];
  const admission = (): VsockAdmission => {
    logs = [];
    return new VsockAdmission({
      secret,
      peerCid: GUEST,
      admit: controlOnly,
      logger: new Logger({ write: (l: string) => logs.push(l) }, 'debug', {}),
    });
  };

  it('another CID is closed unread: the peer sees EOF, nothing is handed out, the refusal is logged', async () => {
    const a = admission();
    const handed: Conn[] = [];
    a.auth.onConnection((c) => handed.push(c));
    for (const peer of [{ cid: GUEST + 1, port: 1234 }, { cid: 1, port: 1234 }, { cid: 2, port: 1 }, undefined]) {
      const [ours, theirs] = socketpair();
      const dialer = new FdStream(theirs);
      try {
        a.accepted(ours, peer);
        // The listener side is gone without a byte.
        await assert.rejects(readExactly(dialer, 1, 5000), /connection closed after 0 of 1 bytes/);
      } finally {
        dialer.destroy();
      }
    }
    assert.equal(a.peerRefused, 4);
    assert.equal(a.rejected, 4);
    assert.equal(handed.length, 0);
    const refusals = logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      refusals.map((r) => [r.msg, r.peerCid, r.expectedCid]),
      [
        ['vsock: connection from another CID refused', GUEST + 1, GUEST],
        ['vsock: connection from another CID refused', 1, GUEST],
        ['vsock: connection from another CID refused', 2, GUEST],
        ['vsock: connection from another CID refused', undefined, GUEST],
      ],
    );
  });

  it("this UVM's CID goes on to the handshake: the right secret is handed out, a wrong one is refused", async () => {
    const a = admission();
    const handed: Array<{ conn: Conn; purpose: Purpose }> = [];
    a.auth.onConnection((conn, purpose) => handed.push({ conn, purpose }));
    const dial = async (s: typeof secret): Promise<unknown> => {
      const [ours, theirs] = socketpair();
      const dialer = new FdStream(theirs);
      try {
        a.accepted(ours, { cid: GUEST, port: 49152 });
        return await dialerHandshake(
          streamIo(dialer),
          { secret: s, direction: Direction.guestToHost, purpose: { kind: 'control' } },
          5000,
        ).then(
          () => 'ok',
          (err: unknown) => (err as Error).name,
        );
      } finally {
        dialer.destroy();
      }
    };
    assert.equal(await dial(secret), 'ok');
    for (let i = 0; i < 100 && handed.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(handed.length, 1);
    assert.deepEqual(handed[0]!.purpose, { kind: 'control' });
    assert.equal(await dial(fixedSecret(newSecret())), 'PeerProofError');
    for (let i = 0; i < 100 && a.rejected === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(a.peerRefused, 0);
    assert.equal(a.rejected, 1, 'the wrong secret failed the handshake');
    assert.equal(handed.length, 1);
    for (const h of handed) h.conn.close();
  });

  it('without peerCid (the guest side) any CID is admitted to the handshake', async () => {
    const a = new VsockAdmission({ secret, admit: controlOnly });
    const [ours, theirs] = socketpair();
    const dialer = new FdStream(theirs);
    const handed = new Promise<Conn>((r) => a.auth.onConnection(r));
    try {
      a.accepted(ours, { cid: 1, port: 5 });
      await dialerHandshake(
        streamIo(dialer),
        { secret, direction: Direction.guestToHost, purpose: { kind: 'control' } },
        5000,
      );
      (await handed).close();
      assert.equal(a.rejected, 0);
    } finally {
      dialer.destroy();
    }
  });
});

describe('transport: sockaddr_vm and VMADDR_PORT_ANY', () => {
  it('struct sockaddr_vm: family (u16) at 0, port (u32) at 4, cid (u32) at 8, 16 bytes', () => {
    const b = sockaddrVm(70_123, 1024);
    assert.equal(b.length, 16);
    assert.deepEqual([...b.subarray(0, 12)], [40, 0, 0, 0, 0, 4, 0, 0, 0xeb, 0x11, 0x01, 0]);
    assert.deepEqual(parseSockaddrVm(b), { cid: 70_123, port: 1024 });
    assert.throws(() => parseSockaddrVm(Buffer.alloc(16)), /address family 0, not AF_VSOCK/);
    assert.throws(() => parseSockaddrVm(b, 8), /sockaddr_vm of 8 bytes/);
  });

  it('listening on VMADDR_PORT_ANY takes a free port the kernel picks (two listeners, two ports)', async () => {
    const opts = { secret: fixedSecret(newSecret()), peerCid: GUEST };
    const a = VsockListener.listen(VMADDR_PORT_ANY, opts);
    const b = VsockListener.listen(VMADDR_PORT_ANY, opts);
    try {
      for (const l of [a, b]) {
        assert.ok(l.port > 0 && l.port !== VMADDR_PORT_ANY, String(l.port));
        assert.equal(l.url, `vsock://2:${l.port}`);
      }
      assert.notEqual(a.port, b.port);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
