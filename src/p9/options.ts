// Per-connection bounds of the 9P server and their defaults (see README notes in server.ts for the why).

import { IOHDRSZ } from './messages.js';

export const MIN_MSIZE = 4096;
/** 1 MiB of payload plus the I/O header: the Linux fd/tcp/unix transports cap msize at 1 MiB. */
export const MAX_MSIZE = 1024 * 1024 + IOHDRSZ;

export interface SessionLimits {
  /** Largest msize offered in Rversion (clamped to [MIN_MSIZE, MAX_MSIZE]). */
  msize: number;
  /** Fids per connection; more answers ENFILE. */
  maxFids: number;
  /** Host fds per connection kept open by the LRU (unlinked-but-open files are pinned on top). */
  maxHostFds: number;
  /** Requests being processed at once; at the cap the server stops reading the socket. */
  maxOutstanding: number;
  /** Blocking Tlock requests parked per connection (beyond: answered BLOCKED). */
  maxParkedLocks: number;
  /** Fids with a pending Txattrcreate per connection (beyond: ENOSPC). */
  maxPendingXattrs: number;
  /** Directory entries kept per open directory snapshot window. */
  maxDirEntries: number;
  /** Byte-range locks held per connection (beyond: Rlock ERROR, ENOLCK in the guest). */
  maxLocks: number;
  /** Reply bytes queued on the socket before the server stops reading requests. */
  maxQueuedReplyBytes: number;
}

/**
 * maxFids 65536: the Linux client keeps one fid per cached dentry, so walking a large tree (a node_modules
 * directory, a git checkout) pins tens of thousands. A fid without an open host fd measured 645 bytes of heap
 * (50,000 walked fids), so the bound costs ~40 MiB per connection at worst, while host fds stay bounded by
 * maxHostFds.
 */
export const defaultLimits: SessionLimits = {
  msize: MAX_MSIZE,
  maxFids: 65536,
  maxHostFds: 1024,
  maxOutstanding: 256,
  maxParkedLocks: 1024,
  maxPendingXattrs: 64,
  maxDirEntries: 65536,
  maxLocks: 65536,
  maxQueuedReplyBytes: 8 * 1024 * 1024,
};

export function clampMsize(n: number): number {
  return Math.max(MIN_MSIZE, Math.min(MAX_MSIZE, Math.floor(n)));
}
