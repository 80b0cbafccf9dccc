// Codec byte vectors: every 9P2000.L message (and Rlerror), built by hand from the reference layouts
// (size[4] type[1] tag[2] body, little-endian, strings len[2]+bytes, qid type[1] version[4] path[8]),
// checked in both directions.

import assert from 'node:assert/strict';
import { DecodeError, decode, encode } from '../../../src/p9/codec.js';
import { MsgType, type AnyMessage } from '../../../src/p9/messages.js';

const u8 = (n: number): number[] => [n & 0xff];
const u16 = (n: number): number[] => [n & 0xff, (n >> 8) & 0xff];
const u32 = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const u64 = (n: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
const str = (s: string): number[] => [...u16(Buffer.byteLength(s)), ...Buffer.from(s)];
const qidBytes = (type: number, version: number, path: bigint): number[] => [
  ...u8(type),
  ...u32(version),
  ...u64(path),
];
function frame(type: number, tag: number, body: number[]): Buffer {
  return Buffer.from([...u32(7 + body.length), type, ...u16(tag), ...body]);
}

const Q = { type: 0x80, version: 0x01020304, path: 0x1122334455667788n };
const QB = qidBytes(0x80, 0x01020304, 0x1122334455667788n);
const Q2 = { type: 0x02, version: 7, path: 42n };
const Q2B = qidBytes(0x02, 7, 42n);

const vectors: Array<[string, AnyMessage, number[]]> = [
  ['Rlerror', { type: MsgType.Rlerror, ecode: 2 }, u32(2)],
  ['Tstatfs', { type: MsgType.Tstatfs, fid: 9 }, u32(9)],
  [
    'Rstatfs',
    {
      type: MsgType.Rstatfs,
      fsType: 0xef53,
      bsize: 4096,
      blocks: 1000n,
      bfree: 900n,
      bavail: 800n,
      files: 500n,
      ffree: 400n,
      fsid: 0xabcdefn,
      namelen: 255,
    },
    [
      ...u32(0xef53),
      ...u32(4096),
      ...u64(1000n),
      ...u64(900n),
      ...u64(800n),
      ...u64(500n),
      ...u64(400n),
      ...u64(0xabcdefn),
      ...u32(255),
    ],
  ],
  ['Tlopen', { type: MsgType.Tlopen, fid: 3, flags: 0o1002 }, [...u32(3), ...u32(0o1002)]],
  ['Rlopen', { type: MsgType.Rlopen, qid: Q, iounit: 8168 }, [...QB, ...u32(8168)]],
  [
    'Tlcreate',
    { type: MsgType.Tlcreate, fid: 3, name: 'new', flags: 0o102, mode: 0o644, gid: 100 },
    [...u32(3), ...str('new'), ...u32(0o102), ...u32(0o644), ...u32(100)],
  ],
  ['Rlcreate', { type: MsgType.Rlcreate, qid: Q, iounit: 0 }, [...QB, ...u32(0)]],
  [
    'Tsymlink',
    { type: MsgType.Tsymlink, fid: 1, name: 'ln', symtgt: '/x/y', gid: 5 },
    [...u32(1), ...str('ln'), ...str('/x/y'), ...u32(5)],
  ],
  ['Rsymlink', { type: MsgType.Rsymlink, qid: Q2 }, Q2B],
  [
    'Tmknod',
    { type: MsgType.Tmknod, dfid: 1, name: 'dev', mode: 0o20666, major: 1, minor: 3, gid: 0 },
    [...u32(1), ...str('dev'), ...u32(0o20666), ...u32(1), ...u32(3), ...u32(0)],
  ],
  ['Rmknod', { type: MsgType.Rmknod, qid: Q }, QB],
  ['Trename', { type: MsgType.Trename, fid: 4, dfid: 5, name: 'to' }, [...u32(4), ...u32(5), ...str('to')]],
  ['Rrename', { type: MsgType.Rrename }, []],
  ['Treadlink', { type: MsgType.Treadlink, fid: 8 }, u32(8)],
  ['Rreadlink', { type: MsgType.Rreadlink, target: 'tgt' }, str('tgt')],
  ['Tgetattr', { type: MsgType.Tgetattr, fid: 2, requestMask: 0x3fffn }, [...u32(2), ...u64(0x3fffn)]],
  [
    'Rgetattr',
    {
      type: MsgType.Rgetattr,
      valid: 0x7ffn,
      qid: Q,
      mode: 0o100644,
      uid: 1000,
      gid: 1001,
      nlink: 2n,
      rdev: 0x103n,
      size: 12345n,
      blksize: 4096n,
      blocks: 24n,
      atimeSec: 1n,
      atimeNsec: 2n,
      mtimeSec: 3n,
      mtimeNsec: 4n,
      ctimeSec: 5n,
      ctimeNsec: 6n,
      btimeSec: 7n,
      btimeNsec: 8n,
      gen: 9n,
      dataVersion: 10n,
    },
    [
      ...u64(0x7ffn),
      ...QB,
      ...u32(0o100644),
      ...u32(1000),
      ...u32(1001),
      ...u64(2n),
      ...u64(0x103n),
      ...u64(12345n),
      ...u64(4096n),
      ...u64(24n),
      ...[1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n].flatMap(u64),
    ],
  ],
  [
    'Tsetattr',
    {
      type: MsgType.Tsetattr,
      fid: 2,
      valid: 0x1ff,
      mode: 0o755,
      uid: 1,
      gid: 2,
      size: 99n,
      atimeSec: 10n,
      atimeNsec: 11n,
      mtimeSec: 12n,
      mtimeNsec: 13n,
    },
    [...u32(2), ...u32(0x1ff), ...u32(0o755), ...u32(1), ...u32(2), ...[99n, 10n, 11n, 12n, 13n].flatMap(u64)],
  ],
  ['Rsetattr', { type: MsgType.Rsetattr }, []],
  [
    'Txattrwalk',
    { type: MsgType.Txattrwalk, fid: 1, newfid: 2, name: 'user.a' },
    [...u32(1), ...u32(2), ...str('user.a')],
  ],
  ['Rxattrwalk', { type: MsgType.Rxattrwalk, size: 17n }, u64(17n)],
  [
    'Txattrcreate',
    { type: MsgType.Txattrcreate, fid: 1, name: 'user.b', attrSize: 4n, flags: 1 },
    [...u32(1), ...str('user.b'), ...u64(4n), ...u32(1)],
  ],
  ['Rxattrcreate', { type: MsgType.Rxattrcreate }, []],
  ['Treaddir', { type: MsgType.Treaddir, fid: 6, offset: 3n, count: 8192 }, [...u32(6), ...u64(3n), ...u32(8192)]],
  ['Rreaddir', { type: MsgType.Rreaddir, data: Buffer.from([1, 2, 3]) }, [...u32(3), 1, 2, 3]],
  ['Tfsync', { type: MsgType.Tfsync, fid: 6, datasync: 1 }, [...u32(6), ...u32(1)]],
  ['Rfsync', { type: MsgType.Rfsync }, []],
  [
    'Tlock',
    { type: MsgType.Tlock, fid: 6, lockType: 1, flags: 1, start: 0n, length: 10n, procId: 77, clientId: 'host' },
    [...u32(6), ...u8(1), ...u32(1), ...u64(0n), ...u64(10n), ...u32(77), ...str('host')],
  ],
  ['Rlock', { type: MsgType.Rlock, status: 1 }, u8(1)],
  [
    'Tgetlock',
    { type: MsgType.Tgetlock, fid: 6, lockType: 0, start: 5n, length: 0n, procId: 78, clientId: 'h' },
    [...u32(6), ...u8(0), ...u64(5n), ...u64(0n), ...u32(78), ...str('h')],
  ],
  [
    'Rgetlock',
    { type: MsgType.Rgetlock, lockType: 2, start: 5n, length: 0n, procId: 78, clientId: 'h' },
    [...u8(2), ...u64(5n), ...u64(0n), ...u32(78), ...str('h')],
  ],
  ['Tlink', { type: MsgType.Tlink, dfid: 1, fid: 2, name: 'hl' }, [...u32(1), ...u32(2), ...str('hl')]],
  ['Rlink', { type: MsgType.Rlink }, []],
  [
    'Tmkdir',
    { type: MsgType.Tmkdir, dfid: 1, name: 'dir', mode: 0o755, gid: 3 },
    [...u32(1), ...str('dir'), ...u32(0o755), ...u32(3)],
  ],
  ['Rmkdir', { type: MsgType.Rmkdir, qid: Q }, QB],
  [
    'Trenameat',
    { type: MsgType.Trenameat, olddirfid: 1, oldname: 'a', newdirfid: 2, newname: 'bb' },
    [...u32(1), ...str('a'), ...u32(2), ...str('bb')],
  ],
  ['Rrenameat', { type: MsgType.Rrenameat }, []],
  [
    'Tunlinkat',
    { type: MsgType.Tunlinkat, dirfid: 1, name: 'x', flags: 0x200 },
    [...u32(1), ...str('x'), ...u32(0x200)],
  ],
  ['Runlinkat', { type: MsgType.Runlinkat }, []],
  ['Tversion', { type: MsgType.Tversion, msize: 65536, version: '9P2000.L' }, [...u32(65536), ...str('9P2000.L')]],
  ['Rversion', { type: MsgType.Rversion, msize: 8192, version: '9P2000.L' }, [...u32(8192), ...str('9P2000.L')]],
  [
    'Tauth',
    { type: MsgType.Tauth, afid: 1, uname: 'u', aname: 'ctl', nUname: 1000 },
    [...u32(1), ...str('u'), ...str('ctl'), ...u32(1000)],
  ],
  ['Rauth', { type: MsgType.Rauth, aqid: Q }, QB],
  [
    'Tattach',
    { type: MsgType.Tattach, fid: 0, afid: 0xffffffff, uname: 'root', aname: '', nUname: 0 },
    [...u32(0), ...u32(0xffffffff), ...str('root'), ...str(''), ...u32(0)],
  ],
  ['Rattach', { type: MsgType.Rattach, qid: Q }, QB],
  ['Tflush', { type: MsgType.Tflush, oldtag: 0x1234 }, u16(0x1234)],
  ['Rflush', { type: MsgType.Rflush }, []],
  [
    'Twalk',
    { type: MsgType.Twalk, fid: 1, newfid: 2, names: ['usr', 'lib'] },
    [...u32(1), ...u32(2), ...u16(2), ...str('usr'), ...str('lib')],
  ],
  ['Rwalk', { type: MsgType.Rwalk, qids: [Q, Q2] }, [...u16(2), ...QB, ...Q2B]],
  [
    'Tread',
    { type: MsgType.Tread, fid: 1, offset: 1n << 40n, count: 4096 },
    [...u32(1), ...u64(1n << 40n), ...u32(4096)],
  ],
  ['Rread', { type: MsgType.Rread, data: Buffer.from('hi') }, [...u32(2), ...Buffer.from('hi')]],
  [
    'Twrite',
    { type: MsgType.Twrite, fid: 1, offset: 7n, data: Buffer.from('abc') },
    [...u32(1), ...u64(7n), ...u32(3), ...Buffer.from('abc')],
  ],
  ['Rwrite', { type: MsgType.Rwrite, count: 3 }, u32(3)],
  ['Tclunk', { type: MsgType.Tclunk, fid: 0xdeadbeef }, u32(0xdeadbeef)],
  ['Rclunk', { type: MsgType.Rclunk }, []],
  ['Tremove', { type: MsgType.Tremove, fid: 5 }, u32(5)],
  ['Rremove', { type: MsgType.Rremove }, []],
];

describe('p9 codec byte vectors', () => {
  it('covers every 9P2000.L message type plus Rlerror', () => {
    const covered = new Set(vectors.map(([, m]) => m.type));
    const all = Object.values(MsgType).filter((t) => t !== MsgType.Tlerror);
    assert.deepEqual(
      all.filter((t) => !covered.has(t)),
      [],
    );
  });

  for (const [name, msg, body] of vectors) {
    it(`${name}: encodes to and decodes from the reference layout`, () => {
      const tag = name === 'Tversion' || name === 'Rversion' ? 0xffff : 0x0a0b;
      const bytes = frame(msg.type, tag, body);
      assert.deepEqual(encode(msg, tag), bytes);
      assert.deepEqual(decode(bytes), { ...msg, tag });
    });
  }

  it('decodes UTF-8 names byte-exactly', () => {
    const bytes = frame(MsgType.Tmkdir, 1, [...u32(1), ...str('snö☃'), ...u32(0o700), ...u32(0)]);
    assert.equal((decode(bytes) as { name: string }).name, 'snö☃');
    assert.deepEqual(encode({ type: MsgType.Tmkdir, dfid: 1, name: 'snö☃', mode: 0o700, gid: 0 }, 1), bytes);
  });

  it('rejects truncated bodies and lying counts with DecodeError', () => {
    const full = frame(MsgType.Tlcreate, 1, [...u32(3), ...str('new'), ...u32(0), ...u32(0), ...u32(0)]);
    for (let cut = 7; cut < full.length; cut++) {
      const part = Buffer.from(full.subarray(0, cut));
      part.writeUInt32LE(cut, 0);
      assert.throws(() => decode(part), DecodeError, `cut at ${cut}`);
    }
    const lyingWalk = frame(MsgType.Twalk, 1, [...u32(1), ...u32(2), ...u16(60000)]);
    assert.throws(() => decode(lyingWalk), DecodeError);
    const lyingWrite = frame(MsgType.Twrite, 1, [...u32(1), ...u64(0n), ...u32(100), 1, 2]);
    assert.throws(() => decode(lyingWrite), DecodeError);
    assert.throws(() => decode(frame(6, 1, [])), DecodeError); // Tlerror is not a request
  });

  it('Twrite data is a view of the frame, not a copy', () => {
    const bytes = frame(MsgType.Twrite, 1, [...u32(1), ...u64(0n), ...u32(3), 9, 9, 9]);
    const m = decode(bytes) as { data: Buffer };
    assert.equal(m.data.buffer, bytes.buffer);
  });
});
