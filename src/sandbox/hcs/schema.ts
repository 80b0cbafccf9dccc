// HCS schema v2 documents for the LCOW utility VM: the compute system document HcsCreateComputeSystem takes,
// the modify requests HcsModifyComputeSystem takes, the property queries and the result documents HCS sends
// back. Only the subset we use is typed. Field names and nesting follow the HCS schema reference, as
// microsoft/hcsshim's generated Go types spell them (internal/hcs/schema2, JSON tags); the golden tests check
// every field we emit against a transcription of those tags.
//
// Pure data: no Windows calls here, so the documents are built and tested on any OS.

/** SDDL: a protected DACL granting full access to Local System (SY) and the Administrators group (BA) only. */
export const SYSTEM_AND_ADMINS_SDDL = 'D:P(A;;FA;;;SY)(A;;FA;;;BA)';

/**
 * The SCSI controllers' VMBus instance ids hcsshim uses (guestrequest.ScsiControllerGuids: UUIDv5 of "0".."3"
 * in namespace d422512d-2bf2-4752-809d-7b82b5fcb1b4). The guest finds a disk's controller by this id under
 * /sys/bus/vmbus/devices, so they are part of the host/guest contract, not arbitrary.
 */
export const SCSI_CONTROLLER_GUIDS = [
  'df6d0690-79e5-55b6-a5ec-c1e2f77f580a',
  '0110f83b-de10-5172-a266-78bca56bf50a',
  'b5d2d8d4-3a75-51bf-945b-3444dc6b8579',
  '305891a9-b251-5dfe-91a2-c25d9212275b',
] as const;

/** Hyper-V SCSI: 64 LUNs per controller. */
export const SCSI_LUNS_PER_CONTROLLER = 64;

export interface Version {
  Major: number;
  Minor: number;
}

export const SCHEMA_VERSION_2_1: Version = { Major: 2, Minor: 1 };

export interface LinuxKernelDirect {
  KernelFilePath: string;
  InitRdPath?: string;
  KernelCmdLine: string;
}

export interface Chipset {
  LinuxKernelDirect?: LinuxKernelDirect;
}

export interface VirtualMachineMemory {
  SizeInMB: number;
  /** Virtual-address-backed guest RAM: the host commits pages as the guest touches them. */
  AllowOvercommit?: boolean;
  EnableDeferredCommit?: boolean;
}

export interface VirtualMachineProcessor {
  Count: number;
  Limit?: number;
  Weight?: number;
}

export interface Topology {
  Memory: VirtualMachineMemory;
  Processor: VirtualMachineProcessor;
}

export interface HvSocketServiceConfig {
  BindSecurityDescriptor?: string;
  ConnectSecurityDescriptor?: string;
  AllowWildcardBinds?: boolean;
  Disabled?: boolean;
}

export interface HvSocketSystemConfig {
  DefaultBindSecurityDescriptor?: string;
  DefaultConnectSecurityDescriptor?: string;
  ServiceTable?: Record<string, HvSocketServiceConfig>;
}

export interface HvSocket2 {
  HvSocketConfig: HvSocketSystemConfig;
}

export interface Attachment {
  /** "VirtualDisk" (VHD/VHDX), "PassThru", "Iso". */
  Type: 'VirtualDisk' | 'PassThru' | 'Iso';
  Path: string;
  ReadOnly?: boolean;
}

export interface Scsi {
  Attachments: Record<string, Attachment>;
}

export interface ComPort {
  NamedPipe: string;
}

export interface Devices {
  ComPorts?: Record<string, ComPort>;
  Scsi?: Record<string, Scsi>;
  HvSocket: HvSocket2;
}

export interface VirtualMachine {
  StopOnReset: boolean;
  Chipset: Chipset;
  ComputeTopology: Topology;
  Devices: Devices;
}

export interface ComputeSystem {
  Owner: string;
  SchemaVersion: Version;
  /** HCS terminates the VM when the last handle closes: a crashed shim never leaks its UVM. */
  ShouldTerminateOnLastHandleClosed?: boolean;
  VirtualMachine: VirtualMachine;
}

export type RequestType = 'Add' | 'Remove' | 'Update';

/** The body of HcsModifyComputeSystem. We never send a GuestRequest: our agent is told over its own channel. */
export interface ModifySettingRequest<S = unknown> {
  ResourcePath: string;
  RequestType: RequestType;
  Settings?: S;
}

