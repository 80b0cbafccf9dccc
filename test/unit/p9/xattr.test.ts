// Extended attributes: walk (get and list), create committed on clunk, removal, and every bound.

import assert from 'node:assert/strict';
import { Errno } from '../../../src/p9/errno.js';
import { MsgType } from '../../../src/p9/messages.js';
import { P9ClientError, type P9Client } from '../../helpers/p9client.js';
import { Fixture } from './fixture.js';

import { lgetxattr } from '../../../src/util/syscalls.js';

/** The attribute as the host sees it, read directly (undefined when absent). */
function hostGetfattr(file: string, name: string): string | undefined {
  try {
    const buf = Buffer.alloc(lgetxattr(file, name, null));
    return buf.subarray(0, lgetxattr(file, name, buf)).toString();
  } catch {
    return undefined;
  }
}

async function setXattr(
  c: P9Client,
  root: number,
  file: string,
  name: string,
  value: Buffer,
  flags = 0,
): Promise<void> {
  const { fid } = await c.walk(root, [file]);
  await c.rpc({ type: MsgType.Txattrcreate, fid, name, attrSize: BigInt(value.length), flags }, MsgType.Rxattrcreate);
  if (value.length > 0) await c.write(fid, 0, value);
  await c.clunk(fid);
}

async function getXattr(c: P9Client, root: number, file: string, name: string): Promise<Buffer> {
  const { fid } = await c.walk(root, [file]);
  const xfid = c.allocFid();
  try {
    const r = await c.rpc({ type: MsgType.Txattrwalk, fid, newfid: xfid, name }, MsgType.Rxattrwalk);
    const data = await c.read(xfid, 0, Number(r.size) + 10);
    assert.equal(BigInt(data.length), r.size);
    await c.clunk(xfid);
    return data;
  } finally {
    await c.clunk(fid);
  }
}

async function ecode(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof P9ClientError) return e.ecode;
    throw e;
  }
}

describe('p9 xattrs', function () {
  this.timeout(20_000);
  let fx: Fixture;
  beforeEach(async () => {
    fx = await Fixture.start({ maxPendingXattrs: 2 });
    fx.file('f', 'x');
  });
  afterEach(async () => {
    await fx.stop();
  });

  it('set commits on clunk, get and list read it back, size 0 removes it', async () => {
    const { c, root } = await fx.client();
    await setXattr(c, root, 'f', 'user.color', Buffer.from('blue'));
    assert.equal(hostGetfattr(fx.host('f'), 'user.color'), 'blue');
    assert.deepEqual(await getXattr(c, root, 'f', 'user.color'), Buffer.from('blue'));
    const list = (await getXattr(c, root, 'f', '')).toString().split('\0').filter(Boolean);
    assert.ok(list.includes('user.color'), list.join(','));
    await setXattr(c, root, 'f', 'user.color', Buffer.alloc(0));
    assert.equal(hostGetfattr(fx.host('f'), 'user.color'), undefined);
    assert.equal(await ecode(getXattr(c, root, 'f', 'user.color')), Errno.ENODATA);
  });

  it('XATTR_CREATE on an existing attribute and XATTR_REPLACE on a missing one fail at clunk', async () => {
    const { c, root } = await fx.client();
    await setXattr(c, root, 'f', 'user.a', Buffer.from('1'));
    assert.equal(await ecode(setXattr(c, root, 'f', 'user.a', Buffer.from('2'), 1)), Errno.EEXIST);
    assert.equal(await ecode(setXattr(c, root, 'f', 'user.b', Buffer.from('2'), 2)), Errno.ENODATA);
    assert.equal(hostGetfattr(fx.host('f'), 'user.a'), '1');
  });

  it('rejects bad flags (EINVAL), oversized values (E2BIG), wild write offsets and size mismatches', async () => {
    const { c, root } = await fx.client();
    const create = async (attrSize: bigint, flags: number): Promise<number> => {
      const { fid } = await c.walk(root, ['f']);
      return ecode(c.rpc({ type: MsgType.Txattrcreate, fid, name: 'user.z', attrSize, flags }));
    };
    assert.equal(await create(1n, 4), Errno.EINVAL);
    assert.equal(await create(65537n, 0), Errno.E2BIG);

    const { fid } = await c.walk(root, ['f']);
    await c.rpc({ type: MsgType.Txattrcreate, fid, name: 'user.z', attrSize: 4n, flags: 0 });
    assert.equal(await ecode(c.write(fid, 1_000_000n, Buffer.from('x'))), Errno.EINVAL);
    assert.equal(await ecode(c.write(fid, 2, Buffer.from('xyz'))), Errno.EINVAL);
    await c.write(fid, 0, Buffer.from('ab'));
    assert.equal(await ecode(c.clunk(fid)), Errno.EINVAL); // 2 of 4 bytes written
    assert.equal(await ecode(c.getattr(fid)), Errno.EBADF); // clunked anyway
    assert.equal(hostGetfattr(fx.host('f'), 'user.z'), undefined);
  });

  it('bounds pending xattr fids (ENOSPC) and frees the slot on clunk; an open fid cannot become one', async () => {
    const { c, root } = await fx.client();
    const fids: number[] = [];
    for (let i = 0; i < 2; i++) {
      const { fid } = await c.walk(root, ['f']);
      await c.rpc({ type: MsgType.Txattrcreate, fid, name: `user.p${i}`, attrSize: 0n, flags: 0 });
      fids.push(fid);
    }
    const { fid: third } = await c.walk(root, ['f']);
    assert.equal(
      await ecode(c.rpc({ type: MsgType.Txattrcreate, fid: third, name: 'user.p2', attrSize: 0n, flags: 0 })),
      Errno.ENOSPC,
    );
    await ecode(c.clunk(fids[0]!));
    await c.rpc({ type: MsgType.Txattrcreate, fid: third, name: 'user.p2', attrSize: 0n, flags: 0 });
    const opened = await c.walk(root, ['f']);
    await c.lopen(opened.fid, 0);
    assert.equal(
      await ecode(c.rpc({ type: MsgType.Txattrcreate, fid: opened.fid, name: 'user.q', attrSize: 0n, flags: 0 })),
      Errno.EINVAL,
    );
  });
});
