// Golden HCS schema v2 documents: the LCOW UVM document and the modify requests, byte for byte against
// test/golden/hcs/*.json, every field checked against hcsshim's schema2 Go types (hcs-schema2-tags.ts,
// microsoft/hcsshim@7c9ff7f481383ff47524bade75d1b25d631b49ce internal/hcs/schema2/), and the choices that must match
// hcsshim's own LCOW builder (same commit, internal/uvm/create_lcow.go MakeLCOWDoc; the SCSI controller ids from
// internal/protocol/guestrequest/types.go; resource paths from internal/hcs/resourcepaths/virtualmachine.go).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  HCS_CONTROL_PORT,
  HCS_P9_PORT,
  HCS_SECRET_PORT,
  guestKernelArgs,
  hcsConfig,
} from '../../../src/sandbox/hcs/config.js';
import {
  SCSI_CONTROLLER_GUIDS,
  SYSTEM_AND_ADMINS_SDDL,
  addScsiDiskRequest,
  lcowDocument,
  removeScsiDiskRequest,
  type ComputeSystem,
} from '../../../src/sandbox/hcs/schema.js';
import { CPU_ANNOTATION, MEMORY_ANNOTATION } from '../../../src/sandbox/sizing.js';
import { vsockServiceId } from '../../../src/transport/hvsock.js';
import { ScsiSlots, parseLcowLayerMount } from '../../../src/sandbox/hcs/layers.js';
import { SCHEMA2_COMMIT, checkSchema2 } from './hcs-schema2-tags.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../../..');
const golden = (name: string): unknown =>
  JSON.parse(readFileSync(join(ROOT, 'test/golden/hcs', `${name}.json`), 'utf8'));
const services = [HCS_SECRET_PORT, HCS_CONTROL_PORT, HCS_P9_PORT].map(vsockServiceId);

function initrdDoc(): ComputeSystem {
  return lcowDocument({
    owner: 'containerd-shim-lcow-v1',
    kernelPath: 'C:\\Program Files\\containerd-shim-lcow\\build\\guest\\vmlinuz',
    initrdPath: 'C:\\Program Files\\containerd-shim-lcow\\build\\guest\\initrd.img',
    kernelArgs: guestKernelArgs({ debug: false }),
    memoryMiB: 1023,
    cpus: 2,
    hvSocketServices: services,
    scsiControllers: 0,
  });
}

function vhdDebugDoc(): ComputeSystem {
  return lcowDocument({
    owner: 'containerd-shim-lcow-v1',
    kernelPath: 'C:\\lcow\\vmlinuz',
    rootfsVhdPath: 'C:\\lcow\\rootfs.vhd',
    kernelArgs: guestKernelArgs({ debug: true, rootfsVhd: 'C:\\lcow\\rootfs.vhd' }),
    memoryMiB: 2048,
    cpus: 4,
    hvSocketServices: services,
    scsiControllers: 2,
    consolePipe: '\\\\.\\pipe\\lcow-console-pod@lcow-0123abcd',
  });
}

