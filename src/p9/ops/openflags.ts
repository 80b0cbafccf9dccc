// Tlopen/Tlcreate flags -> host open(2) flags, flag by flag (never passing the number through).

import { DotlOpenFlag as D } from '../messages.js';
import { O } from '../../util/syscalls.js';

export interface HostOpen {
  flags: number;
  /** NOATIME is best effort: retried without it when the host refuses (EPERM for files we do not own). */
  noatime: boolean;
  writable: boolean;
}

/**
 * CREAT is stripped (lopen never creates; lcreate adds it itself), O_DIRECT is stripped (QEMU does the same;
 * diod's EINVAL breaks guests), NOCTTY/FASYNC/CLOEXEC/LARGEFILE/NONBLOCK have no meaning for the server's fd.
 * EXCL only matters on lcreate.
 */
export function toHostOpenFlags(dotl: number): HostOpen {
  const acc = dotl & 3;
  let flags = acc === D.WRONLY ? O.WRONLY : acc === D.RDWR ? O.RDWR : O.RDONLY;
  if (dotl & D.TRUNC) flags |= O.TRUNC;
  if (dotl & D.APPEND) flags |= O.APPEND;
  if (dotl & D.EXCL) flags |= O.EXCL;
  if (dotl & D.DIRECTORY) flags |= O.DIRECTORY;
  if ((dotl & D.SYNC) === D.SYNC) flags |= O.SYNC;
  else if (dotl & D.DSYNC) flags |= O.DSYNC;
  return {
    flags,
    noatime: (dotl & D.NOATIME) !== 0,
    writable: acc === D.WRONLY || acc === D.RDWR,
  };
}

/** Flags to reopen an already-open file after LRU eviction: no truncation or exclusive creation again. */
export function reopenFlags(flags: number): number {
  return flags & ~(O.TRUNC | O.EXCL | O.CREAT);
}
