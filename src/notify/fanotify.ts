// fanotify through koffi (Node has no binding): a notification group that reports directory entry events with
// the directory's file handle and the entry's name (FAN_REPORT_DFID_NAME), renames as one event with both ends
// (FAN_RENAME, Linux 5.17), and the pid of the process that caused each event. The pid is why fanotify rather
// than inotify: the share watcher drops events caused by the shim itself (its 9P server writing for the guest)
// exactly, with no timing window and no hook in the 9P server.
//
// Needs CAP_SYS_ADMIN (the shim runs as root). The fd is read event-driven: libuv's pipe handle opened on it (a
// fanotify fd is pollable and a read returns whole events), so an idle watcher costs no CPU; where that
// internal binding is missing, a non-blocking read every `pollMs` (measured here: ~120 µs of CPU per wake-up,
// 0.5% of a core at 25 ms, which is why polling is only the fallback).

import { createRequire } from 'node:module';
import net from 'node:net';
import { SyscallError } from '../util/syscalls.js';

const require = createRequire(import.meta.url);

export const FAN = {
  MODIFY: 0x2,
  ATTRIB: 0x4,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  Q_OVERFLOW: 0x4000,
  EVENT_ON_CHILD: 0x0800_0000,
  RENAME: 0x1000_0000,
  ONDIR: 0x4000_0000,
} as const;

const FAN_CLOEXEC = 0x1;
const FAN_NONBLOCK = 0x2;
const FAN_REPORT_FID = 0x200;
const FAN_REPORT_DFID_NAME = 0xc00;
const FAN_MARK_ADD = 0x1;
const FAN_MARK_REMOVE = 0x2;
const FAN_MARK_DONT_FOLLOW = 0x4;
const FAN_MARK_ONLYDIR = 0x8;
const O_RDONLY = 0;
const AT_EMPTY_PATH = 0x1000;
const MAX_HANDLE_SZ = 128;

const INFO_FID = 1;
const INFO_DFID_NAME = 2;
const INFO_DFID = 3;
const INFO_OLD_DFID_NAME = 10;
const INFO_NEW_DFID_NAME = 12;

/** What a watched directory reports: entry events, changes of its entries, and itself going away. */
export const DIR_MASK =
  FAN.CREATE |
  FAN.DELETE |
  FAN.RENAME |
  FAN.MODIFY |
  FAN.ATTRIB |
  FAN.DELETE_SELF |
  FAN.MOVE_SELF |
  FAN.ONDIR |
  FAN.EVENT_ON_CHILD;

/** One event: `dir`/`name` name the entry (for FAN_RENAME the old end; `newDir`/`newName` the new one). */
export interface FanEvent {
  mask: number;
  pid: number;
  /** Handle key of the directory holding the entry, and the entry's name ('.' or '' for the object itself). */
  dir?: string;
  name?: string;
  newDir?: string;
  newName?: string;
  /** Handle key of the object itself (FAN_REPORT_FID). */
  obj?: string;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
interface Lib {
  init: Fn;
  mark: Fn;
  read: Fn;
  close: Fn;
  nameToHandle: Fn;
  fstatfs: Fn;
  errno: () => number;
}
let lib: Lib | undefined;
function libc(): Lib {
  if (lib) return lib;
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  lib = {
    init: c.func('int fanotify_init(unsigned int, unsigned int)'),
    mark: c.func('int fanotify_mark(int, unsigned int, uint64_t, int, const char *)'),
    read: c.func('long read(int, void *, size_t)'),
    close: c.func('int close(int)'),
    nameToHandle: c.func('int name_to_handle_at(int, const char *, void *, _Out_ int *, int)'),
    fstatfs: c.func('int fstatfs(int, void *)'),
    errno: () => koffi.errno() as number,
  };
  return lib;
}

function fail(name: string): never {
  throw new SyscallError(name, libc().errno());
}

function handleKey(fsid: Buffer, type: number, bytes: Buffer): string {
  return `${fsid.toString('hex')}.${type}.${bytes.toString('hex')}`;
}

const handleBuf = Buffer.alloc(8 + MAX_HANDLE_SZ);
const statfsBuf = Buffer.alloc(128);
const F_FSID_OFFSET = 56; // struct statfs on 64-bit Linux: seven 8-byte words, then f_fsid

/** The key fanotify will report for the object `fd` is open on (fsid + file handle). */
export function handleKeyOf(fd: number): string {
  const l = libc();
  handleBuf.writeUInt32LE(MAX_HANDLE_SZ, 0);
  const mountId = [0];
  if (l.nameToHandle(fd, '', handleBuf, mountId, AT_EMPTY_PATH) !== 0) fail('name_to_handle_at');
  if (l.fstatfs(fd, statfsBuf) !== 0) fail('fstatfs');
  const n = handleBuf.readUInt32LE(0);
  return handleKey(
    statfsBuf.subarray(F_FSID_OFFSET, F_FSID_OFFSET + 8),
    handleBuf.readInt32LE(4),
    handleBuf.subarray(8, 8 + n),
  );
}

interface PipeBinding {
  Pipe: new (type: number) => { open(fd: number): number };
  constants: { SOCKET: number };
}

/** libuv's pipe handle, to read an fd of a kind net.Socket refuses (undefined if the binding is gone). */
function pipeBinding(): PipeBinding | undefined {
  try {
    const b = (process as unknown as { binding(n: string): PipeBinding }).binding('pipe_wrap');
    return typeof b?.Pipe === 'function' ? b : undefined;
  } catch {
    return undefined;
  }
}

export class Fanotify {
  private fd: number;
  private readonly buf = Buffer.alloc(64 * 1024);
  private socket: net.Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private paused = false;

