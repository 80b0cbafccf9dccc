// hvsock: the address facts (GUID byte layout, the vsock service template, SOCKADDR_HV) against the documented
// layouts, and the transport (listen/accept/dial, secret check, a large transfer both ways) through the real
// koffi Winsock binding loaded on a FAKE ws2_32 (test/fakes/winsock-fake.c).
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  HV_GUID_PARENT,
  HvsockListener,
  SOCKADDR_HV_SIZE,
  dialHvsock,
  guidBytes,
  guidFromBytes,
  normalizeGuid,
  sockaddrHv,
  vsockPortOf,
  vsockServiceId,
} from '../../../src/transport/hvsock.js';
import { newSecret, type Conn } from '../../../src/transport/index.js';
import { SocketStream, WinsockError, loadWinsock, pollerFor, type Winsock } from '../../../src/transport/winsock.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { fakeWinsock, fakesUnavailable, type FakeWinsockControl } from '../../helpers/win32-fakes.js';

describe('hvsock addressing', () => {
  it('lays a GUID out as the GUID struct (Data1..3 little-endian, Data4 as written)', () => {
    // go-winio HvsockGUIDParent: Data1 0xa42e7cda, Data2 0xd03f, Data3 0x480c, Data4 9c c2 a4 de 20 ab b8 78.
    assert.equal(guidBytes(HV_GUID_PARENT).toString('hex'), 'da7c2ea43fd00c489cc2a4de20abb878');
    assert.equal(guidFromBytes(guidBytes(HV_GUID_PARENT)), HV_GUID_PARENT);
    assert.equal(normalizeGuid('{A42E7CDA-D03F-480C-9CC2-A4DE20ABB878}'), HV_GUID_PARENT);
    assert.throws(() => normalizeGuid('a42e7cda-d03f-480c-9cc2'), /not a GUID/);
  });

  it('derives the service id of a vsock port from the template (port as Data1)', () => {
    // The ports hcsshim's LCOW documents list: 1 (entropy), 109 (logs), 0x40000000 (GCS), 2056.
    assert.equal(vsockServiceId(1), '00000001-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockServiceId(109), '0000006d-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockServiceId(0x40000000), '40000000-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockServiceId(0x808), '00000808-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockPortOf(vsockServiceId(1024)), 1024);
    assert.equal(vsockPortOf(HV_GUID_PARENT), undefined);
    assert.throws(() => vsockServiceId(-1), RangeError);
    assert.throws(() => vsockServiceId(2 ** 32), RangeError);
  });

  it('builds SOCKADDR_HV: Family 34, Reserved 0, VmId, ServiceId (36 bytes)', () => {
    const vm = '6f1a0d2e-1b3c-4d5e-8f90-a1b2c3d4e5f6';
    const svc = vsockServiceId(1024);
    const b = sockaddrHv(vm, svc);
    assert.equal(b.length, SOCKADDR_HV_SIZE);
    assert.equal(b.readUInt16LE(0), 34);
    assert.equal(b.readUInt16LE(2), 0);
    assert.equal(guidFromBytes(b.subarray(4, 20)), vm);
    assert.equal(guidFromBytes(b.subarray(20, 36)), svc);
    // Data1 of the service is the port, little-endian.
    assert.equal(b.readUInt32LE(20), 1024);
  });
});

function collect(stream: Duplex, n: number, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes`)), timeoutMs);
    stream.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      }
    });
  });
}

function closed(stream: Duplex, timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    const done = (): void => {
      clearTimeout(t);
      resolve(true);
    };
    stream.once('close', done);
    stream.once('end', done);
    stream.resume();
  });
}

describe('hvsock transport (FAKE ws2_32)', function () {
  this.timeout(20_000);
  let ctl: FakeWinsockControl;
  let ws: Winsock;
  let dir: string;
  let baseline: number;
  const saved = process.env.LCOW_FAKE_HVSOCK_DIR;

  before(function () {
    requirePrerequisite(this, fakesUnavailable());
    ctl = fakeWinsock();
    ws = loadWinsock(ctl.path);
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `hvs-${process.pid}-`));
    process.env.LCOW_FAKE_HVSOCK_DIR = dir;
    baseline = ctl.openSockets();
  });
  afterEach(async () => {
    // Give destroyed streams a turn to close their sockets, then check nothing leaked.
    await new Promise((r) => setTimeout(r, 20));
    pollerFor(ws).close();
    assert.equal(ctl.openSockets(), baseline, 'sockets left open');
    process.env.LCOW_FAKE_HVSOCK_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts a dialer that presents the secret; bytes flow both ways (1 MiB)', async () => {
    const secret = newSecret();
    const addr = { vmId: randomUUID(), serviceId: vsockServiceId(1024) };
    const listener = HvsockListener.listen(addr, secret, { winsock: ws });
    try {
      const accepted = new Promise<Conn>((resolve) => listener.onConnection(resolve));
      const client = await dialHvsock(addr, secret, { winsock: ws });
      const server = await accepted;
      const up = randomBytes(1 << 20);
      const down = randomBytes(1 << 20);
      const gotUp = collect(server.stream, up.length);
      const gotDown = collect(client.stream, down.length);
      client.stream.write(up);
      server.stream.write(down);
      assert.ok((await gotUp).equals(up));
      assert.ok((await gotDown).equals(down));
      // EOF propagates: the client ends, the server sees the end.
      const serverEnded = closed(server.stream);
      client.stream.end();
      assert.equal(await serverEnded, true);
      client.close();
      server.close();
    } finally {
      await listener.close();
    }
  });

  it('refuses a wrong secret and a silent dialer; keeps serving the right one', async () => {
    const secret = newSecret();
    const addr = { vmId: randomUUID(), serviceId: vsockServiceId(564) };
    const listener = HvsockListener.listen(addr, secret, { winsock: ws, authTimeoutMs: 300 });
    try {
      const handedOut: Conn[] = [];
      listener.onConnection((c) => handedOut.push(c));
      const bad = await dialHvsock(addr, newSecret(), { winsock: ws });
      assert.equal(await closed(bad.stream), true, 'the listener closes a wrong secret');
      bad.close();
      // A dialer that sends only part of a secret is closed after the auth timeout.
      const raw = ws.socket(34, 1, 1);
      assert.equal(ws.connect(raw, sockaddrHv(addr.vmId, addr.serviceId)), 0);
      const silent = new SocketStream(ws, raw);
      silent.write(secret.subarray(0, 8));
      assert.equal(await closed(silent), true);
      silent.destroy();
      assert.equal(listener.rejected, 2);
      assert.equal(handedOut.length, 0);
      const good = await dialHvsock(addr, secret, { winsock: ws });
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(handedOut.length, 1);
      good.close();
      handedOut[0]!.close();
    } finally {
      await listener.close();
    }
  });

  it('reports a dial to a service nobody listens on as WSAECONNREFUSED', async () => {
    await assert.rejects(
      dialHvsock({ vmId: randomUUID(), serviceId: vsockServiceId(7) }, newSecret(), { winsock: ws }),
      (e: unknown) => e instanceof WinsockError && e.code === 'WSAECONNREFUSED',
    );
  });

  it('fails to listen twice on one (VM id, service id)', async () => {
    const addr = { vmId: randomUUID(), serviceId: vsockServiceId(1025) };
    const l = HvsockListener.listen(addr, newSecret(), { winsock: ws });
    try {
      assert.throws(
        () => HvsockListener.listen(addr, newSecret(), { winsock: ws }),
        (e: unknown) => e instanceof WinsockError && e.code === 'WSAEADDRINUSE',
      );
    } finally {
      await l.close();
    }
  });
});
