// Encoding and decoding of 9P2000.L messages. Each body layout is one field list (reference §1.3), shared by
// the encoder and the decoder, so both directions are driven by the same table.

import { HEADER_SIZE, MsgType, type AnyMessage, type Qid } from './messages.js';

type FieldKind =
  | 'u8'
  | 'u16'
  | 'u32'
  | 'u64' // bigint
  | 'str'
  | 'qid'
  | 'strs' // nwname[2] nwname*wname[s]
  | 'qids' // nwqid[2] nwqid*qid[13]
  | 'data'; // count[4] then count bytes

type Layout = ReadonlyArray<readonly [string, FieldKind]>;

const qid: readonly [string, FieldKind] = ['qid', 'qid'];

/** Body layouts by message type number (header excluded). */
export const layouts: Readonly<Record<number, Layout>> = {
  [MsgType.Rlerror]: [['ecode', 'u32']],
  [MsgType.Tstatfs]: [['fid', 'u32']],
  [MsgType.Rstatfs]: [
    ['fsType', 'u32'],
    ['bsize', 'u32'],
    ['blocks', 'u64'],
    ['bfree', 'u64'],
    ['bavail', 'u64'],
    ['files', 'u64'],
    ['ffree', 'u64'],
    ['fsid', 'u64'],
    ['namelen', 'u32'],
  ],
  [MsgType.Tlopen]: [
    ['fid', 'u32'],
    ['flags', 'u32'],
  ],
  [MsgType.Rlopen]: [qid, ['iounit', 'u32']],
  [MsgType.Tlcreate]: [
    ['fid', 'u32'],
    ['name', 'str'],
    ['flags', 'u32'],
    ['mode', 'u32'],
    ['gid', 'u32'],
  ],
  [MsgType.Rlcreate]: [qid, ['iounit', 'u32']],
  [MsgType.Tsymlink]: [
    ['fid', 'u32'],
    ['name', 'str'],
    ['symtgt', 'str'],
    ['gid', 'u32'],
  ],
  [MsgType.Rsymlink]: [qid],
  [MsgType.Tmknod]: [
    ['dfid', 'u32'],
    ['name', 'str'],
    ['mode', 'u32'],
    ['major', 'u32'],
    ['minor', 'u32'],
    ['gid', 'u32'],
  ],
  [MsgType.Rmknod]: [qid],
  [MsgType.Trename]: [
    ['fid', 'u32'],
    ['dfid', 'u32'],
    ['name', 'str'],
  ],
  [MsgType.Rrename]: [],
  [MsgType.Treadlink]: [['fid', 'u32']],
  [MsgType.Rreadlink]: [['target', 'str']],
  [MsgType.Tgetattr]: [
    ['fid', 'u32'],
    ['requestMask', 'u64'],
  ],
  [MsgType.Rgetattr]: [
    ['valid', 'u64'],
    qid,
    ['mode', 'u32'],
    ['uid', 'u32'],
    ['gid', 'u32'],
    ['nlink', 'u64'],
    ['rdev', 'u64'],
    ['size', 'u64'],
    ['blksize', 'u64'],
    ['blocks', 'u64'],
    ['atimeSec', 'u64'],
    ['atimeNsec', 'u64'],
    ['mtimeSec', 'u64'],
    ['mtimeNsec', 'u64'],
    ['ctimeSec', 'u64'],
    ['ctimeNsec', 'u64'],
    ['btimeSec', 'u64'],
    ['btimeNsec', 'u64'],
    ['gen', 'u64'],
    ['dataVersion', 'u64'],
  ],
  [MsgType.Tsetattr]: [
    ['fid', 'u32'],
    ['valid', 'u32'],
    ['mode', 'u32'],
    ['uid', 'u32'],
    ['gid', 'u32'],
    ['size', 'u64'],
    ['atimeSec', 'u64'],
    ['atimeNsec', 'u64'],
    ['mtimeSec', 'u64'],
    ['mtimeNsec', 'u64'],
  ],
  [MsgType.Rsetattr]: [],
  [MsgType.Txattrwalk]: [
    ['fid', 'u32'],
    ['newfid', 'u32'],
    ['name', 'str'],
  ],
  [MsgType.Rxattrwalk]: [['size', 'u64']],
  [MsgType.Txattrcreate]: [
    ['fid', 'u32'],
    ['name', 'str'],
    ['attrSize', 'u64'],
    ['flags', 'u32'],
  ],
  [MsgType.Rxattrcreate]: [],
  [MsgType.Treaddir]: [
    ['fid', 'u32'],
    ['offset', 'u64'],
    ['count', 'u32'],
  ],
  [MsgType.Rreaddir]: [['data', 'data']],
  [MsgType.Tfsync]: [
    ['fid', 'u32'],
    ['datasync', 'u32'],
  ],
  [MsgType.Rfsync]: [],
  [MsgType.Tlock]: [
    ['fid', 'u32'],
    ['lockType', 'u8'],
    ['flags', 'u32'],
    ['start', 'u64'],
    ['length', 'u64'],
    ['procId', 'u32'],
    ['clientId', 'str'],
  ],
  [MsgType.Rlock]: [['status', 'u8']],
  [MsgType.Tgetlock]: [
    ['fid', 'u32'],
    ['lockType', 'u8'],
    ['start', 'u64'],
    ['length', 'u64'],
    ['procId', 'u32'],
    ['clientId', 'str'],
  ],
  [MsgType.Rgetlock]: [
    ['lockType', 'u8'],
    ['start', 'u64'],
    ['length', 'u64'],
    ['procId', 'u32'],
    ['clientId', 'str'],
  ],
  [MsgType.Tlink]: [
    ['dfid', 'u32'],
    ['fid', 'u32'],
    ['name', 'str'],
  ],
  [MsgType.Rlink]: [],
  [MsgType.Tmkdir]: [
    ['dfid', 'u32'],
    ['name', 'str'],
    ['mode', 'u32'],
    ['gid', 'u32'],
  ],
  [MsgType.Rmkdir]: [qid],
  [MsgType.Trenameat]: [
    ['olddirfid', 'u32'],
    ['oldname', 'str'],
    ['newdirfid', 'u32'],
    ['newname', 'str'],
  ],
  [MsgType.Rrenameat]: [],
  [MsgType.Tunlinkat]: [
    ['dirfid', 'u32'],
    ['name', 'str'],
    ['flags', 'u32'],
  ],
  [MsgType.Runlinkat]: [],
  [MsgType.Tversion]: [
    ['msize', 'u32'],
    ['version', 'str'],
  ],
  [MsgType.Rversion]: [
    ['msize', 'u32'],
    ['version', 'str'],
  ],
  [MsgType.Tauth]: [
    ['afid', 'u32'],
    ['uname', 'str'],
    ['aname', 'str'],
    ['nUname', 'u32'],
  ],
  [MsgType.Rauth]: [['aqid', 'qid']],
  [MsgType.Tattach]: [
    ['fid', 'u32'],
    ['afid', 'u32'],
    ['uname', 'str'],
    ['aname', 'str'],
    ['nUname', 'u32'],
  ],
  [MsgType.Rattach]: [qid],
  [MsgType.Tflush]: [['oldtag', 'u16']],
  [MsgType.Rflush]: [],
  [MsgType.Twalk]: [
    ['fid', 'u32'],
    ['newfid', 'u32'],
    ['names', 'strs'],
  ],
  [MsgType.Rwalk]: [['qids', 'qids']],
  [MsgType.Tread]: [
    ['fid', 'u32'],
    ['offset', 'u64'],
    ['count', 'u32'],
  ],
  [MsgType.Rread]: [['data', 'data']],
  [MsgType.Twrite]: [
    ['fid', 'u32'],
    ['offset', 'u64'],
    ['data', 'data'],
  ],
  [MsgType.Rwrite]: [['count', 'u32']],
  [MsgType.Tclunk]: [['fid', 'u32']],
  [MsgType.Rclunk]: [],
  [MsgType.Tremove]: [['fid', 'u32']],
  [MsgType.Rremove]: [],
};

