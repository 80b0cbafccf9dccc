// A transcription of the JSON field names (json struct tags) and field types of hcsshim's HCS schema v2 Go types,
// for the types our documents use. Source: microsoft/hcsshim at commit 7c9ff7f481383ff47524bade75d1b25d631b49ce,
// internal/hcs/schema2/{compute_system,version,virtual_machine,chipset,linux_kernel_direct,topology,
// virtual_machine_memory,virtual_machine_processor,devices,hv_socket_2,hv_socket_system_config,
// hv_socket_service_config,scsi,attachment,com_port,modify_setting_request,property_query}.go.
// Protocol facts only (names and shapes), checked field by field against every document we build.

/** 'T' = a struct below; 'map<T>' = Go map[string]T; 'any' = a type we never fill (its presence is an error). */
export type FieldType = 'string' | 'bool' | 'int' | 'uint' | 'string[]' | 'never' | 'json' | `map<${string}>` | string;

export const SCHEMA2_COMMIT = '7c9ff7f481383ff47524bade75d1b25d631b49ce';

export const SCHEMA2: Record<string, Record<string, FieldType>> = {
  // compute_system.go
  ComputeSystem: {
    Owner: 'string',
    SchemaVersion: 'Version',
    HostingSystemId: 'string',
    HostedSystem: 'never',
    Container: 'never',
    VirtualMachine: 'VirtualMachine',
    ShouldTerminateOnLastHandleClosed: 'bool',
  },
  // version.go
  Version: { Major: 'int', Minor: 'int' },
  // virtual_machine.go
  VirtualMachine: {
    Version: 'Version',
    StopOnReset: 'bool',
    Chipset: 'Chipset',
    ComputeTopology: 'Topology',
    Devices: 'Devices',
    GuestState: 'never',
    RestoreState: 'never',
    RegistryChanges: 'never',
    StorageQoS: 'never',
    DebugOptions: 'never',
    GuestConnection: 'never',
    SecuritySettings: 'never',
    ResourcePartitionId: 'string',
    MigrationOptions: 'never',
  },
  // chipset.go
  Chipset: {
    Uefi: 'never',
    IsNumLockDisabled: 'bool',
    BaseBoardSerialNumber: 'string',
    ChassisSerialNumber: 'string',
    ChassisAssetTag: 'string',
    UseUtc: 'bool',
    LinuxKernelDirect: 'LinuxKernelDirect',
    FirmwareFile: 'never',
  },
  // linux_kernel_direct.go
  LinuxKernelDirect: { KernelFilePath: 'string', InitRdPath: 'string', KernelCmdLine: 'string' },
  // topology.go
  Topology: { Memory: 'VirtualMachineMemory', Processor: 'VirtualMachineProcessor', Numa: 'never' },
  // virtual_machine_memory.go (note the spelling of the MMIO tags: "Mmio")
  VirtualMachineMemory: {
    SizeInMB: 'uint',
    Backing: 'never',
    AllowOvercommit: 'bool',
    EnableHotHint: 'bool',
    EnableColdHint: 'bool',
    EnableColdDiscardHint: 'bool',
    EnableDeferredCommit: 'bool',
    LowMmioGapInMB: 'uint',
    HighMmioBaseInMB: 'uint',
    HighMmioGapInMB: 'uint',
    SlitType: 'never',
  },
  // virtual_machine_processor.go
  VirtualMachineProcessor: {
    Count: 'uint',
    Limit: 'uint',
    Weight: 'uint',
    Reservation: 'uint',
    CpuGroup: 'never',
    NumaProcessorsSettings: 'never',
  },
  // devices.go
  Devices: {
    ComPorts: 'map<ComPort>',
    Scsi: 'map<Scsi>',
    VirtualPMem: 'never',
    NetworkAdapters: 'never',
    VideoMonitor: 'never',
    Keyboard: 'never',
    Mouse: 'never',
    HvSocket: 'HvSocket2',
    EnhancedModeVideo: 'never',
    GuestCrashReporting: 'never',
    VirtualSmb: 'never',
    // Plan9 exists in the schema; our documents must never carry it (our own 9P server serves directories).
    Plan9: 'never',
    Battery: 'never',
    FlexibleIov: 'never',
    SharedMemory: 'never',
    VirtualPci: 'never',
  },
  // hv_socket_2.go
  HvSocket2: { HvSocketConfig: 'HvSocketSystemConfig' },
  // hv_socket_system_config.go
  HvSocketSystemConfig: {
    DefaultBindSecurityDescriptor: 'string',
    DefaultConnectSecurityDescriptor: 'string',
    ServiceTable: 'map<HvSocketServiceConfig>',
  },
  // hv_socket_service_config.go
  HvSocketServiceConfig: {
    BindSecurityDescriptor: 'string',
    ConnectSecurityDescriptor: 'string',
    AllowWildcardBinds: 'bool',
    Disabled: 'bool',
  },
  // scsi.go
  Scsi: { Attachments: 'map<Attachment>' },
  // attachment.go (Go field Type_, JSON "Type")
  Attachment: {
    Type: 'string',
    Path: 'string',
    IgnoreFlushes: 'bool',
    CachingMode: 'string',
    NoWriteHardening: 'bool',
    DisableExpansionOptimization: 'bool',
    IgnoreRelativeLocator: 'bool',
    CaptureIoAttributionContext: 'bool',
    ReadOnly: 'bool',
    SupportCompressedVolumes: 'bool',
    AlwaysAllowSparseFiles: 'bool',
    ExtensibleVirtualDiskType: 'string',
  },
  // com_port.go
  ComPort: { NamedPipe: 'string', OptimizeForDebugger: 'bool' },
  // modify_setting_request.go (Settings is interface{}: its type depends on ResourcePath)
  ModifySettingRequest: { ResourcePath: 'string', RequestType: 'string', Settings: 'json', GuestRequest: 'never' },
  // property_query.go
  PropertyQuery: { PropertyTypes: 'string[]', Queries: 'never' },
};

/**
 * Checks `value` against type `type`: every key must be a field of that type with a value of its type,
 * recursively. Returns the problems as "path: what" strings (empty: conforms).
 */
export function checkSchema2(value: unknown, type: FieldType, path = '$'): string[] {
  const problems: string[] = [];
  const map = /^map<(.+)>$/.exec(type);
  if (type === 'never') return [`${path}: a field we must not send`];
  if (type === 'json') return [];
  if (type === 'string') return typeof value === 'string' ? [] : [`${path}: want string`];
  if (type === 'bool') return typeof value === 'boolean' ? [] : [`${path}: want bool`];
  if (type === 'int' || type === 'uint')
    return Number.isInteger(value) && (type === 'int' || (value as number) >= 0) ? [] : [`${path}: want ${type}`];
  if (type === 'string[]')
    return Array.isArray(value) && value.every((v) => typeof v === 'string') ? [] : [`${path}: want []string`];
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [`${path}: want ${type} object`];
  if (map) {
    for (const [k, v] of Object.entries(value))
      problems.push(...checkSchema2(v, map[1]!, `${path}[${JSON.stringify(k)}]`));
    return problems;
  }
  const fields = SCHEMA2[type];
  if (!fields) return [`${path}: unknown schema type ${type}`];
  for (const [k, v] of Object.entries(value)) {
    const ft = fields[k];
    if (!ft) problems.push(`${path}.${k}: not a field of ${type}`);
    else problems.push(...checkSchema2(v, ft, `${path}.${k}`));
  }
  return problems;
}