describe(`HCS schema v2 documents (golden; fields per hcsshim ${SCHEMA2_COMMIT.slice(0, 7)})`, () => {
  it('the LCOW UVM document booting an initrd matches its golden file and hcsshim schema2', () => {
    const doc = initrdDoc();
    assert.deepEqual(doc, golden('lcow-uvm-initrd'));
    assert.deepEqual(checkSchema2(doc, 'ComputeSystem'), []);
  });

  it('the rootfs-VHD, debug-console variant matches its golden file and hcsshim schema2', () => {
    const doc = vhdDebugDoc();
    assert.deepEqual(doc, golden('lcow-uvm-vhd-debug'));
    assert.deepEqual(checkSchema2(doc, 'ComputeSystem'), []);
  });

  it('makes the choices hcsshim MakeLCOWDoc makes', () => {
    for (const doc of [initrdDoc(), vhdDebugDoc()]) {
      // schemaversion.SchemaV21(), ShouldTerminateOnLastHandleClosed, StopOnReset.
      assert.deepEqual(doc.SchemaVersion, { Major: 2, Minor: 1 });
      assert.equal(doc.ShouldTerminateOnLastHandleClosed, true);
      assert.equal(doc.VirtualMachine.StopOnReset, true);
      // "Allow administrators and SYSTEM to bind to vsock sockets": the same SDDL as hcsshim's default.
      assert.equal(SYSTEM_AND_ADMINS_SDDL, 'D:P(A;;FA;;;SY)(A;;FA;;;BA)');
      const hv = doc.VirtualMachine.Devices.HvSocket.HvSocketConfig;
      assert.equal(hv.DefaultBindSecurityDescriptor, SYSTEM_AND_ADMINS_SDDL);
      // Every service the guest dials is listed, bind and connect limited to SYSTEM + Administrators.
      assert.deepEqual(Object.keys(hv.ServiceTable!), services);
      for (const svc of Object.values(hv.ServiceTable!)) {
        assert.equal(svc.BindSecurityDescriptor, SYSTEM_AND_ADMINS_SDDL);
        assert.equal(svc.ConnectSecurityDescriptor, SYSTEM_AND_ADMINS_SDDL);
        assert.equal(svc.AllowWildcardBinds, undefined);
      }
      // No HCS Plan9 device: directories reach the guest through our own 9P server.
      assert.equal('Plan9' in doc.VirtualMachine.Devices, false);
      // The fixed kernel words hcsshim passes a KernelDirect LCOW guest.
      const words = doc.VirtualMachine.Chipset.LinuxKernelDirect!.KernelCmdLine.split(' ');
      for (const w of ['panic=-1', 'pci=off', 'brd.rd_nr=0', 'pmtmr=0', 'initcall_blacklist=virtio_vsock_init'])
        assert.ok(words.includes(w), w);
      assert.ok(words.includes(`nr_cpus=${doc.VirtualMachine.ComputeTopology.Processor.Count}`));
      // The secret never appears in the document (anyone with HCS access can read it back).
      assert.ok(!words.some((w) => /secret|token=[^v]/.test(w)));
    }
    // guestrequest.ScsiControllerGuids, in order; the rootfs VHD at controller 0 LUN 0, read-only.
    assert.deepEqual(SCSI_CONTROLLER_GUIDS, [
      'df6d0690-79e5-55b6-a5ec-c1e2f77f580a',
      '0110f83b-de10-5172-a266-78bca56bf50a',
      'b5d2d8d4-3a75-51bf-945b-3444dc6b8579',
      '305891a9-b251-5dfe-91a2-c25d9212275b',
    ]);
    const scsi = vhdDebugDoc().VirtualMachine.Devices.Scsi!;
    assert.deepEqual(Object.keys(scsi), SCSI_CONTROLLER_GUIDS.slice(0, 2));
    assert.deepEqual(scsi[SCSI_CONTROLLER_GUIDS[0]]!.Attachments['0'], {
      Type: 'VirtualDisk',
      Path: 'C:\\lcow\\rootfs.vhd',
      ReadOnly: true,
    });
    // hcsshim's VHD boot words.
    assert.match(
      vhdDebugDoc().VirtualMachine.Chipset.LinuxKernelDirect!.KernelCmdLine,
      /^root=\/dev\/sda ro rootwait init=\/init /,
    );
    // Memory aligned up to an even MiB (vmutils.NormalizeMemorySize).
    assert.equal(initrdDoc().VirtualMachine.ComputeTopology.Memory.SizeInMB, 1024);
  });

  it('the SCSI modify requests match their golden files, resource paths as hcsshim formats them', () => {
    const layer = addScsiDiskRequest(
      1,
      3,
      'C:\\ProgramData\\containerd\\root\\io.containerd.snapshotter.v1.windows-lcow\\snapshots\\12\\layer.vhd',
      true,
    );
    const scratch = addScsiDiskRequest(
      0,
      1,
      'C:\\ProgramData\\containerd\\root\\io.containerd.snapshotter.v1.windows-lcow\\snapshots\\13\\sandbox.vhdx',
      false,
    );
    const remove = removeScsiDiskRequest(1, 3);
    assert.deepEqual(layer, golden('modify-scsi-add-layer'));
    assert.deepEqual(scratch, golden('modify-scsi-add-scratch'));
    assert.deepEqual(remove, golden('modify-scsi-remove'));
    for (const r of [layer, scratch, remove]) {
      assert.deepEqual(checkSchema2(r, 'ModifySettingRequest'), []);
      if (r.Settings !== undefined) assert.deepEqual(checkSchema2(r.Settings, 'Attachment'), []);
      // resourcepaths.SCSIResourceFormat = "VirtualMachine/Devices/Scsi/%s/Attachments/%d"
      assert.match(r.ResourcePath, /^VirtualMachine\/Devices\/Scsi\/[0-9a-f-]{36}\/Attachments\/\d+$/);
    }
    assert.throws(() => addScsiDiskRequest(4, 0, 'x', true), RangeError);
    assert.throws(() => addScsiDiskRequest(0, 64, 'x', true), RangeError);
  });

  it('the schema check catches a misspelt or unknown field (it is not vacuous)', () => {
    const doc = initrdDoc() as unknown as { VirtualMachine: { ComputeTopology: { Memory: Record<string, unknown> } } };
    doc.VirtualMachine.ComputeTopology.Memory.LowMMIOGapInMB = 16; // the Go field name, not its JSON tag
    const withPlan9 = vhdDebugDoc() as unknown as { VirtualMachine: { Devices: Record<string, unknown> } };
    withPlan9.VirtualMachine.Devices.Plan9 = {};
    assert.deepEqual(checkSchema2(doc, 'ComputeSystem'), [
      '$.VirtualMachine.ComputeTopology.Memory.LowMMIOGapInMB: not a field of VirtualMachineMemory',
    ]);
    assert.deepEqual(checkSchema2(withPlan9, 'ComputeSystem'), [
      '$.VirtualMachine.Devices.Plan9: a field we must not send',
    ]);
  });

  it('rejects documents that cannot boot', () => {
    const base = {
      owner: 'o',
      kernelPath: 'k',
      kernelArgs: [],
      memoryMiB: 512,
      cpus: 1,
      hvSocketServices: [],
      scsiControllers: 0,
    };
    assert.throws(() => lcowDocument(base), /exactly one of an initrd or a rootfs image/);
    assert.throws(() => lcowDocument({ ...base, initrdPath: 'i', rootfsVhdPath: 'r' }), /exactly one/);
    assert.throws(() => lcowDocument({ ...base, initrdPath: 'i', cpus: 0 }), /processor count/);
    assert.throws(
      () => lcowDocument({ ...base, initrdPath: 'i', kernelArgs: ['a b'] }),
      /invalid kernel command line word/,
    );
    assert.throws(() => lcowDocument({ ...base, initrdPath: 'i', scsiControllers: 5 }), /at most 4/);
  });
});