/** A frame whose body does not match its type's layout (too short, bad counts). */
export class DecodeError extends Error {
  override name = 'DecodeError';
}

/** Decoded header plus body fields; `type` selects the body shape. */
export type Decoded<M extends AnyMessage = AnyMessage> = M & { tag: number };

// ---- little-endian access without bounds checks (callers check sizes first) ----

export function r16(b: Buffer, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}

export function r32(b: Buffer, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;
}

export function w16(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
}

export function w32(b: Buffer, o: number, v: number): void {
  b[o] = v;
  b[o + 1] = v >>> 8;
  b[o + 2] = v >>> 16;
  b[o + 3] = v >>> 24;
}

/** A u64 from a safe non-negative integer. */
export function w64n(b: Buffer, o: number, v: number): void {
  w32(b, o, v % 0x100000000);
  w32(b, o + 4, Math.floor(v / 0x100000000));
}

/** Copies 8 bytes (a u64 field, whatever its value) from src to dst. */
export function copy8(dst: Buffer, d: number, src: Buffer, s: number): void {
  dst[d] = src[s]!;
  dst[d + 1] = src[s + 1]!;
  dst[d + 2] = src[s + 2]!;
  dst[d + 3] = src[s + 3]!;
  dst[d + 4] = src[s + 4]!;
  dst[d + 5] = src[s + 5]!;
  dst[d + 6] = src[s + 6]!;
  dst[d + 7] = src[s + 7]!;
}

