// Dispatch table: request type -> handler. Tversion and Tflush are handled by the session itself.

import { MsgType, type TMessage } from '../messages.js';
import type { Inflight, Session } from '../session.js';
import { attach, auth } from './attach.js';
import { getattr, readlink, setattr, statfs } from './attr.js';
import { clunk } from './clunk.js';
import { link, mkdir, mknod, readdir, remove, rename, renameat, symlink, unlinkat } from './dir.js';
import { fsync, lcreate, lopen, read, write } from './io.js';
import { getlock, lock } from './lock-ops.js';
import type { OpResult } from './result.js';
import { withReplay } from './replay.js';
import { walk } from './walk.js';
import { xattrcreate, xattrwalk } from './xattr-ops.js';

export { REPLIED, SUPPRESS, type OpResult } from './result.js';

// Each handler receives the message of its own type; the table erases that to one signature. `req` is the
// request's Inflight record, given to Tlock only (the only request that can be parked or cancelled).
type Handler = (s: Session, msg: TMessage, req: Inflight | undefined) => OpResult | Promise<OpResult>;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const h = (fn: (s: Session, msg: any, req: any) => OpResult | Promise<OpResult>): Handler => fn;

const baseHandlers: Readonly<Record<number, Handler>> = {
  [MsgType.Tauth]: h(auth),
  [MsgType.Tattach]: h(attach),
  [MsgType.Twalk]: h(walk),
  [MsgType.Tlopen]: h(lopen),
  [MsgType.Tlcreate]: h(lcreate),
  [MsgType.Tread]: h(read),
  [MsgType.Twrite]: h(write),
  [MsgType.Tclunk]: h(clunk),
  [MsgType.Tremove]: h(remove),
  [MsgType.Tstatfs]: h(statfs),
  [MsgType.Tgetattr]: h(getattr),
  [MsgType.Tsetattr]: h(setattr),
  [MsgType.Treadlink]: h(readlink),
  [MsgType.Treaddir]: h(readdir),
  [MsgType.Tmkdir]: h(mkdir),
  [MsgType.Tmknod]: h(mknod),
  [MsgType.Tsymlink]: h(symlink),
  [MsgType.Tlink]: h(link),
  [MsgType.Trename]: h(rename),
  [MsgType.Trenameat]: h(renameat),
  [MsgType.Tunlinkat]: h(unlinkat),
  [MsgType.Tfsync]: h(fsync),
  [MsgType.Txattrwalk]: h(xattrwalk),
  [MsgType.Txattrcreate]: h(xattrcreate),
  [MsgType.Tlock]: h(lock),
  [MsgType.Tgetlock]: h(getlock),
};

/** Requests naming a replay fid are answered by ops/replay.ts (host changes replayed in the guest). */
export const handlers = withReplay(baseHandlers);
