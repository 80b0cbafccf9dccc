// Extended attribute fids. Txattrwalk produces a read-only xattr fid holding the value (or the NUL-separated
// name list for name ""); Txattrcreate turns a fid into a pending write whose value is committed on Tclunk
// (set, or remove when the announced size is 0). Values go through the export's MetadataStore, which maps
// privileged names (metadata-xattr.ts); the policy decides who may see and set them (security.ts).
//
// Every xattr fid's bytes (value + XATTR_FID_OVERHEAD) count against the connection's maxXattrBytes.

import { P9Error, Errno } from './errno.js';
import type { HostObject } from './metadata.js';
import { XATTR_SIZE_MAX } from './metadata-xattr.js';
import { XATTR_FID_OVERHEAD } from './options.js';
import type { SharePolicy } from './security.js';
import { XATTR_CREATE, XATTR_REPLACE } from '../util/syscalls.js';

export { XATTR_SIZE_MAX };

export type XattrState =
  | { kind: 'read'; value: Buffer; cost: number }
  | { kind: 'write'; name: string; flags: number; value: Buffer; written: number; cost: number };

export function readState(value: Buffer): XattrState {
  return { kind: 'read', value, cost: value.length + XATTR_FID_OVERHEAD };
}

export function startXattrWrite(name: string, size: bigint, flags: number): XattrState & { kind: 'write' } {
  if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0) throw new P9Error(Errno.EINVAL, 'bad xattr flags');
  if (size > BigInt(XATTR_SIZE_MAX)) throw new P9Error(Errno.E2BIG);
  if (name === '' || name.includes('\0')) throw new P9Error(Errno.EINVAL);
  const n = Number(size);
  return { kind: 'write', name, flags, value: Buffer.alloc(n), written: 0, cost: n + XATTR_FID_OVERHEAD };
}

/** Twrite on a pending-xattr fid: offsets are bounds-checked against the announced size. */
export function writeXattr(state: XattrState & { kind: 'write' }, offset: bigint, data: Buffer): number {
  const size = BigInt(state.value.length);
  if (offset > size || offset + BigInt(data.length) > size) throw new P9Error(Errno.EINVAL, 'xattr write out of range');
  data.copy(state.value, Number(offset));
  state.written += data.length;
  return data.length;
}

/** Tclunk of a pending-xattr fid: all announced bytes must have been written (EINVAL otherwise). */
export function commitXattr(state: XattrState & { kind: 'write' }, policy: SharePolicy, obj: HostObject): void {
  if (state.written !== state.value.length) throw new P9Error(Errno.EINVAL, 'xattr size mismatch');
  policy.checkXattrWrite(obj.st, state.name);
  if (state.value.length === 0) policy.store.removeXattr(obj, state.name, policy.xattrView);
  else policy.store.setXattr(obj, state.name, state.value, state.flags, policy.xattrView);
}