function truncated(type: number): never {
  throw new DecodeError(`message type ${type} truncated`);
}

/** A string field at `o` (len[2] bytes); returns its end offset through `strEnd`. */
let strEnd = 0;
function readStrAt(b: Buffer, o: number, end: number, type: number): string {
  if (o + 2 > end) truncated(type);
  const len = r16(b, o);
  const s = o + 2;
  if (s + len > end) truncated(type);
  strEnd = s + len;
  return b.toString('utf8', s, s + len);
}

/**
 * Decodes one whole frame (size[4] included). Payload buffers (Twrite data, Rread data) are views into `frame`,
 * not copies. Throws DecodeError for bodies that are too short; unknown types throw as well, but callers can
 * read the tag from bytes 5..6 to answer them.
 */
export function decode(frame: Buffer): Decoded {
  return decodeAt(frame, 0, frame.length);
}

/**
 * decode() of the frame at [off, off + size) of `buf`. The messages the Linux client sends most (walk, getattr,
 * clunk, read, write, lopen, readdir) are decoded by hand; the rest through their layout.
 */
export function decodeAt(buf: Buffer, off: number, size: number): Decoded {
  if (size < HEADER_SIZE) throw new DecodeError('frame shorter than header');
  const type = buf[off + 4]!;
  const tag = r16(buf, off + 5);
  const o = off + HEADER_SIZE;
  const end = off + size;
  switch (type) {
    case MsgType.Tgetattr:
      if (o + 12 > end) truncated(type);
      return { type, tag, fid: r32(buf, o), requestMask: buf.readBigUInt64LE(o + 4) } as Decoded;
    case MsgType.Tclunk:
      if (o + 4 > end) truncated(type);
      return { type, tag, fid: r32(buf, o) } as Decoded;
    case MsgType.Tread:
    case MsgType.Treaddir:
      if (o + 16 > end) truncated(type);
      return { type, tag, fid: r32(buf, o), offset: buf.readBigUInt64LE(o + 4), count: r32(buf, o + 12) } as Decoded;
    case MsgType.Tlopen:
      if (o + 8 > end) truncated(type);
      return { type, tag, fid: r32(buf, o), flags: r32(buf, o + 4) } as Decoded;
    case MsgType.Twrite: {
      if (o + 16 > end) truncated(type);
      const n = r32(buf, o + 12);
      if (o + 16 + n > end) truncated(type);
      return {
        type,
        tag,
        fid: r32(buf, o),
        offset: buf.readBigUInt64LE(o + 4),
        data: buf.subarray(o + 16, o + 16 + n),
      } as Decoded;
    }
    case MsgType.Twalk: {
      if (o + 10 > end) truncated(type);
      const n = r16(buf, o + 8);
      // The count is bounded by the frame itself (each string needs >= 2 bytes); MAXWELEM is checked by walk.
      if (n * 2 > end - (o + 10)) throw new DecodeError('walk name count exceeds frame');
      const names: string[] = new Array<string>(n);
      let p = o + 10;
      for (let i = 0; i < n; i++) {
        names[i] = readStrAt(buf, p, end, type);
        p = strEnd;
      }
      return { type, tag, fid: r32(buf, o), newfid: r32(buf, o + 4), names } as Decoded;
    }
  }
  return decodeByLayout(buf, type, tag, o, end);
}

