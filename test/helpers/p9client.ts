// A small 9P2000.L client for tests and benchmarks: pipelined requests over any Duplex, one promise per tag.
// It uses the server's codec for encoding, which is itself checked against hand-written byte vectors.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { decode, encode, type Decoded } from '../../src/p9/codec.js';
import { errnoName } from '../../src/p9/errno.js';
import { FrameReader } from '../../src/p9/framer.js';
import { MsgType, NOFID, NONUNAME, NOTAG, type Qid, type RMessage, type TMessage } from '../../src/p9/messages.js';

export class P9ClientError extends Error {
  constructor(
    readonly ecode: number,
    readonly request: string,
  ) {
    super(`${request}: ${errnoName(ecode)}`);
  }
}

type Reply = Decoded<RMessage>;

export class P9Client {
  msize = 8192;
  /** Every reply in arrival order (flush ordering tests). */
  readonly replyLog: Array<{ tag: number; type: number }> = [];
  /** Replies whose tag this client was not waiting for (raw frames sent by fuzz tests, or a server bug). */
  readonly unexpectedReplies: Array<{ tag: number; type: number }> = [];
  closed = false;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextTag = 1;
  private nextFid = 1;
  private readonly reader = new FrameReader(
    () => 0xffffffff,
    (buf, off, size) => this.onFrame(buf.subarray(off, off + size)),
    () => this.stream.destroy(),
    () => false,
  );
  private readonly closeWaiters: Array<() => void> = [];

