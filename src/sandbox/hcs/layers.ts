// Container root filesystems from containerd's windows-lcow snapshotter: each image layer is an ext4 VHD
// (<layer dir>\layer.vhd) and each container has a scratch VHDX (<snapshot dir>\sandbox.vhdx). They reach the
// UVM as SCSI disks (hot-added with HcsModifyComputeSystem); the guest mounts each and stacks them with overlay,
// lower layers read-only, the upper and work directories on the scratch disk.
//
// containerd passes them as one rootfs mount: type "lcow-layer", source = the scratch snapshot directory,
// option parentLayerPaths=<JSON array of layer directories, topmost first> (plugins/snapshots/lcow; hcsshim
// internal/layers/lcow.go reads it the same way). This module: parsing that mount, and handing out SCSI slots.
import { win32 } from 'node:path';
import { SCSI_CONTROLLER_GUIDS, SCSI_LUNS_PER_CONTROLLER } from './schema.js';

export interface LcowLayers {
  /** Read-only layer VHDs, topmost first (the overlay lowerdir order). */
  layers: string[];
  /** The container's writable scratch VHDX. */
  scratch: string;
}

const PARENTS = 'parentLayerPaths=';
/** A bound on what one Create may ask the UVM to attach (a SCSI controller holds 64 disks). */
export const MAX_LAYERS = 127;

/** The layer VHDs of an lcow-layer mount, or undefined when `mounts` is not one. Throws on a malformed one. */
export function parseLcowLayerMount(
  mounts: Array<{ type: string; source: string; options: string[] }>,
): LcowLayers | undefined {
  if (mounts.length !== 1 || mounts[0]!.type !== 'lcow-layer') return undefined;
  const m = mounts[0]!;
  if (!win32.isAbsolute(m.source)) throw new Error(`lcow-layer source must be an absolute path: ${m.source}`);
  let parents: unknown = [];
  for (const o of m.options) {
    if (o === 'rw' || o === 'ro' || o === '') continue;
    if (!o.startsWith(PARENTS)) throw new Error(`unrecognized lcow-layer mount option ${JSON.stringify(o)}`);
    try {
      parents = JSON.parse(o.slice(PARENTS.length));
    } catch {
      throw new Error('lcow-layer parentLayerPaths is not JSON');
    }
  }
  if (!Array.isArray(parents) || !parents.every((p) => typeof p === 'string' && win32.isAbsolute(p)))
    throw new Error('lcow-layer parentLayerPaths must be a list of absolute paths');
  if (parents.length === 0) throw new Error('lcow-layer mount without parent layers');
  if (parents.length > MAX_LAYERS) throw new Error(`more than ${MAX_LAYERS} image layers`);
  return {
    layers: (parents as string[]).map((p) => win32.join(p, 'layer.vhd')),
    scratch: win32.join(m.source, 'sandbox.vhdx'),
  };
}

export interface ScsiSlot {
  controller: number;
  lun: number;
}

/** Free (controller, LUN) pairs across the UVM's controllers; `reserved` ones (the rootfs VHD) are never handed out. */
export class ScsiSlots {
  private readonly used = new Set<string>();

  constructor(
    private readonly controllers: number,
    reserved: ScsiSlot[] = [],
  ) {
    if (controllers > SCSI_CONTROLLER_GUIDS.length) throw new RangeError('too many SCSI controllers');
    for (const s of reserved) this.used.add(`${s.controller}:${s.lun}`);
  }

  take(): ScsiSlot {
    for (let lun = 0; lun < SCSI_LUNS_PER_CONTROLLER; lun++)
      for (let controller = 0; controller < this.controllers; controller++) {
        const k = `${controller}:${lun}`;
        if (!this.used.has(k)) {
          this.used.add(k);
          return { controller, lun };
        }
      }
    throw new Error('no free SCSI slot in the UVM');
  }

  free(s: ScsiSlot): void {
    this.used.delete(`${s.controller}:${s.lun}`);
  }

  get inUse(): number {
    return this.used.size;
  }
}

/** How the guest agent is told which disk to mount: "<controller VMBus id>:<LUN>". */
export function scsiShareSource(s: ScsiSlot): string {
  return `${SCSI_CONTROLLER_GUIDS[s.controller]}:${s.lun}`;
}