function readQidAt(b: Buffer, o: number, end: number, type: number): Qid {
  if (o + 13 > end) truncated(type);
  return { type: b[o]!, version: r32(b, o + 1), path: b.readBigUInt64LE(o + 5) };
}

function decodeByLayout(frame: Buffer, type: number, tag: number, start: number, end: number): Decoded {
  const layout = layouts[type];
  if (layout === undefined) throw new DecodeError(`unknown message type ${type}`);
  const msg: Record<string, unknown> = { type, tag };
  let off = start;
  for (const [name, kind] of layout) {
    switch (kind) {
      case 'u8':
        if (off + 1 > end) truncated(type);
        msg[name] = frame[off];
        off += 1;
        break;
      case 'u16':
        if (off + 2 > end) truncated(type);
        msg[name] = r16(frame, off);
        off += 2;
        break;
      case 'u32':
        if (off + 4 > end) truncated(type);
        msg[name] = r32(frame, off);
        off += 4;
        break;
      case 'u64':
        if (off + 8 > end) truncated(type);
        msg[name] = frame.readBigUInt64LE(off);
        off += 8;
        break;
      case 'str':
        msg[name] = readStrAt(frame, off, end, type);
        off = strEnd;
        break;
      case 'qid':
        msg[name] = readQidAt(frame, off, end, type);
        off += 13;
        break;
      case 'strs': {
        if (off + 2 > end) truncated(type);
        const n = r16(frame, off);
        off += 2;
        if (n * 2 > end - off) throw new DecodeError('walk name count exceeds frame');
        const names: string[] = [];
        for (let i = 0; i < n; i++) {
          names.push(readStrAt(frame, off, end, type));
          off = strEnd;
        }
        msg[name] = names;
        break;
      }
      case 'qids': {
        if (off + 2 > end) truncated(type);
        const n = r16(frame, off);
        off += 2;
        if (off + n * 13 > end) truncated(type);
        const qids: Qid[] = [];
        for (let i = 0; i < n; i++) {
          qids.push(readQidAt(frame, off, end, type));
          off += 13;
        }
        msg[name] = qids;
        break;
      }
      case 'data': {
        if (off + 4 > end) truncated(type);
        const n = r32(frame, off);
        off += 4;
        if (off + n > end) truncated(type);
        msg[name] = frame.subarray(off, off + n);
        off += n;
        break;
      }
    }
  }
  return msg as unknown as Decoded;
}

function fieldSize(kind: FieldKind, value: unknown): number {
  switch (kind) {
    case 'u8':
      return 1;
    case 'u16':
      return 2;
    case 'u32':
      return 4;
    case 'u64':
      return 8;
    case 'str':
      return 2 + Buffer.byteLength(value as string, 'utf8');
    case 'qid':
      return 13;
    case 'strs':
      return (value as string[]).reduce((n, s) => n + 2 + Buffer.byteLength(s, 'utf8'), 2);
    case 'qids':
      return 2 + 13 * (value as Qid[]).length;
    case 'data':
      return 4 + (value as Buffer).length;
  }
}

