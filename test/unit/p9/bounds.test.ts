// Per-connection bounds: fid table (ENFILE, then recovery), host fd LRU, msize and frame sizes.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Errno } from '../../../src/p9/errno.js';
import { MsgType } from '../../../src/p9/messages.js';
import { P9Client, P9ClientError } from '../../helpers/p9client.js';
import { Fixture, until } from './fixture.js';

describe('p9 bounds', function () {
  this.timeout(20_000);
  let fx: Fixture;
  afterEach(async () => {
    await fx.stop();
  });

  it('fid exhaustion answers ENFILE; after a clunk the connection goes on', async () => {
    fx = await Fixture.start({ maxFids: 8 });
    const { c, root } = await fx.client();
    const fids: number[] = [];
    for (let i = 0; i < 7; i++) fids.push((await c.walk(root, [])).fid);
    await assert.rejects(c.walk(root, []), (e: unknown) => e instanceof P9ClientError && e.ecode === Errno.ENFILE);
    await assert.rejects(c.attach('test'), (e: unknown) => e instanceof P9ClientError && e.ecode === Errno.ENFILE);
    await c.clunk(fids.pop()!);
    const again = await c.walk(root, []);
    assert.equal((await c.getattr(again.fid)).qid.type, 0x80);
    c.close();
    await until(() => fx.server.fidCount === 0);
  });

  it('keeps at most maxHostFds fds per connection and reopens evicted files transparently', async () => {
    fx = await Fixture.start({ maxHostFds: 4 });
    for (let i = 0; i < 20; i++) fx.file(`f${i}`, `content ${i}`);
    const { c, root } = await fx.client();
    const fds = (): number => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    const open: number[] = [];
    for (let i = 0; i < 20; i++) {
      const { fid } = await c.walk(root, [`f${i}`]);
      await c.lopen(fid, 2);
      open.push(fid);
    }
    assert.ok(fds() - before <= 8, `fds grew by ${fds() - before}`);
    for (let i = 0; i < 20; i++) assert.equal((await c.read(open[i]!, 0, 100)).toString(), `content ${i}`);
    await c.write(open[3]!, 0, Buffer.from('CONTENT'));
    assert.equal(fs.readFileSync(fx.host('f3'), 'utf8'), 'CONTENT 3');
  });

  it('fids naming one file share one O_PATH fd; fids opened the same way share one open-file fd', async () => {
    fx = await Fixture.start();
    fx.file('shared', 'one inode');
    const { c, root } = await fx.client();
    const before = fx.server.hostFdCount;
    const fids: number[] = [];
    for (let i = 0; i < 100; i++) fids.push((await c.walk(root, ['shared'])).fid);
    // A walk opens no fd for the name it ends on, nor does a Tgetattr (a statx of the name in its directory); the
    // first open opens the inode's O_PATH fd, for all its fids.
    assert.equal(fx.server.hostFdCount - before, 0);
    for (const f of fids) await c.getattr(f);
    assert.equal(fx.server.hostFdCount - before, 0);
    for (const f of fids.slice(0, 50)) await c.lopen(f, 0);
    for (const f of fids.slice(50)) await c.lopen(f, 2);
    assert.equal(fx.server.hostFdCount - before, 3, 'O_PATH + read-only + read-write');
    for (const f of fids.slice(0, 99)) await c.clunk(f);
    assert.equal((await c.read(fids[99]!, 0, 100)).toString(), 'one inode');
    await c.clunk(fids[99]!);
    assert.equal(fx.server.hostFdCount, before);
  });

  it('an evicted file that was unlinked while open stays readable (its fd is pinned)', async () => {
    fx = await Fixture.start({ maxHostFds: 2 });
    fx.file('victim', 'keep me');
    const { c, root } = await fx.client();
    const { fid } = await c.walk(root, ['victim']);
    await c.lopen(fid, 0);
    fs.unlinkSync(fx.host('victim')); // unlinked behind the server's back
    for (let i = 0; i < 6; i++) await c.walk(root, []); // churn the LRU
    assert.equal((await c.read(fid, 0, 100)).toString(), 'keep me');
  });

  it('never sends a reply of msize or more (Rread clamped, oversized readlink refused)', async () => {
    fx = await Fixture.start();
    fx.file('big', Buffer.alloc(20000, 1));
    fs.symlinkSync('x'.repeat(4090), fx.host('longlink'));
    const { c, root } = await fx.client(4096);
    const { fid } = await c.walk(root, ['big']);
    await c.lopen(fid, 0);
    const data = await c.read(fid, 0, 100000);
    assert.equal(data.length, 4096 - 24);
    const l = await c.walk(root, ['longlink']);
    const r = await c.send({ type: MsgType.Treadlink, fid: l.fid });
    assert.equal(r.type, MsgType.Rlerror);
    assert.equal((await c.getattr(root)).qid.type, 0x80);
  });

  it('closes the connection on a frame larger than msize or smaller than 7 bytes', async () => {
    fx = await Fixture.start();
    const { c } = await fx.client(8192);
    const big = Buffer.alloc(9000);
    big.writeUInt32LE(9000, 0);
    big[4] = MsgType.Tread;
    c.writeRaw(big);
    await c.waitClosed();

    const d = await P9Client.connect(fx.port);
    await d.version(8192);
    d.writeRaw(Buffer.from([3, 0, 0, 0]));
    await d.waitClosed();
    await until(() => fx.server.connectionCount === 0);
  });

  it('a malformed body gets Rlerror and the connection continues', async () => {
    fx = await Fixture.start();
    const { c, root } = await fx.client();
    // Twalk claiming 3 names but carrying none.
    const frame = Buffer.from([15, 0, 0, 0, MsgType.Twalk, 7, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
    const bad = Buffer.concat([frame.subarray(0, 13), Buffer.from([3, 0])]);
    bad.writeUInt32LE(bad.length, 0);
    const r = await c.sendFrame(bad, 7);
    assert.equal(r.type, MsgType.Rlerror);
    assert.equal((await c.getattr(root)).qid.type, 0x80);
  });
});

describe('p9 pipelining', function () {
  this.timeout(30_000);
  let fx: Fixture;
  afterEach(async () => {
    await fx.stop();
  });

  it('answers thousands of requests sent in one write, sync and async ones, beyond the outstanding cap', async () => {
    fx = await Fixture.start({ maxOutstanding: 8 });
    fx.file('f', 'pipelined');
    const { c, root } = await fx.client();
    const { fid } = await c.walk(root, ['f']);
    await c.lopen(fid, 0);
    const frames: Buffer[] = [];
    const replies: Array<Promise<unknown>> = [];
    const { encode } = await import('../../../src/p9/codec.js');
    for (let i = 0; i < 6000; i++) {
      const tag = 100 + i;
      const msg =
        i % 2 === 0
          ? ({ type: MsgType.Tgetattr, fid, requestMask: 0x7ffn } as const)
          : ({ type: MsgType.Tread, fid, offset: 0n, count: 9 } as const);
      frames.push(encode(msg, tag));
    }
    // Register the tags, then send everything in one chunk.
    for (let i = 0; i < frames.length; i++) replies.push(c.sendFrame(Buffer.alloc(0), 100 + i));
    c.writeRaw(Buffer.concat(frames));
    const all = (await Promise.all(replies)) as Array<{ type: number; data?: Buffer }>;
    assert.equal(all.filter((r) => r.type === MsgType.Rgetattr).length, 3000);
    assert.ok(all.filter((r) => r.type === MsgType.Rread).every((r) => r.data!.toString() === 'pipelined'));
  });
});
