// Bounds of the 9P server and their defaults. Every piece of state a connection can make the server hold is
// bounded in total; hitting a bound answers the request with an errno and the connection goes on.

import { IOHDRSZ } from './messages.js';

export const MIN_MSIZE = 4096;
/** 1 MiB of payload plus the I/O header: the Linux fd/tcp/unix transports cap msize at 1 MiB. */
export const MAX_MSIZE = 1024 * 1024 + IOHDRSZ;

export interface SessionLimits {
  /** Largest msize offered in Rversion (clamped to [MIN_MSIZE, MAX_MSIZE]). */
  msize: number;
  /** Fids per connection; more answers ENFILE. */
  maxFids: number;
  /** Host fds per connection, pinned ones (files unlinked while referenced) included; beyond: ENFILE. */
  maxHostFds: number;
  /** Requests being processed at once; at the cap the server stops reading the socket. */
  maxOutstanding: number;
  /** Blocking Tlock requests parked per connection (beyond: answered BLOCKED). */
  maxParkedLocks: number;
  /** Fids with a pending Txattrcreate per connection (beyond: ENOSPC). */
  maxPendingXattrs: number;
  /**
   * Bytes held by xattr fids per connection: values read by Txattrwalk and announced by Txattrcreate, plus
   * XATTR_FID_OVERHEAD per fid (beyond: ENOSPC).
   */
  maxXattrBytes: number;
  /** Byte-range locks held per connection (beyond: Rlock ERROR, ENOLCK in the guest). */
  maxLocks: number;
  /** Lock ranges per file, all connections together (beyond: Rlock ERROR). */
  maxLockRangesPerFile: number;
  /** Parked blocking lock requests per file, all connections together (beyond: BLOCKED). */
  maxLockWaitersPerFile: number;
  /** Reply bytes queued on the socket before the server stops reading requests. */
  maxQueuedReplyBytes: number;
}

/** What an xattr fid costs besides its value (the Fid object and its bookkeeping), for maxXattrBytes. */
export const XATTR_FID_OVERHEAD = 512;

/**
 * maxFids 65536: the Linux client keeps one fid per cached dentry, so walking a large tree (a node_modules
 * directory, a git checkout) pins tens of thousands. A fid without an open host fd measured 645 bytes of heap
 * (50,000 walked fids), so the bound costs ~40 MiB per connection at worst, while host fds stay bounded by
 * maxHostFds. maxXattrBytes 4 MiB: the Linux client reads an xattr with walk, read, clunk, so it holds one or two
 * at a time; 64 pending xattr writes of the largest size (64 KiB) fit.
 */
export const defaultLimits: SessionLimits = {
  msize: MAX_MSIZE,
  maxFids: 65536,
  maxHostFds: 1024,
  maxOutstanding: 256,
  maxParkedLocks: 1024,
  maxPendingXattrs: 64,
  maxXattrBytes: 4 * 1024 * 1024 + 64 * XATTR_FID_OVERHEAD,
  maxLocks: 65536,
  maxLockRangesPerFile: 4096,
  maxLockWaitersPerFile: 1024,
  maxQueuedReplyBytes: 8 * 1024 * 1024,
};

export function clampMsize(n: number): number {
  return Math.max(MIN_MSIZE, Math.min(MAX_MSIZE, Math.floor(n)));
}
