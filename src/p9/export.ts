// An exported host directory: its root fd (O_PATH, opened once) and qid map, shared by all connections that
// attach to it, its security policy (security.ts), plus the server's lock table (one per server and keyed by
// file identity, so two exports that overlap on the host still see each other's locks).

import type { HostFs } from './hostfs.js';
import type { LockTable } from './locks.js';
import type { MetadataStore } from './metadata.js';
import { QidMapper } from './qid.js';
import { ReplayPlan } from './replay-plan.js';
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
  /**
   * Host change replay (ops/replay.ts): attaches with this uid form the replay tree, whose operations are
   * acknowledged without touching the host. Absent: no replay tree (that uid is an ordinary uid).
   */
  replay?: { uid: number; maxPlanEntries?: number };
}

/** An export's replay tree: the attach uid that selects it and the plan the host side sets per batch. */
export interface ReplayTree {
  readonly uid: number;
  readonly plan: ReplayPlan;
}

export class ExportRoot {
  readonly rootFd: number;
  readonly rootStat: StatX;
  readonly qids = new QidMapper();
  readonly policy: SharePolicy;
  readonly replay: ReplayTree | null;

  constructor(
    readonly name: string,
    readonly path: string,
    readonly readOnly: boolean,
    readonly locks: LockTable,
    /** The host filesystem layer (hostfs.ts) serving it. */
    readonly fs: HostFs,
    security: ShareSecurity = 'mapped',
    metadata: MetadataStore = fs.defaultMetadataStore(),
    replay?: ExportConfig['replay'],
  ) {
    if (replay && !(Number.isInteger(replay.uid) && replay.uid > 0 && replay.uid < 0xffffffff))
      throw new Error(`export ${name}: the replay uid must be an integer in 1..4294967294`);
    this.replay = replay ? { uid: replay.uid, plan: new ReplayPlan(replay.maxPlanEntries) } : null;
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
