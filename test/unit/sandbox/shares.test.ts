// The 9P share routing (src/sandbox/shares.ts, used by the hcs and qemu backends) on its own: which handshake purposes the 9P
// listener admits and with what binding, and where an authenticated connection goes. The handshake itself runs
// for real in test/unit/sandbox/hcs-sandbox.test.ts and test/unit/transport/hvsock.test.ts.
import assert from 'node:assert/strict';
import { PassThrough, type Duplex } from 'node:stream';
import { ShareRouter, SHARE_TOKEN_LENGTH, type ShareServer } from '../../../src/sandbox/shares.js';
import type { Conn } from '../../../src/transport/index.js';
import { silentLogger } from '../../../src/util/log.js';

function fakeConn(): Conn & { closed: boolean } {
  const stream = new PassThrough();
  const c = {
    stream,
    childHandle: -1,
    closed: false,
    close: () => {
      c.closed = true;
      stream.destroy();
    },
  };
  return c;
}

describe('9P share routing (ShareRouter)', () => {
  const served = new Map<string, Duplex[]>();
  let closedServers: string[];
  const router = (): ShareRouter => {
    served.clear();
    closedServers = [];
    return new ShareRouter(async ({ id }): Promise<ShareServer> => {
      served.set(id, []);
      return {
        handleConnection: (s) => served.get(id)!.push(s),
        close: () => closedServers.push(id),
      };
    }, silentLogger);
  };
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

  it('admits a registered share id only, binding that share its own token; never the control purpose', async () => {
    const r = router();
    const a = r.create({ hostPath: '/srv/a', readOnly: true }, async () => '/g/a');
    const b = r.create({ hostPath: '/srv/b', readOnly: false }, async () => '/g/b');
    assert.equal(a.token.length, SHARE_TOKEN_LENGTH);
    assert.notDeepEqual(a.token, b.token);
    assert.deepEqual(r.admit({ kind: 'p9', shareId: a.id })?.binding, a.token);
    assert.deepEqual(r.admit({ kind: 'p9', shareId: b.id })?.binding, b.token);
    assert.equal(r.admit({ kind: 'p9', shareId: 's999' }), undefined);
    assert.equal(r.admit({ kind: 'control' }), undefined);
    r.closeAll();
  });

  it("routes an authenticated connection by its purpose's share id; one connection per share", async () => {
    const r = router();
    const a = r.create({ hostPath: '/srv/a', readOnly: true }, async () => '/g/a');
    const b = r.create({ hostPath: '/srv/b', readOnly: true }, async () => '/g/b');
    await Promise.all([a.ready, b.ready]);
    const ca = fakeConn();
    r.handle(ca, { kind: 'p9', shareId: a.id });
    await tick();
    assert.deepEqual(served.get(a.id), [ca.stream]);
    assert.deepEqual(served.get(b.id), []);
    // Share a has its connection: no more handshakes for it are admitted, and a second one that completed
    // concurrently (both admitted before either finished) is closed, not served.
    assert.equal(r.admit({ kind: 'p9', shareId: a.id }), undefined);
    const late = fakeConn();
    r.handle(late, { kind: 'p9', shareId: a.id });
    await tick();
    assert.equal(late.closed, true);
    assert.equal(served.get(a.id)!.length, 1);
    // b is still open to its own connection.
    assert.ok(r.admit({ kind: 'p9', shareId: b.id }));
    assert.equal(r.refused, 1);
    r.closeAll();
  });

  it('closes a connection whose share went away during its handshake', async () => {
    const r = router();
    const a = r.create({ hostPath: '/srv/a', readOnly: true }, async () => '/g/a');
    await a.ready;
    assert.ok(r.admit({ kind: 'p9', shareId: a.id }));
    r.release(a.id);
    await tick();
    assert.deepEqual(closedServers, [a.id]);
    const c = fakeConn();
    r.handle(c, { kind: 'p9', shareId: a.id });
    assert.equal(c.closed, true);
    assert.equal(served.get(a.id)!.length, 0);
  });
});
