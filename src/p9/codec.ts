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

/**
 * Decodes one whole frame (size[4] included). Payload buffers (Twrite data, Rread data) are views into `frame`,
 * not copies. Throws DecodeError for bodies that are too short; unknown types throw as well, but callers can
 * read the tag from bytes 5..6 to answer them.
 */
export function decode(frame: Buffer): Decoded {
  if (frame.length < HEADER_SIZE) throw new DecodeError('frame shorter than header');
  const type = frame[4]!;
  const tag = frame.readUInt16LE(5);
  const layout = layouts[type];
  if (layout === undefined) throw new DecodeError(`unknown message type ${type}`);
  const msg: Record<string, unknown> = { type, tag };
  let off = HEADER_SIZE;
  const need = (n: number): void => {
    if (off + n > frame.length) throw new DecodeError(`message type ${type} truncated`);
  };
  const readStr = (): string => {
    need(2);
    const len = frame.readUInt16LE(off);
    off += 2;
    need(len);
    const s = frame.toString('utf8', off, off + len);
    off += len;
    return s;
  };
  const readQid = (): Qid => {
    need(13);
    const q = { type: frame[off]!, version: frame.readUInt32LE(off + 1), path: frame.readBigUInt64LE(off + 5) };
    off += 13;
    return q;
  };
  for (const [name, kind] of layout) {
    switch (kind) {
      case 'u8':
        need(1);
        msg[name] = frame[off];
        off += 1;
        break;
      case 'u16':
        need(2);
        msg[name] = frame.readUInt16LE(off);
        off += 2;
        break;
      case 'u32':
        need(4);
        msg[name] = frame.readUInt32LE(off);
        off += 4;
        break;
      case 'u64':
        need(8);
        msg[name] = frame.readBigUInt64LE(off);
        off += 8;
        break;
      case 'str':
        msg[name] = readStr();
        break;
      case 'qid':
        msg[name] = readQid();
        break;
      case 'strs': {
        need(2);
        const n = frame.readUInt16LE(off);
        off += 2;
        // The count is bounded by the frame itself (each string needs >= 2 bytes); MAXWELEM is checked by walk.
        if (n * 2 > frame.length - off) throw new DecodeError('walk name count exceeds frame');
        const names: string[] = [];
        for (let i = 0; i < n; i++) names.push(readStr());
        msg[name] = names;
        break;
      }
      case 'qids': {
        need(2);
        const n = frame.readUInt16LE(off);
        off += 2;
        need(n * 13);
        const qids: Qid[] = [];
        for (let i = 0; i < n; i++) qids.push(readQid());
        msg[name] = qids;
        break;
      }
      case 'data': {
        need(4);
        const n = frame.readUInt32LE(off);
        off += 4;
        need(n);
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

function writeQid(buf: Buffer, off: number, q: Qid): number {
  buf[off] = q.type;
  buf.writeUInt32LE(q.version >>> 0, off + 1);
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
  const layout = layouts[msg.type]!;
  const fields = msg as unknown as Record<string, unknown>;
  const size = encodedSize(msg);
  const buf = Buffer.allocUnsafe(size);
  buf.writeUInt32LE(size, 0);
  buf[4] = msg.type;
  buf.writeUInt16LE(tag, 5);
  let off = HEADER_SIZE;
  const writeStr = (s: string): void => {
    const len = buf.write(s, off + 2, 'utf8');
    buf.writeUInt16LE(len, off);
    off += 2 + len;
  };
  for (const [name, kind] of layout) {
    const v = fields[name];
    switch (kind) {
      case 'u8':
        buf[off++] = v as number;
        break;
      case 'u16':
        buf.writeUInt16LE(v as number, off);
        off += 2;
        break;
      case 'u32':
        buf.writeUInt32LE((v as number) >>> 0, off);
        off += 4;
        break;
      case 'u64':
        buf.writeBigUInt64LE(BigInt.asUintN(64, v as bigint), off);
        off += 8;
        break;
      case 'str':
        writeStr(v as string);
        break;
      case 'qid':
        off = writeQid(buf, off, v as Qid);
        break;
      case 'strs':
        buf.writeUInt16LE((v as string[]).length, off);
        off += 2;
        for (const s of v as string[]) writeStr(s);
        break;
      case 'qids':
        buf.writeUInt16LE((v as Qid[]).length, off);
        off += 2;
        for (const q of v as Qid[]) off = writeQid(buf, off, q);
        break;
      case 'data':
        buf.writeUInt32LE((v as Buffer).length, off);
        (v as Buffer).copy(buf, off + 4);
        off += 4 + (v as Buffer).length;
        break;
    }
  }
  return buf;
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
  buf.writeUInt32LE(size, 0);
  buf[4] = type;
  buf.writeUInt16LE(tag, 5);
  buf.writeUInt32LE(count, 7);
  return size === buf.length ? buf : buf.subarray(0, size);
}
