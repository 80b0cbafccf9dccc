// Path safety: every host path is resolved beneath the export's root directory fd, one component at a time
// in effect, never following a host symlink and never leaving the root. Fid paths are relative strings
// ('' for the root, 'a/b' otherwise) built only from names that passed validation, so `..` is handled
// lexically (clamped at the root) and the kernel re-checks confinement on every open (RESOLVE_BENEATH).

import { P9Error, Errno } from './errno.js';
import {
  O,
  RESOLVE_BENEATH,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  close,
  openat,
  openat2,
} from '../util/syscalls.js';

const NAME_MAX = 255;

/** A name from the wire is usable as one path component for lookup. Illegal names are ENOENT (QEMU). */
export function checkWalkName(name: string): void {
  if (name.length === 0 || name.includes('/') || name.includes('\0')) throw new P9Error(Errno.ENOENT);
  if (Buffer.byteLength(name) > NAME_MAX) throw new P9Error(Errno.ENAMETOOLONG);
}

/** A name the guest wants to create (or remove/rename): additionally `.` and `..` are refused. */
export function checkNewName(name: string): void {
  checkWalkName(name);
  if (name === '.' || name === '..') throw new P9Error(Errno.EEXIST);
}

export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

/** Lexical parent; the root is its own parent (`..` clamped at the export root). */
export function parentPath(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

const RESOLVE_SAFE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
/** openat2's path argument is bounded by PATH_MAX; deeper paths are walked component by component. */
const OPENAT2_PATH_MAX = 4000;

/**
 * Opens `path` (relative, validated components) beneath `rootFd` without following any symlink, including the
 * last component (O_NOFOLLOW: with O_PATH that yields a handle on the symlink itself). Uses openat2 with
 * RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS; on kernels without openat2, or for very deep paths,
 * walks O_PATH|O_NOFOLLOW|O_DIRECTORY dirfds one component at a time, which is equally confined because each
 * component is a plain name that is never a symlink.
 */
export function openBeneath(rootFd: number, path: string, flags: number): number {
  if (path === '') return openat(rootFd, '.', flags);
  if (path.length < OPENAT2_PATH_MAX) {
    const fd = openat2(rootFd, path, flags | O.NOFOLLOW | O.CLOEXEC, 0, RESOLVE_SAFE);
    if (fd !== undefined) return fd;
  }
  const parts = path.split('/');
  let dirFd = rootFd;
  try {
    for (let i = 0; i < parts.length - 1; i++) {
      const part = parts[i]!;
      if (part === '' || part === '.' || part === '..') throw new P9Error(Errno.EINVAL, 'unnormalised path');
      const next = openat(dirFd, part, O.PATH | O.NOFOLLOW | O.DIRECTORY);
      if (dirFd !== rootFd) close(dirFd);
      dirFd = next;
    }
    return openat(dirFd, parts[parts.length - 1]!, flags | O.NOFOLLOW);
  } finally {
    if (dirFd !== rootFd) close(dirFd);
  }
}
