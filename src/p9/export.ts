// An exported host directory: its root fd (O_PATH, opened once) and qid map, shared by all connections that
// attach to it, its security policy (security.ts), plus the server's lock table (one per server and keyed by
// file identity, so two exports that overlap on the host still see each other's locks).

import type { HostFs } from './hostfs.js';
import type { LockTable } from './locks.js';
import type { MetadataStore } from './metadata.js';
import { QidMapper } from './qid.js';
import { SharePolicy, parseShareSecurity, type ShareSecurity } from './security.js';
import { S_IFDIR, S_IFMT, type StatX } from '../util/syscalls.js';

export interface ExportConfig {
  /** Name matched against Tattach's aname (the directory path matches too). */
  name: string;
  path: string;
  readOnly?: boolean;
  /**
   * Share security model (security.ts, docs/security.md): `mapped` (default; bind mounts and anything a host
   * user may reach) or `passthrough-existing` (container rootfs snapshots under root-only directories).
   */
  security?: ShareSecurity;
  /**
   * Where guest metadata is kept; default: the host filesystem layer's own store (user.lcow.* xattrs on Linux,
   * the lcow.meta stream on NTFS).
   */
  metadata?: MetadataStore;
}

export class ExportRoot {
  readonly rootFd: number;
  readonly rootStat: StatX;
  readonly qids = new QidMapper();
  readonly policy: SharePolicy;

  constructor(
    readonly name: string,
    readonly path: string,
    readonly readOnly: boolean,
    readonly locks: LockTable,
    /** The host filesystem layer (hostfs.ts) serving it. */
    readonly fs: HostFs,
    security: ShareSecurity = 'mapped',
    metadata: MetadataStore = fs.defaultMetadataStore(),
  ) {
    this.policy = new SharePolicy(parseShareSecurity(security), metadata);
    this.rootFd = fs.openRoot(path);
    try {
      this.rootStat = fs.fstatx(this.rootFd);
    } catch (err) {
      fs.close(this.rootFd);
      throw err;
    }
    if ((this.rootStat.mode & S_IFMT) !== S_IFDIR) {
      fs.close(this.rootFd);
      throw new Error(`export ${path} is not a directory`);
    }
    // The root's device claims qid device index 0.
    this.qids.path(this.rootStat.devMajor, this.rootStat.devMinor, this.rootStat.ino);
  }

  close(): void {
    this.fs.close(this.rootFd);
  }
}
