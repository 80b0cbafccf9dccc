// 9P2000.L message types and the TypeScript shape of every message body (layouts: reference 9p2000L.md §1.3).

export const NOTAG = 0xffff;
export const NOFID = 0xffffffff;
export const NONUNAME = 0xffffffff;
export const MAXWELEM = 16;
/** Header bytes of Rread/Rreaddir before the payload: size[4] type[1] tag[2] count[4]. */
export const IOHDRSZ = 24;
export const HEADER_SIZE = 7;

export const MsgType = {
  Tlerror: 6,
  Rlerror: 7,
  Tstatfs: 8,
  Rstatfs: 9,
  Tlopen: 12,
  Rlopen: 13,
  Tlcreate: 14,
  Rlcreate: 15,
  Tsymlink: 16,
  Rsymlink: 17,
  Tmknod: 18,
  Rmknod: 19,
  Trename: 20,
  Rrename: 21,
  Treadlink: 22,
  Rreadlink: 23,
  Tgetattr: 24,
  Rgetattr: 25,
  Tsetattr: 26,
  Rsetattr: 27,
  Txattrwalk: 30,
  Rxattrwalk: 31,
  Txattrcreate: 32,
  Rxattrcreate: 33,
  Treaddir: 40,
  Rreaddir: 41,
  Tfsync: 50,
  Rfsync: 51,
  Tlock: 52,
  Rlock: 53,
  Tgetlock: 54,
  Rgetlock: 55,
  Tlink: 70,
  Rlink: 71,
  Tmkdir: 72,
  Rmkdir: 73,
  Trenameat: 74,
  Rrenameat: 75,
  Tunlinkat: 76,
  Runlinkat: 77,
  Tversion: 100,
  Rversion: 101,
  Tauth: 102,
  Rauth: 103,
  Tattach: 104,
  Rattach: 105,
  Tflush: 108,
  Rflush: 109,
  Twalk: 110,
  Rwalk: 111,
  Tread: 116,
  Rread: 117,
  Twrite: 118,
  Rwrite: 119,
  Tclunk: 120,
  Rclunk: 121,
  Tremove: 122,
  Rremove: 123,
} as const;

export const QidType = {
  DIR: 0x80,
  APPEND: 0x40,
  EXCL: 0x20,
  MOUNT: 0x10,
  AUTH: 0x08,
  TMP: 0x04,
  SYMLINK: 0x02,
  LINK: 0x01,
  FILE: 0x00,
} as const;

export interface Qid {
  type: number;
  version: number;
  path: bigint;
}

/** Tgetattr request mask / Rgetattr valid bits. */
export const GetattrMask = {
  MODE: 0x1n,
  NLINK: 0x2n,
  UID: 0x4n,
  GID: 0x8n,
  RDEV: 0x10n,
  ATIME: 0x20n,
  MTIME: 0x40n,
  CTIME: 0x80n,
  INO: 0x100n,
  SIZE: 0x200n,
  BLOCKS: 0x400n,
  BTIME: 0x800n,
  GEN: 0x1000n,
  DATA_VERSION: 0x2000n,
  BASIC: 0x7ffn,
  ALL: 0x3fffn,
} as const;

/** Tsetattr valid bits. */
export const SetattrValid = {
  MODE: 0x1,
  UID: 0x2,
  GID: 0x4,
  SIZE: 0x8,
  ATIME: 0x10,
  MTIME: 0x20,
  CTIME: 0x40,
  ATIME_SET: 0x80,
  MTIME_SET: 0x100,
} as const;

/** Tlopen/Tlcreate flags as the guest sends them (generic Linux octal values, §2.6). */
export const DotlOpenFlag = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  NOACCESS: 3,
  CREATE: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DSYNC: 0o10000,
  FASYNC: 0o20000,
  DIRECT: 0o40000,
  LARGEFILE: 0o100000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  NOATIME: 0o1000000,
  CLOEXEC: 0o2000000,
  SYNC: 0o4000000,
} as const;

export const LockType = { RDLCK: 0, WRLCK: 1, UNLCK: 2 } as const;
export const LockFlag = { BLOCK: 1, RECLAIM: 2 } as const;
export const LockStatus = { SUCCESS: 0, BLOCKED: 1, ERROR: 2, GRACE: 3 } as const;

