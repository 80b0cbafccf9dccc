// SCSI disks the host hot-added to a Hyper-V UVM (container layer VHDs, scratch VHDXs): the host names a disk by
// its controller's VMBus instance id and LUN; the guest finds the block device in sysfs and mounts it.
//   /sys/bus/vmbus/devices/<controller id>/host<N>     -> the controller is SCSI host N in this guest
//   /sys/bus/scsi/devices/<N>:0:0:<lun>/block/<sdX>    -> the disk (appears asynchronously after the hot-add)
// (the same walk hcsshim's guest does: internal/guest/storage/scsi). The sysfs root is a parameter for tests.
import { spawn } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const FSTYPES = new Set(['ext4', 'xfs', 'erofs', 'squashfs']);

export interface ScsiAddress {
  controller: string;
  lun: number;
}

/** "<controller VMBus id>:<LUN>" from the host; anything else is refused. */
export function parseScsiSource(source: string): ScsiAddress {
  const i = source.lastIndexOf(':');
  const controller = source.slice(0, i).toLowerCase();
  const lun = Number(source.slice(i + 1));
  if (i < 0 || !GUID_RE.test(controller) || !Number.isInteger(lun) || lun < 0 || lun > 63 || source.slice(i + 1) === '')
    throw new Error(`invalid SCSI disk address ${JSON.stringify(source)} (want <controller guid>:<lun>)`);
  return { controller, lun };
}

async function list(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** The /dev path of the disk at `addr`, waiting (10 ms steps) up to `timeoutMs` for it to appear. */
export async function findScsiDisk(
  addr: ScsiAddress,
  opts: { sysfs?: string; timeoutMs?: number } = {},
): Promise<string> {
  const sysfs = opts.sysfs ?? '/sys';
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  for (;;) {
    const hostDir = (await list(join(sysfs, 'bus/vmbus/devices', addr.controller))).find((n) => /^host\d+$/.test(n));
    if (hostDir) {
      const n = hostDir.slice(4);
      const blocks = await list(join(sysfs, 'bus/scsi/devices', `${n}:0:0:${addr.lun}`, 'block'));
      if (blocks.length > 1) throw new Error(`more than one block device at SCSI ${n}:0:0:${addr.lun}`);
      if (blocks.length === 1 && /^[a-z0-9]+$/.test(blocks[0]!)) return `/dev/${blocks[0]}`;
    }
    if (Date.now() >= deadline)
      throw new Error(`no block device for SCSI controller ${addr.controller} LUN ${addr.lun} (hot-add not seen)`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface ScsiMountRequest {
  source: string;
  target: string;
  readOnly: boolean;
  options: Record<string, string>;
}

/** Mounts the disk the host named at `target` (fstype from options.fstype, default ext4). */
export async function mountScsi(req: ScsiMountRequest, sysfs?: string): Promise<void> {
  const fstype = req.options.fstype ?? 'ext4';
  if (!FSTYPES.has(fstype)) throw new Error(`unsupported filesystem ${JSON.stringify(fstype)} on a SCSI disk`);
  const dev = await findScsiDisk(parseScsiSource(req.source), { sysfs });
  await mkdir(req.target, { recursive: true });
  const args = ['-t', fstype];
  if (req.readOnly) args.push('-o', 'ro');
  args.push(dev, req.target);
  await new Promise<void>((resolve, reject) => {
    const c = spawn('mount', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    c.stderr.on('data', (d: Buffer) => err.push(d));
    c.on('error', reject);
    c.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`mount ${dev}: ${Buffer.concat(err).toString().trim()}`)),
    );
  });
}