  constructor() {
    const fd = Number(libc().init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME | FAN_REPORT_FID, O_RDONLY));
    if (fd < 0) fail('fanotify_init');
    this.fd = fd;
  }

  /** Marks the directory `fd` is open on (a real fd, not O_PATH) with `mask`. */
  markDir(fd: number, mask: number): void {
    if (Number(libc().mark(this.fd, FAN_MARK_ADD | FAN_MARK_ONLYDIR | FAN_MARK_DONT_FOLLOW, mask, fd, null)) !== 0)
      fail('fanotify_mark');
  }

  unmarkDir(fd: number, mask: number): void {
    libc().mark(this.fd, FAN_MARK_REMOVE | FAN_MARK_DONT_FOLLOW, mask, fd, null);
  }

  /** Reads what is queued (non-blocking): the events, or [] when nothing is. */
  read(): FanEvent[] {
    const n = Number(libc().read(this.fd, this.buf, this.buf.length));
    if (n < 0) {
      const e = libc().errno();
      if (e === 11 /* EAGAIN */) return [];
      fail('read fanotify');
    }
    return parseEvents(this.buf.subarray(0, n));
  }

  /** Delivers events as they come (event-driven; polling every `pollMs` without libuv's pipe handle). */
  start(onEvents: (events: FanEvent[]) => void, pollMs = 25): void {
    const b = pipeBinding();
    if (b) {
      const handle = new b.Pipe(b.constants.SOCKET);
      if (handle.open(this.fd) === 0) {
        const sock = new net.Socket({ handle, readable: true, writable: false } as net.SocketConstructorOpts);
        sock.on('data', (chunk: Buffer) => onEvents(parseEvents(chunk)));
        sock.on('error', () => undefined);
        sock.unref();
        this.socket = sock;
        return;
      }
    }
    const tick = (): void => {
      this.timer = undefined;
      if (this.fd < 0) return;
      for (let i = 0; i < 16 && !this.paused; i++) {
        const events = this.read();
        if (events.length === 0) break;
        onEvents(events);
      }
      this.timer = setTimeout(tick, pollMs);
      this.timer.unref();
    };
    tick();
  }

  /** Stops reading (the kernel queues events, up to its limit) until resume(). */
  pause(): void {
    this.paused = true;
    this.socket?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.socket?.resume();
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.socket)
      this.socket.destroy(); // the handle owns the fd
    else if (this.fd >= 0) libc().close(this.fd);
    this.socket = undefined;
    this.fd = -1;
  }
}

/** Parses a read(2) of a FAN_REPORT_DFID_NAME|FAN_REPORT_FID group (layouts: linux/fanotify.h). */
export function parseEvents(b: Buffer): FanEvent[] {
  const out: FanEvent[] = [];
  for (let off = 0; off + 24 <= b.length;) {
    const len = b.readUInt32LE(off);
    const metaLen = b.readUInt16LE(off + 6);
    if (len < 24 || off + len > b.length) break;
    const ev: FanEvent = { mask: Number(b.readBigUInt64LE(off + 8) & 0xffff_ffffn), pid: b.readInt32LE(off + 20) };
    for (let i = off + metaLen; i + 4 <= off + len;) {
      const type = b[i]!;
      const ilen = b.readUInt16LE(i + 2);
      if (ilen < 4 || i + ilen > off + len) break;
      if (ilen >= 20) {
        const fsid = b.subarray(i + 4, i + 12);
        const hbytes = b.readUInt32LE(i + 12);
        const htype = b.readInt32LE(i + 16);
        const hEnd = Math.min(i + 20 + hbytes, i + ilen);
        const key = handleKey(fsid, htype, b.subarray(i + 20, hEnd));
        const rest = b.subarray(hEnd, i + ilen);
        const nul = rest.indexOf(0);
        const name = rest.toString('utf8', 0, nul < 0 ? rest.length : nul);
        if (type === INFO_FID) ev.obj = key;
        else if (type === INFO_DFID_NAME || type === INFO_OLD_DFID_NAME) {
          ev.dir = key;
          ev.name = name;
        } else if (type === INFO_DFID) {
          ev.dir = key;
          ev.name = '.';
        } else if (type === INFO_NEW_DFID_NAME) {
          ev.newDir = key;
          ev.newName = name;
        }
      }
      i += ilen;
    }
    out.push(ev);
    off += len;
  }
  return out;
}