  constructor(readonly stream: Duplex) {
    stream.on('data', (chunk: Buffer) => this.reader.push(chunk));
    const onEnd = (): void => {
      if (this.closed) return;
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new Error('connection closed'));
      this.pending.clear();
      for (const w of this.closeWaiters) w();
    };
    stream.on('close', onEnd);
    stream.on('end', onEnd);
    stream.on('error', onEnd);
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<P9Client> {
    const sock = net.connect({ port, host, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    return new P9Client(sock);
  }

  /** Resolves when the server closes the connection. */
  waitClosed(): Promise<void> {
    return this.closed ? Promise.resolve() : new Promise((r) => this.closeWaiters.push(r));
  }

  allocFid(): number {
    return this.nextFid++;
  }

  allocTag(): number {
    let t = this.nextTag;
    while (this.pending.has(t) || t === NOTAG) t = (t + 1) & 0xffff;
    this.nextTag = (t + 1) & 0xffff;
    return t;
  }

  private onFrame(frame: Buffer): void {
    const reply = decode(frame) as Reply;
    this.replyLog.push({ tag: reply.tag, type: reply.type });
    const p = this.pending.get(reply.tag);
    if (p === undefined) {
      this.unexpectedReplies.push({ tag: reply.tag, type: reply.type });
      return;
    }
    this.pending.delete(reply.tag);
    p.resolve(reply);
  }

  /** Sends a request and resolves with the raw reply (Rlerror included). */
  send(msg: TMessage, tag = msg.type === MsgType.Tversion ? NOTAG : this.allocTag()): Promise<Reply> {
    return this.sendFrame(encode(msg, tag), tag);
  }

  /** Sends a pre-built frame registered under `tag`. */
  sendFrame(frame: Buffer, tag: number): Promise<Reply> {
    if (this.closed) return Promise.reject(new Error('connection closed'));
    const p = new Promise<Reply>((resolve, reject) => this.pending.set(tag, { resolve, reject }));
    this.stream.write(frame);
    return p;
  }

  writeRaw(bytes: Buffer): void {
    this.stream.write(bytes);
  }

  /** Sends and expects reply type T+1; Rlerror becomes a P9ClientError. */
  async rpc<T extends RMessage['type']>(msg: TMessage, _expect?: T): Promise<Extract<Reply, { type: T }>> {
    const r = await this.send(msg);
    if (r.type === MsgType.Rlerror) throw new P9ClientError(r.ecode, nameOf(msg.type));
    if (r.type !== msg.type + 1) throw new Error(`unexpected reply type ${r.type} to ${msg.type}`);
    return r as Extract<Reply, { type: T }>;
  }

  async version(msize = 65536, version = '9P2000.L'): Promise<{ msize: number; version: string }> {
    const r = await this.rpc({ type: MsgType.Tversion, msize, version }, MsgType.Rversion);
    if (r.version === '9P2000.L') this.msize = r.msize;
    return r;
  }

  async attach(aname = '', fid = this.allocFid(), nUname = NONUNAME): Promise<{ fid: number; qid: Qid }> {
    const r = await this.rpc(
      { type: MsgType.Tattach, fid, afid: NOFID, uname: 'root', aname, nUname },
      MsgType.Rattach,
    );
    return { fid, qid: r.qid };
  }

  /** Walks from `fid`; returns the new fid (allocated) and the qids. Throws on a short walk. */
  async walk(fid: number, names: string[], newfid = this.allocFid()): Promise<{ fid: number; qids: Qid[] }> {
    const r = await this.rpc({ type: MsgType.Twalk, fid, newfid, names }, MsgType.Rwalk);
    if (r.qids.length !== names.length) throw new P9ClientError(2, `walk (short: ${r.qids.length}/${names.length})`);
    return { fid: newfid, qids: r.qids };
  }

  async clunk(fid: number): Promise<void> {
    await this.rpc({ type: MsgType.Tclunk, fid }, MsgType.Rclunk);
  }

  async lopen(fid: number, flags: number): Promise<{ qid: Qid; iounit: number }> {
    return this.rpc({ type: MsgType.Tlopen, fid, flags }, MsgType.Rlopen);
  }

  async lcreate(
    fid: number,
    name: string,
    flags: number,
    mode = 0o644,
    gid = 0,
  ): Promise<{ qid: Qid; iounit: number }> {
    return this.rpc({ type: MsgType.Tlcreate, fid, name, flags, mode, gid }, MsgType.Rlcreate);
  }

  async read(fid: number, offset: number | bigint, count: number): Promise<Buffer> {
    const r = await this.rpc({ type: MsgType.Tread, fid, offset: BigInt(offset), count }, MsgType.Rread);
    return r.data;
  }

  async write(fid: number, offset: number | bigint, data: Buffer): Promise<number> {
    const r = await this.rpc({ type: MsgType.Twrite, fid, offset: BigInt(offset), data }, MsgType.Rwrite);
    return r.count;
  }

  async getattr(fid: number, requestMask = 0x3fffn): Promise<Extract<Reply, { type: 25 }>> {
    return this.rpc({ type: MsgType.Tgetattr, fid, requestMask }, MsgType.Rgetattr);
  }

  async mkdir(dfid: number, name: string, mode = 0o755, gid = 0): Promise<Qid> {
    return (await this.rpc({ type: MsgType.Tmkdir, dfid, name, mode, gid }, MsgType.Rmkdir)).qid;
  }

  /** Tsetattr with only the fields given (valid bits derived from them; size as a number or bigint). */
  async setattr(fid: number, a: { mode?: number; uid?: number; gid?: number; size?: number | bigint }): Promise<void> {
    const valid =
      (a.mode !== undefined ? 0x1 : 0) |
      (a.uid !== undefined ? 0x2 : 0) |
      (a.gid !== undefined ? 0x4 : 0) |
      (a.size !== undefined ? 0x8 : 0);
    await this.rpc(
      {
        type: MsgType.Tsetattr,
        fid,
        valid,
        mode: a.mode ?? 0,
        uid: a.uid ?? 0,
        gid: a.gid ?? 0,
        size: BigInt(a.size ?? 0),
        atimeSec: 0n,
        atimeNsec: 0n,
        mtimeSec: 0n,
        mtimeNsec: 0n,
      },
      MsgType.Rsetattr,
    );
  }

  async mknod(dfid: number, name: string, mode: number, major = 0, minor = 0, gid = 0): Promise<Qid> {
    return (await this.rpc({ type: MsgType.Tmknod, dfid, name, mode, major, minor, gid }, MsgType.Rmknod)).qid;
  }

  /** Sets an extended attribute of the file `fid` names (through a clone: Txattrcreate, Twrite, Tclunk). */
  async xattrSet(fid: number, name: string, value: Buffer, flags = 0): Promise<void> {
    const { fid: x } = await this.walk(fid, []);
    await this.rpc(
      { type: MsgType.Txattrcreate, fid: x, name, attrSize: BigInt(value.length), flags },
      MsgType.Rxattrcreate,
    );
    if (value.length > 0) await this.write(x, 0, value);
    await this.clunk(x);
  }

  /** Reads an extended attribute (name "" lists them) of the file `fid` names. */
  async xattrGet(fid: number, name: string): Promise<Buffer> {
    const x = this.allocFid();
    const r = await this.rpc({ type: MsgType.Txattrwalk, fid, newfid: x, name }, MsgType.Rxattrwalk);
    try {
      const parts: Buffer[] = [];
      for (let off = 0; off < Number(r.size);) {
        const data = await this.read(x, off, Math.max(1, Number(r.size) - off));
        if (data.length === 0) break;
        parts.push(Buffer.from(data));
        off += data.length;
      }
      return Buffer.concat(parts);
    } finally {
      await this.clunk(x);
    }
  }

  async unlinkat(dirfid: number, name: string, flags = 0): Promise<void> {
    await this.rpc({ type: MsgType.Tunlinkat, dirfid, name, flags }, MsgType.Runlinkat);
  }

  /** Reads a whole directory through Treaddir with `count`-byte replies. */
  async readdirAll(
    fid: number,
    count = 8192,
  ): Promise<Array<{ name: string; offset: bigint; type: number; qid: Qid }>> {
    const out: Array<{ name: string; offset: bigint; type: number; qid: Qid }> = [];
    let offset = 0n;
    for (;;) {
      const r = await this.rpc({ type: MsgType.Treaddir, fid, offset, count }, MsgType.Rreaddir);
      if (r.data.length === 0) return out;
      const entries = parseDirents(r.data);
      out.push(...entries);
      offset = entries[entries.length - 1]!.offset;
    }
  }

  /** Opens `path` (relative to the attach fid `root`) and reads it whole. */
  async readFile(root: number, path: string[]): Promise<Buffer> {
    const { fid } = await this.walk(root, path);
    try {
      const { iounit } = await this.lopen(fid, 0);
      const chunk = iounit || this.msize - 24;
      const parts: Buffer[] = [];
      for (let off = 0; ;) {
        const data = await this.read(fid, off, chunk);
        if (data.length === 0) break;
        parts.push(Buffer.from(data));
        off += data.length;
      }
      return Buffer.concat(parts);
    } finally {
      await this.clunk(fid);
    }
  }

  close(): void {
    this.stream.destroy();
  }
}

export function parseDirents(data: Buffer): Array<{ name: string; offset: bigint; type: number; qid: Qid }> {
  const out: Array<{ name: string; offset: bigint; type: number; qid: Qid }> = [];
  for (let off = 0; off < data.length;) {
    const qid = { type: data[off]!, version: data.readUInt32LE(off + 1), path: data.readBigUInt64LE(off + 5) };
    const offset = data.readBigUInt64LE(off + 13);
    const type = data[off + 21]!;
    const len = data.readUInt16LE(off + 22);
    const name = data.toString('utf8', off + 24, off + 24 + len);
    out.push({ name, offset, type, qid });
    off += 24 + len;
  }
  return out;
}

const typeNames = new Map<number, string>(Object.entries(MsgType).map(([k, v]) => [v, k]));
function nameOf(type: number): string {
  return typeNames.get(type) ?? `type ${type}`;
}
