// The guest side of Hyper-V SCSI disks: the host's "<controller id>:<lun>" and the sysfs walk to the block
// device, against a sysfs tree laid out as Linux lays it out for hv_storvsc (built in a temp dir).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findScsiDisk, mountScsi, parseScsiSource } from '../../../src/agent/scsi.js';

const CTRL = '0110f83b-de10-5172-a266-78bca56bf50a';

describe('agent: SCSI disks (Hyper-V)', () => {
  let sysfs: string;
  beforeEach(() => (sysfs = mkdtempSync(join(tmpdir(), `sysfs-${process.pid}-`))));
  afterEach(() => rmSync(sysfs, { recursive: true, force: true }));

  it('parses the host address and refuses anything else', () => {
    assert.deepEqual(parseScsiSource(`${CTRL}:5`), { controller: CTRL, lun: 5 });
    assert.deepEqual(parseScsiSource(`${CTRL.toUpperCase()}:0`), { controller: CTRL, lun: 0 });
    for (const bad of [`${CTRL}:64`, `${CTRL}:-1`, `${CTRL}:`, CTRL, `../../x:1`, `${CTRL}:1.5`, ''])
      assert.throws(() => parseScsiSource(bad), /invalid SCSI disk address/, bad);
  });

  it('finds the disk through the controller host number, waiting for the hot-add to show', async () => {
    mkdirSync(join(sysfs, 'bus/vmbus/devices', CTRL, 'host3'), { recursive: true });
    setTimeout(() => mkdirSync(join(sysfs, 'bus/scsi/devices/3:0:0:5/block/sdc'), { recursive: true }), 50);
    assert.equal(await findScsiDisk({ controller: CTRL, lun: 5 }, { sysfs, timeoutMs: 5000 }), '/dev/sdc');
  });

  it('gives up after the timeout, and refuses an ambiguous LUN', async () => {
    await assert.rejects(findScsiDisk({ controller: CTRL, lun: 1 }, { sysfs, timeoutMs: 50 }), /hot-add not seen/);
    mkdirSync(join(sysfs, 'bus/vmbus/devices', CTRL, 'host2'), { recursive: true });
    mkdirSync(join(sysfs, 'bus/scsi/devices/2:0:0:1/block/sdb'), { recursive: true });
    mkdirSync(join(sysfs, 'bus/scsi/devices/2:0:0:1/block/sdd'), { recursive: true });
    await assert.rejects(findScsiDisk({ controller: CTRL, lun: 1 }, { sysfs, timeoutMs: 50 }), /more than one/);
  });

  it('refuses filesystems other than the image formats', async () => {
    await assert.rejects(
      mountScsi({ source: `${CTRL}:1`, target: join(sysfs, 'm'), readOnly: true, options: { fstype: 'nfs' } }, sysfs),
      /unsupported filesystem/,
    );
  });
});
