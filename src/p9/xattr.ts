// Extended attributes. Txattrwalk produces a read-only xattr fid holding the value (or the NUL-separated name
// list for name ""); Txattrcreate turns a fid into a pending write whose value is committed on Tclunk
// (lsetxattr, or lremovexattr when the announced size is 0). Host calls go through the parent directory's
// O_PATH fd under /proc/self/fd with the l* variants, so the final component is never followed and no other
// component is re-resolved by path.

import { P9Error, Errno } from './errno.js';
import {
  XATTR_CREATE,
  XATTR_REPLACE,
  lgetxattr,
  llistxattr,
  lremovexattr,
  lsetxattr,
  procFdPath,
} from '../util/syscalls.js';

/** Largest value or name list handled (Linux XATTR_SIZE_MAX; QEMU P9_XATTR_SIZE_MAX). */
export const XATTR_SIZE_MAX = 65536;

export type XattrState =
  { kind: 'read'; value: Buffer } | { kind: 'write'; name: string; flags: number; value: Buffer; written: number };

/** Path naming `name` inside the directory held by `dirFd`, for l*xattr calls ('.' for the directory itself). */
export function xattrPath(dirFd: number, name: string): string {
  return `${procFdPath(dirFd)}/${name}`;
}

function readSized(probe: () => number, fill: (buf: Buffer) => number): Buffer {
  // The value may change between the size probe and the read (ERANGE): retry a few times.
  for (let attempt = 0; attempt < 4; attempt++) {
    const size = probe();
    if (size > XATTR_SIZE_MAX) throw new P9Error(Errno.E2BIG);
    const buf = Buffer.alloc(size);
    try {
      const n = size === 0 ? 0 : fill(buf);
      return buf.subarray(0, n);
    } catch (err) {
      if ((err as { code?: string }).code !== 'ERANGE') throw err;
    }
  }
  throw new P9Error(Errno.ERANGE);
}

/** Value of attribute `attr`, or the name list when attr is "". */
export function readXattr(path: string, attr: string): Buffer {
  if (attr === '') {
    return readSized(
      () => llistxattr(path, null),
      (buf) => llistxattr(path, buf),
    );
  }
  return readSized(
    () => lgetxattr(path, attr, null),
    (buf) => lgetxattr(path, attr, buf),
  );
}

export function startXattrWrite(name: string, size: bigint, flags: number): XattrState {
  if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0) throw new P9Error(Errno.EINVAL, 'bad xattr flags');
  if (size > BigInt(XATTR_SIZE_MAX)) throw new P9Error(Errno.E2BIG);
  if (name === '' || name.includes('\0')) throw new P9Error(Errno.EINVAL);
  return { kind: 'write', name, flags, value: Buffer.alloc(Number(size)), written: 0 };
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
export function commitXattr(state: XattrState & { kind: 'write' }, path: string): void {
  if (state.written !== state.value.length) throw new P9Error(Errno.EINVAL, 'xattr size mismatch');
  if (state.value.length === 0) lremovexattr(path, state.name);
  else lsetxattr(path, state.name, state.value, state.flags);
}