export interface PropertyQuery {
  PropertyTypes?: Array<'Memory' | 'Statistics' | 'ProcessList' | 'GuestConnection' | 'ProcessorTopology'>;
}

/** The parts of a properties result document we read (schema v1 for an empty query, v2 for typed ones). */
export interface SystemProperties {
  Id?: string;
  /** The VM id hvsock addresses: HvsockAddr.VmId. */
  RuntimeId?: string;
  State?: string;
  Stopped?: boolean;
  ExitType?: string;
  Statistics?: {
    Uptime100ns?: number;
    Memory?: {
      MemoryUsageCommitBytes?: number;
      MemoryUsageCommitPeakBytes?: number;
      MemoryUsagePrivateWorkingSetBytes?: number;
    };
  };
}

/** The HCS error document (ResultError) an operation may return on failure. */
export interface ResultError {
  Error?: number;
  ErrorMessage?: string;
  ErrorEvents?: Array<{ Message?: string; StackTrace?: string; Provider?: string; EventId?: number; Source?: string }>;
}

/** SystemExited event data (HcsEventSystemExited): ExitType "GracefulExit", "ForcedExit", "UnexpectedExit"... */
export interface SystemExitStatus {
  Status?: number;
  ExitType?: string;
}

// ---- resource paths of modify requests (the HCS schema's URIs) ----

export function scsiAttachmentPath(controller: number, lun: number): string {
  return `VirtualMachine/Devices/Scsi/${scsiControllerGuid(controller)}/Attachments/${lun}`;
}

export function scsiControllerGuid(controller: number): string {
  const g = SCSI_CONTROLLER_GUIDS[controller];
  if (g === undefined) throw new RangeError(`SCSI controller ${controller} does not exist (0..3)`);
  return g;
}

// ---- the LCOW utility VM document ----

export interface LcowDocumentInput {
  owner: string;
  kernelPath: string;
  /** Boot from an initrd (LinuxKernelDirect.InitRdPath)... */
  initrdPath?: string;
  /** ...or from a read-only root filesystem image on SCSI 0:0 (VHD/VHDX). Exactly one of the two. */
  rootfsVhdPath?: string;
  /** Our part of the kernel command line (lcow.* words); the backend's fixed words are added here. */
  kernelArgs: string[];
  memoryMiB: number;
  cpus: number;
  /**
   * hvsock services (GUIDs) the guest may reach on the host. Each gets a service-table entry whose bind and
   * connect descriptors admit only SYSTEM and Administrators, so no unprivileged host process can listen on
   * (impersonate) a service the guest dials, nor dial into the guest.
   */
  hvSocketServices: string[];
  /** SCSI controllers to create (0 = none; disks are attached later with modify requests). */
  scsiControllers: number;
  /** Debugging: the guest's COM1 goes to this named pipe (Hyper-V serves it; the shim reads it). */
  consolePipe?: string;
}

/** Memory is rounded up to an even MiB: HCS backs guest RAM in 2 MiB units (hcsshim aligns the same way). */
export function normalizeMemoryMiB(miB: number): number {
  return miB + (miB % 2);
}