/** Writes a qid at `off`; returns the offset after it. */
export function writeQid(buf: Buffer, off: number, q: Qid): number {
  buf[off] = q.type;
  w32(buf, off + 1, q.version >>> 0);
  buf.writeBigUInt64LE(BigInt.asUintN(64, q.path), off + 5);
  return off + 13;
}

/** Total encoded size of a message including the 7-byte header. */
export function encodedSize(msg: AnyMessage): number {
  const layout = layouts[msg.type];
  if (layout === undefined) throw new Error(`cannot encode message type ${msg.type}`);
  const fields = msg as unknown as Record<string, unknown>;
  let size = HEADER_SIZE;
  for (const [name, kind] of layout) size += fieldSize(kind, fields[name]);
  return size;
}

/** Encodes a message with its tag into a new exactly-sized buffer. */
export function encode(msg: AnyMessage, tag: number): Buffer {
  const size = encodedSize(msg);
  const buf = Buffer.allocUnsafe(size);
  encodeAt(buf, 0, msg, tag, size);
  return buf;
}

function writeStrAt(buf: Buffer, off: number, s: string): number {
  const len = buf.write(s, off + 2, 'utf8');
  w16(buf, off, len);
  return off + 2 + len;
}

/** Encodes a message of encodedSize `size` at `at` in `buf` (which has room); returns the end offset. */
export function encodeAt(buf: Buffer, at: number, msg: AnyMessage, tag: number, size: number): number {
  const layout = layouts[msg.type]!;
  const fields = msg as unknown as Record<string, unknown>;
  w32(buf, at, size);
  buf[at + 4] = msg.type;
  w16(buf, at + 5, tag);
  let off = at + HEADER_SIZE;
  for (const [name, kind] of layout) {
    const v = fields[name];
    switch (kind) {
      case 'u8':
        buf[off++] = v as number;
        break;
      case 'u16':
        w16(buf, off, v as number);
        off += 2;
        break;
      case 'u32':
        w32(buf, off, (v as number) >>> 0);
        off += 4;
        break;
      case 'u64':
        buf.writeBigUInt64LE(BigInt.asUintN(64, v as bigint), off);
        off += 8;
        break;
      case 'str':
        off = writeStrAt(buf, off, v as string);
        break;
      case 'qid':
        off = writeQid(buf, off, v as Qid);
        break;
      case 'strs':
        w16(buf, off, (v as string[]).length);
        off += 2;
        for (const s of v as string[]) off = writeStrAt(buf, off, s);
        break;
      case 'qids':
        w16(buf, off, (v as Qid[]).length);
        off += 2;
        for (const q of v as Qid[]) off = writeQid(buf, off, q);
        break;
      case 'data':
        w32(buf, off, (v as Buffer).length);
        (v as Buffer).copy(buf, off + 4);
        off += 4 + (v as Buffer).length;
        break;
    }
  }
  return off;
}

/** Bytes of an Rread/Rreaddir header: size[4] type[1] tag[2] count[4]. */
export const RDATA_HEADER = 11;

/**
 * Allocates an Rread frame with room for `capacity` payload bytes, so the file data can be read straight into
 * it at RDATA_HEADER (zero copy). Finish it with finishDataReply once the real count is known.
 */
export function allocDataReply(capacity: number): Buffer {
  return Buffer.allocUnsafe(RDATA_HEADER + capacity);
}

/** Fills the header of a buffer from allocDataReply and trims it to the `count` bytes actually produced. */
export function finishDataReply(buf: Buffer, type: number, tag: number, count: number): Buffer {
  const size = RDATA_HEADER + count;
  w32(buf, 0, size);
  buf[4] = type;
  w16(buf, 5, tag);
  w32(buf, 7, count);
  return size === buf.length ? buf : buf.subarray(0, size);
}