// ---- request bodies ----
export interface Tversion {
  type: 100;
  msize: number;
  version: string;
}
export interface Tauth {
  type: 102;
  afid: number;
  uname: string;
  aname: string;
  nUname: number;
}
export interface Tattach {
  type: 104;
  fid: number;
  afid: number;
  uname: string;
  aname: string;
  nUname: number;
}
export interface Tflush {
  type: 108;
  oldtag: number;
}
export interface Twalk {
  type: 110;
  fid: number;
  newfid: number;
  names: string[];
}
export interface Tread {
  type: 116;
  fid: number;
  offset: bigint;
  count: number;
}
export interface Twrite {
  type: 118;
  fid: number;
  offset: bigint;
  data: Buffer;
}
export interface Tclunk {
  type: 120;
  fid: number;
}
export interface Tremove {
  type: 122;
  fid: number;
}
export interface Tstatfs {
  type: 8;
  fid: number;
}
export interface Tlopen {
  type: 12;
  fid: number;
  flags: number;
}
export interface Tlcreate {
  type: 14;
  fid: number;
  name: string;
  flags: number;
  mode: number;
  gid: number;
}
export interface Tsymlink {
  type: 16;
  fid: number;
  name: string;
  symtgt: string;
  gid: number;
}
export interface Tmknod {
  type: 18;
  dfid: number;
  name: string;
  mode: number;
  major: number;
  minor: number;
  gid: number;
}
export interface Trename {
  type: 20;
  fid: number;
  dfid: number;
  name: string;
}
export interface Treadlink {
  type: 22;
  fid: number;
}
export interface Tgetattr {
  type: 24;
  fid: number;
  requestMask: bigint;
}
export interface Tsetattr {
  type: 26;
  fid: number;
  valid: number;
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  atimeSec: bigint;
  atimeNsec: bigint;
  mtimeSec: bigint;
  mtimeNsec: bigint;
}
export interface Txattrwalk {
  type: 30;
  fid: number;
  newfid: number;
  name: string;
}
export interface Txattrcreate {
  type: 32;
  fid: number;
  name: string;
  attrSize: bigint;
  flags: number;
}
export interface Treaddir {
  type: 40;
  fid: number;
  offset: bigint;
  count: number;
}
export interface Tfsync {
  type: 50;
  fid: number;
  datasync: number;
}
export interface Tlock {
  type: 52;
  fid: number;
  lockType: number;
  flags: number;
  start: bigint;
  length: bigint;
  procId: number;
  clientId: string;
}
export interface Tgetlock {
  type: 54;
  fid: number;
  lockType: number;
  start: bigint;
  length: bigint;
  procId: number;
  clientId: string;
}
export interface Tlink {
  type: 70;
  dfid: number;
  fid: number;
  name: string;
}
export interface Tmkdir {
  type: 72;
  dfid: number;
  name: string;
  mode: number;
  gid: number;
}
export interface Trenameat {
  type: 74;
  olddirfid: number;
  oldname: string;
  newdirfid: number;
  newname: string;
}
export interface Tunlinkat {
  type: 76;
  dirfid: number;
  name: string;
  flags: number;
}

export type TMessage =
  | Tversion
  | Tauth
  | Tattach
  | Tflush
  | Twalk
  | Tread
  | Twrite
  | Tclunk
  | Tremove
  | Tstatfs
  | Tlopen
  | Tlcreate
  | Tsymlink
  | Tmknod
  | Trename
  | Treadlink
  | Tgetattr
  | Tsetattr
  | Txattrwalk
  | Txattrcreate
  | Treaddir
  | Tfsync
  | Tlock
  | Tgetlock
  | Tlink
  | Tmkdir
  | Trenameat
  | Tunlinkat;

// ---- reply bodies ----
export interface Rlerror {
  type: 7;
  ecode: number;
}
export interface Rversion {
  type: 101;
  msize: number;
  version: string;
}
export interface Rauth {
  type: 103;
  aqid: Qid;
}
export interface Rattach {
  type: 105;
  qid: Qid;
}
export interface Rflush {
  type: 109;
}
export interface Rwalk {
  type: 111;
  qids: Qid[];
}
export interface Rread {
  type: 117;
  data: Buffer;
}
export interface Rwrite {
  type: 119;
  count: number;
}
export interface Rclunk {
  type: 121;
}
export interface Rremove {
  type: 123;
}
export interface Rstatfs {
  type: 9;
  fsType: number;
  bsize: number;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
  fsid: bigint;
  namelen: number;
}
export interface Rlopen {
  type: 13;
  qid: Qid;
  iounit: number;
}
export interface Rlcreate {
  type: 15;
  qid: Qid;
  iounit: number;
}
export interface Rsymlink {
  type: 17;
  qid: Qid;
}
export interface Rmknod {
  type: 19;
  qid: Qid;
}
export interface Rrename {
  type: 21;
}
export interface Rreadlink {
  type: 23;
  target: string;
}
export interface Rgetattr {
  type: 25;
  valid: bigint;
  qid: Qid;
  mode: number;
  uid: number;
  gid: number;
  nlink: bigint;
  rdev: bigint;
  size: bigint;
  blksize: bigint;
  blocks: bigint;
  atimeSec: bigint;
  atimeNsec: bigint;
  mtimeSec: bigint;
  mtimeNsec: bigint;
  ctimeSec: bigint;
  ctimeNsec: bigint;
  btimeSec: bigint;
  btimeNsec: bigint;
  gen: bigint;
  dataVersion: bigint;
}
export interface Rsetattr {
  type: 27;
}
export interface Rxattrwalk {
  type: 31;
  size: bigint;
}
export interface Rxattrcreate {
  type: 33;
}
export interface Rreaddir {
  type: 41;
  data: Buffer;
}
export interface Rfsync {
  type: 51;
}
export interface Rlock {
  type: 53;
  status: number;
}
export interface Rgetlock {
  type: 55;
  lockType: number;
  start: bigint;
  length: bigint;
  procId: number;
  clientId: string;
}
export interface Rlink {
  type: 71;
}
export interface Rmkdir {
  type: 73;
  qid: Qid;
}
export interface Rrenameat {
  type: 75;
}
export interface Runlinkat {
  type: 77;
}

export type RMessage =
  | Rlerror
  | Rversion
  | Rauth
  | Rattach
  | Rflush
  | Rwalk
  | Rread
  | Rwrite
  | Rclunk
  | Rremove
  | Rstatfs
  | Rlopen
  | Rlcreate
  | Rsymlink
  | Rmknod
  | Rrename
  | Rreadlink
  | Rgetattr
  | Rsetattr
  | Rxattrwalk
  | Rxattrcreate
  | Rreaddir
  | Rfsync
  | Rlock
  | Rgetlock
  | Rlink
  | Rmkdir
  | Rrenameat
  | Runlinkat;

export type AnyMessage = TMessage | RMessage;