/** The kernel command line: fixed words for a headless Hyper-V guest, then ours. */
export function lcowKernelCmdLine(
  input: Pick<LcowDocumentInput, 'cpus' | 'consolePipe' | 'rootfsVhdPath' | 'kernelArgs'>,
): string {
  const words: string[] = [];
  if (input.rootfsVhdPath) words.push('root=/dev/sda', 'ro', 'rootwait', 'init=/init');
  if (input.consolePipe) words.push('8250_core.nr_uarts=1', '8250_core.skip_txen_test=1', 'console=ttyS0,115200');
  else words.push('8250_core.nr_uarts=0', 'quiet', 'loglevel=3');
  // panic=-1: a guest kernel panic reboots, and StopOnReset turns the reboot into a VM stop the shim sees.
  // pci=off: the UVM has no PCI devices (VMBus only). The virtio vsock transport must not claim the G2H slot
  // that hv_sock needs.
  words.push('panic=-1', 'pci=off', `nr_cpus=${input.cpus}`, 'brd.rd_nr=0', 'pmtmr=0');
  words.push('initcall_blacklist=virtio_vsock_init');
  words.push(...input.kernelArgs);
  for (const w of words) {
    if (/[\s"]/.test(w) || w === '') throw new Error(`invalid kernel command line word ${JSON.stringify(w)}`);
  }
  return words.join(' ');
}

export function lcowDocument(input: LcowDocumentInput): ComputeSystem {
  if (!!input.initrdPath === !!input.rootfsVhdPath)
    throw new Error('the UVM boots from exactly one of an initrd or a rootfs image');
  if (!Number.isInteger(input.cpus) || input.cpus < 1) throw new Error(`invalid processor count ${input.cpus}`);
  if (!Number.isInteger(input.memoryMiB) || input.memoryMiB < 1) throw new Error(`invalid memory ${input.memoryMiB}`);
  const serviceTable: Record<string, HvSocketServiceConfig> = {};
  for (const id of input.hvSocketServices) {
    serviceTable[id] = {
      BindSecurityDescriptor: SYSTEM_AND_ADMINS_SDDL,
      ConnectSecurityDescriptor: SYSTEM_AND_ADMINS_SDDL,
    };
  }
  const devices: Devices = {
    HvSocket: {
      HvSocketConfig: {
        DefaultBindSecurityDescriptor: SYSTEM_AND_ADMINS_SDDL,
        DefaultConnectSecurityDescriptor: SYSTEM_AND_ADMINS_SDDL,
        ServiceTable: serviceTable,
      },
    },
  };
  const controllers = Math.max(input.scsiControllers, input.rootfsVhdPath ? 1 : 0);
  if (controllers > SCSI_CONTROLLER_GUIDS.length)
    throw new Error(`at most ${SCSI_CONTROLLER_GUIDS.length} SCSI controllers`);
  if (controllers > 0) {
    devices.Scsi = {};
    for (let i = 0; i < controllers; i++) devices.Scsi[scsiControllerGuid(i)] = { Attachments: {} };
    if (input.rootfsVhdPath)
      devices.Scsi[scsiControllerGuid(0)]!.Attachments['0'] = {
        Type: 'VirtualDisk',
        Path: input.rootfsVhdPath,
        ReadOnly: true,
      };
  }
  if (input.consolePipe) devices.ComPorts = { '0': { NamedPipe: input.consolePipe } };
  const kernelDirect: LinuxKernelDirect = {
    KernelFilePath: input.kernelPath,
    KernelCmdLine: lcowKernelCmdLine(input),
  };
  if (input.initrdPath) kernelDirect.InitRdPath = input.initrdPath;
  return {
    Owner: input.owner,
    SchemaVersion: SCHEMA_VERSION_2_1,
    ShouldTerminateOnLastHandleClosed: true,
    VirtualMachine: {
      StopOnReset: true,
      Chipset: { LinuxKernelDirect: kernelDirect },
      ComputeTopology: {
        Memory: { SizeInMB: normalizeMemoryMiB(input.memoryMiB), AllowOvercommit: true },
        Processor: { Count: input.cpus },
      },
      Devices: devices,
    },
  };
}

// ---- modify requests the backend sends ----

/** Hot-adds a virtual disk (a container layer VHD, read-only, or a scratch VHDX) at controller/LUN. */
export function addScsiDiskRequest(
  controller: number,
  lun: number,
  path: string,
  readOnly: boolean,
): ModifySettingRequest<Attachment> {
  checkLun(lun);
  const settings: Attachment = { Type: 'VirtualDisk', Path: path };
  if (readOnly) settings.ReadOnly = true;
  return { ResourcePath: scsiAttachmentPath(controller, lun), RequestType: 'Add', Settings: settings };
}

export function removeScsiDiskRequest(controller: number, lun: number): ModifySettingRequest {
  checkLun(lun);
  return { ResourcePath: scsiAttachmentPath(controller, lun), RequestType: 'Remove' };
}

function checkLun(lun: number): void {
  if (!Number.isInteger(lun) || lun < 0 || lun >= SCSI_LUNS_PER_CONTROLLER) throw new RangeError(`invalid LUN ${lun}`);
}

/** Queries: the VM id (schema v1 answer to an empty query) and the v2 statistics. */
export const RUNTIME_ID_QUERY: PropertyQuery = {};
export const STATISTICS_QUERY: PropertyQuery = { PropertyTypes: ['Statistics'] };