describe('HCS UVM configuration', () => {
  it('sizes from hcsshim annotations over the runtime config over defaults', () => {
    const runtime = { memory_mb: 2048, hcs: { cpus: 3, kernel: '/g/vmlinuz', initrd: '/g/initrd.img' } };
    const c = hcsConfig(runtime, {});
    assert.equal(c.memoryMiB, 2048);
    assert.equal(c.cpus, 3);
    const a = hcsConfig(runtime, { [MEMORY_ANNOTATION]: '640', [CPU_ANNOTATION]: '1' });
    assert.equal(a.memoryMiB, 640);
    assert.equal(a.cpus, 1);
    assert.throws(() => hcsConfig(runtime, { [MEMORY_ANNOTATION]: '128' }), /below the 256 MiB minimum/);
  });

  it('boots from the guest dir by default, or a rootfs VHD; paths must be absolute', () => {
    const d = hcsConfig({ guest_dir: '/opt/lcow/guest' }, {});
    assert.equal(d.kernel, '/opt/lcow/guest/vmlinuz');
    assert.equal(d.initrd, '/opt/lcow/guest/initrd-full.img');
    assert.equal(d.rootfsVhd, undefined);
    const v = hcsConfig({ hcs: { kernel: '/k', rootfs_vhd: '/r.vhd' } }, {});
    assert.equal(v.initrd, undefined);
    assert.equal(v.rootfsVhd, '/r.vhd');
    assert.throws(() => hcsConfig({ hcs: { initrd: '/i', rootfs_vhd: '/r' } }, {}), /either initrd or rootfs_vhd/);
    assert.throws(() => hcsConfig({ hcs: { kernel: 'relative/vmlinuz' } }, {}), /absolute path/);
  });
});

describe('windows-lcow rootfs mounts', () => {
  const m = (options: string[], source = 'C:\\snap\\13', type = 'lcow-layer') => [
    { type, source, target: '', options },
  ];

  it('reads the layer VHDs (topmost first) and the scratch VHDX as containerd passes them', () => {
    assert.deepEqual(parseLcowLayerMount(m(['rw', 'parentLayerPaths=["C:\\\\snap\\\\12","C:\\\\snap\\\\3"]'])), {
      layers: ['C:\\snap\\12\\layer.vhd', 'C:\\snap\\3\\layer.vhd'],
      scratch: 'C:\\snap\\13\\sandbox.vhdx',
    });
    assert.equal(parseLcowLayerMount(m([], '/x', 'overlay')), undefined);
    assert.equal(parseLcowLayerMount([]), undefined);
  });

  it('refuses malformed ones', () => {
    assert.throws(() => parseLcowLayerMount(m(['parentLayerPaths=[1]'])), /absolute paths/);
    assert.throws(() => parseLcowLayerMount(m(['parentLayerPaths=["relative"]'])), /absolute paths/);
    assert.throws(() => parseLcowLayerMount(m(['parentLayerPaths={'])), /not JSON/);
    assert.throws(() => parseLcowLayerMount(m(['bogus=1'])), /unrecognized/);
    assert.throws(() => parseLcowLayerMount(m(['parentLayerPaths=["C:\\\\a"]'], 'relative')), /absolute path/);
    const many = JSON.stringify(Array.from({ length: 200 }, (_, i) => `C:\\l\\${i}`));
    assert.throws(() => parseLcowLayerMount(m([`parentLayerPaths=${many}`])), /more than 127/);
  });

  it('hands out SCSI slots, never the reserved rootfs one, and reuses freed ones', () => {
    const s = new ScsiSlots(2, [{ controller: 0, lun: 0 }]);
    const a = s.take();
    assert.deepEqual(a, { controller: 1, lun: 0 });
    assert.deepEqual(s.take(), { controller: 0, lun: 1 });
    s.free(a);
    assert.deepEqual(s.take(), a);
    const full = new ScsiSlots(1);
    for (let i = 0; i < 64; i++) full.take();
    assert.throws(() => full.take(), /no free SCSI slot/);
  });
});
