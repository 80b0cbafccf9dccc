// Byte-range locks through Tlock/Tgetlock, blocking locks parked and granted, Tflush ordering.

import assert from 'node:assert/strict';
import { LockStatus, LockType, MsgType } from '../../../src/p9/messages.js';
import type { P9Client } from '../../helpers/p9client.js';
import { Fixture, until } from './fixture.js';

const BLOCK = 1;

function lockMsg(fid: number, lockType: number, start: bigint, length: bigint, procId: number, flags = 0) {
  return { type: MsgType.Tlock, fid, lockType, flags, start, length, procId, clientId: 'guest' } as const;
}

async function openFile(c: P9Client, root: number, name: string): Promise<number> {
  const { fid } = await c.walk(root, [name]);
  await c.lopen(fid, 2);
  return fid;
}

describe('p9 locks and flush', function () {
  this.timeout(20_000);
  let fx: Fixture;
  beforeEach(async () => {
    fx = await Fixture.start();
    fx.file('db', 'data');
  });
  afterEach(async () => {
    await fx.stop();
  });

  it('conflicting owners: WRLCK vs RDLCK, getlock reports the holder, shared read locks coexist', async () => {
    const { c, root } = await fx.client();
    const a = await openFile(c, root, 'db');
    const b = await openFile(c, root, 'db');
    assert.equal((await c.rpc(lockMsg(a, LockType.WRLCK, 0n, 10n, 100), MsgType.Rlock)).status, LockStatus.SUCCESS);
    assert.equal((await c.rpc(lockMsg(b, LockType.RDLCK, 5n, 1n, 200), MsgType.Rlock)).status, LockStatus.BLOCKED);
    assert.equal((await c.rpc(lockMsg(b, LockType.WRLCK, 10n, 0n, 200), MsgType.Rlock)).status, LockStatus.SUCCESS);
    const gl = await c.rpc(
      {
        type: MsgType.Tgetlock,
        fid: b,
        lockType: LockType.WRLCK,
        start: 0n,
        length: 0n,
        procId: 200,
        clientId: 'guest',
      },
      MsgType.Rgetlock,
    );
    assert.deepEqual(
      { t: gl.lockType, s: gl.start, l: gl.length, p: gl.procId, c: gl.clientId },
      { t: LockType.WRLCK, s: 0n, l: 10n, p: 100, c: 'guest' },
    );
    // Unlock part of A's range: the freed bytes become available, the rest stays locked (split).
    await c.rpc(lockMsg(a, LockType.UNLCK, 2n, 3n, 100), MsgType.Rlock);
    assert.equal((await c.rpc(lockMsg(b, LockType.RDLCK, 2n, 3n, 200), MsgType.Rlock)).status, LockStatus.SUCCESS);
    assert.equal((await c.rpc(lockMsg(b, LockType.RDLCK, 0n, 1n, 200), MsgType.Rlock)).status, LockStatus.BLOCKED);
    const free = await c.rpc(
      {
        type: MsgType.Tgetlock,
        fid: b,
        lockType: LockType.RDLCK,
        start: 2n,
        length: 3n,
        procId: 300,
        clientId: 'guest',
      },
      MsgType.Rgetlock,
    );
    assert.equal(free.lockType, LockType.UNLCK);
  });

  it("Tgetlock with type UNLCK (what the Linux client always sends) reports another owner's lock", async () => {
    const one = await fx.client();
    const two = await fx.client();
    const a = await openFile(one.c, one.root, 'db');
    const b = await openFile(two.c, two.root, 'db');
    await one.c.rpc(lockMsg(a, LockType.WRLCK, 0n, 5n, 7), MsgType.Rlock);
    const gl = await two.c.rpc(
      {
        type: MsgType.Tgetlock,
        fid: b,
        lockType: LockType.UNLCK,
        start: 0n,
        length: 10n,
        procId: 9,
        clientId: 'guest',
      },
      MsgType.Rgetlock,
    );
    assert.deepEqual([gl.lockType, gl.start, gl.length, gl.procId], [LockType.WRLCK, 0n, 5n, 7]);
    const none = await two.c.rpc(
      { type: MsgType.Tgetlock, fid: b, lockType: LockType.UNLCK, start: 5n, length: 0n, procId: 9, clientId: 'guest' },
      MsgType.Rgetlock,
    );
    assert.equal(none.lockType, LockType.UNLCK);
  });

  it('a blocking lock is parked (no BLOCKED reply) and granted when the holder unlocks', async () => {
    const { c, root } = await fx.client();
    const a = await openFile(c, root, 'db');
    const b = await openFile(c, root, 'db');
    await c.rpc(lockMsg(a, LockType.WRLCK, 0n, 0n, 1), MsgType.Rlock);
    let settled = false;
    const waiting = c.rpc(lockMsg(b, LockType.WRLCK, 0n, 0n, 2, BLOCK), MsgType.Rlock).then((r) => {
      settled = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(settled, false);
    // Other requests keep flowing while the lock waits.
    assert.equal((await c.getattr(root)).qid.type, 0x80);
    await c.rpc(lockMsg(a, LockType.UNLCK, 0n, 0n, 1), MsgType.Rlock);
    assert.equal((await waiting).status, LockStatus.SUCCESS);
  });

  it('clunk releases the locks taken through the fid and wakes waiters', async () => {
    const { c, root } = await fx.client();
    const a = await openFile(c, root, 'db');
    const b = await openFile(c, root, 'db');
    await c.rpc(lockMsg(a, LockType.WRLCK, 0n, 100n, 1), MsgType.Rlock);
    const waiting = c.rpc(lockMsg(b, LockType.RDLCK, 50n, 10n, 2, BLOCK), MsgType.Rlock);
    await c.clunk(a);
    assert.equal((await waiting).status, LockStatus.SUCCESS);
  });

  it('locks conflict across connections and are released when a connection drops', async () => {
    const one = await fx.client();
    const two = await fx.client();
    const a = await openFile(one.c, one.root, 'db');
    const b = await openFile(two.c, two.root, 'db');
    await one.c.rpc(lockMsg(a, LockType.WRLCK, 0n, 0n, 1), MsgType.Rlock);
    const waiting = two.c.rpc(lockMsg(b, LockType.WRLCK, 0n, 0n, 1, BLOCK), MsgType.Rlock);
    one.c.close();
    assert.equal((await waiting).status, LockStatus.SUCCESS);
  });

  it('two exports of the same host directory share locks (the table is keyed by file identity)', async () => {
    await fx.stop();
    fx = await Fixture.start({
      exportsFor: (dir) => [
        { name: 'test', path: dir },
        { name: 'other', path: dir },
      ],
    });
    fx.file('db', 'data');
    const one = await fx.client();
    const c2 = await fx.client(65536, false);
    const root2 = (await c2.c.attach('other')).fid;
    const a = await openFile(one.c, one.root, 'db');
    const b = await openFile(c2.c, root2, 'db');
    await one.c.rpc(lockMsg(a, LockType.WRLCK, 0n, 0n, 1), MsgType.Rlock);
    assert.equal((await c2.c.rpc(lockMsg(b, LockType.RDLCK, 0n, 1n, 1), MsgType.Rlock)).status, LockStatus.BLOCKED);
  });

  it('Tflush of a parked lock: no reply for the flushed tag, then Rflush; the tag is reusable', async () => {
    const { c, root } = await fx.client();
    const a = await openFile(c, root, 'db');
    const b = await openFile(c, root, 'db');
    await c.rpc(lockMsg(a, LockType.WRLCK, 0n, 0n, 1), MsgType.Rlock);
    const lockTag = 500;
    let lockAnswered = false;
    void c.send(lockMsg(b, LockType.WRLCK, 0n, 0n, 2, BLOCK), lockTag).then(() => (lockAnswered = true));
    await new Promise((r) => setTimeout(r, 20));
    const f1 = c.send({ type: MsgType.Tflush, oldtag: lockTag }, 501);
    const f2 = c.send({ type: MsgType.Tflush, oldtag: lockTag }, 502);
    assert.equal((await f1).type, MsgType.Rflush);
    assert.equal((await f2).type, MsgType.Rflush);
    // Releasing the holder now must not produce a late Rlock for the flushed tag.
    await c.rpc(lockMsg(a, LockType.UNLCK, 0n, 0n, 1), MsgType.Rlock);
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(lockAnswered, false);
    assert.deepEqual(
      c.replyLog.filter((r) => r.tag >= 500 && r.tag <= 502).map((r) => r.tag),
      [501, 502],
    );
    // The waiter was removed: the lock is free for a new non-blocking request.
    assert.equal((await c.rpc(lockMsg(b, LockType.WRLCK, 0n, 0n, 2), MsgType.Rlock)).status, LockStatus.SUCCESS);
  });

  it('Tflush of a running request: its reply comes before Rflush; flush of an unknown tag answers at once', async () => {
    const { c, root } = await fx.client();
    const f = await openFile(c, root, 'db');
    const tags: number[] = [];
    const pending: Array<Promise<unknown>> = [];
    for (let i = 0; i < 50; i++) {
      const tag = 1000 + i;
      tags.push(tag);
      pending.push(c.send({ type: MsgType.Tfsync, fid: f, datasync: 0 }, tag));
    }
    const flush = c.send({ type: MsgType.Tflush, oldtag: 1025 }, 2000);
    await Promise.all([...pending, flush]);
    const order = c.replyLog.map((r) => r.tag);
    const flushedAt = order.indexOf(1025);
    assert.ok(flushedAt < 0 || flushedAt < order.indexOf(2000), 'flushed reply after its Rflush');
    const r = await c.send({ type: MsgType.Tflush, oldtag: 4321 }, 2001);
    assert.equal(r.type, MsgType.Rflush);
  });

  it('the parked-lock bound answers BLOCKED instead of parking more', async () => {
    await fx.stop();
    fx = await Fixture.start({ maxParkedLocks: 1 });
    fx.file('db', '');
    const { c, root } = await fx.client();
    const a = await openFile(c, root, 'db');
    const b = await openFile(c, root, 'db');
    await c.rpc(lockMsg(a, LockType.WRLCK, 0n, 0n, 1), MsgType.Rlock);
    const parked = c.rpc(lockMsg(b, LockType.WRLCK, 0n, 0n, 2, BLOCK), MsgType.Rlock);
    await new Promise((r) => setTimeout(r, 20));
    const extra = await c.rpc(lockMsg(b, LockType.WRLCK, 0n, 0n, 3, BLOCK), MsgType.Rlock);
    assert.equal(extra.status, LockStatus.BLOCKED);
    await c.clunk(a);
    assert.equal((await parked).status, LockStatus.SUCCESS);
    await until(() => fx.server.connectionCount === 1);
  });
});
