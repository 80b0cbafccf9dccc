// computecore.dll (the HCS API, Windows 10 1809 / Server 2019 and later) through koffi. Loaded only when
// first used, so this module imports cleanly on any OS; on Linux the tests load a fake built from the same
// documented prototypes (test/fakes/computecore-fake.c) through this very binding.
//
// Threading. Every call that can wait inside HCS runs on the libuv thread pool (koffi `.async`): HCS delivers
// event callbacks on its own threads and koffi runs them on the main thread, so a main-thread call that waits
// for a callback to finish (HcsCloseComputeSystem does: no callback fires after it returns) would deadlock.
// A pending HcsWaitForOperationResult holds one pool thread for at most its timeout.
//
// Memory. Result documents are allocated by HCS; the caller frees them with LocalFree (documented for
// HcsWaitForOperationResult and HcsGetOperationResult). Strings we pass are UTF-16 (PCWSTR), marshalled by koffi.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** An HCS_OPERATION or HCS_SYSTEM handle (koffi pointers are BigInts; null for none). */
export type Handle = bigint;

/** HCS_EVENT_TYPE values (computecore.h). */
export const HcsEventType = {
  Invalid: 0x00000000,
  SystemExited: 0x00000001,
  SystemCrashInitiated: 0x00000002,
  SystemCrashReport: 0x00000003,
  SystemRdpEnhancedModeStateChanged: 0x00000004,
  SystemSiloJobCreated: 0x00000005,
  SystemGuestConnectionClosed: 0x00000006,
  ProcessExited: 0x00010000,
  OperationCallback: 0x01000000,
  ServiceDisconnect: 0x02000000,
} as const;

/** HCS_EVENT_OPTIONS. */
export const HCS_EVENT_OPTION_NONE = 0;
/** HcsOpenComputeSystem's requestedAccess: GENERIC_ALL, as hcsshim asks. */
export const GENERIC_ALL = 0x10000000;
/** DWORD INFINITE: never passed by us (every wait has a deadline), named to document the ceiling. */
export const INFINITE = 0xffffffff;

export interface HcsEvent {
  type: number;
  data: string;
}

/** The raw API: HRESULTs as unsigned numbers, out parameters as results. One method per DLL function. */
export interface ComputeCore {
  createOperation(): Handle | null;
  closeOperation(op: Handle): void;
  createComputeSystem(id: string, configuration: string, op: Handle): Promise<{ hr: number; system: Handle | null }>;
  openComputeSystem(id: string, requestedAccess: number): Promise<{ hr: number; system: Handle | null }>;
  closeComputeSystem(system: Handle): Promise<void>;
  startComputeSystem(system: Handle, op: Handle, options: string | null): Promise<number>;
  shutDownComputeSystem(system: Handle, op: Handle, options: string | null): Promise<number>;
  terminateComputeSystem(system: Handle, op: Handle, options: string | null): Promise<number>;
  modifyComputeSystem(system: Handle, op: Handle, configuration: string): Promise<number>;
  getComputeSystemProperties(system: Handle, op: Handle, propertyQuery: string | null): Promise<number>;
  /** The result document is read and freed (LocalFree) here. */
  waitForOperationResult(op: Handle, timeoutMs: number): Promise<{ hr: number; result: string | undefined }>;
  cancelOperation(op: Handle): Promise<number>;
  /** Routes the system's events to `onEvent` (in the main thread) until the system handle is closed. */
  setComputeSystemCallback(system: Handle, onEvent: (e: HcsEvent) => void): Promise<{ hr: number; unregister(): void }>;
  /** Lets the VM's worker process open a host file (a disk image attached to the VM). */
  grantVmAccess(vmId: string, filePath: string): Promise<number>;
}

export interface ComputeCoreLibraries {
  /** computecore.dll, or a fake implementing its documented exports. */
  computecore: string;
  /** The module exporting LocalFree: kernel32.dll. */
  kernel32: string;
}

export const WINDOWS_LIBRARIES: ComputeCoreLibraries = { computecore: 'computecore.dll', kernel32: 'kernel32.dll' };

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type KoffiFn = ((...args: any[]) => any) & { async: (...args: any[]) => void };
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Koffi = any;

interface Types {
  koffi: Koffi;
  eventStruct: unknown;
  eventCallbackPtr: unknown;
}
let types: Types | undefined;

/** koffi type declarations are process-global (names must be unique): made once. */
function koffiTypes(): Types {
  if (types) return types;
  const koffi = require('koffi') as Koffi;
  // typedef struct HCS_EVENT { HCS_EVENT_TYPE Type; PCWSTR EventData; HCS_OPERATION Operation; } HCS_EVENT;
  const eventStruct = koffi.struct('LCOW_HCS_EVENT', { Type: 'uint32', EventData: 'void *', Operation: 'void *' });
  // typedef void (CALLBACK *HCS_EVENT_CALLBACK)(HCS_EVENT *event, void *context);
  const proto = koffi.proto('void __stdcall LCOW_HCS_EVENT_CALLBACK(void *event, void *context)');
  types = { koffi, eventStruct, eventCallbackPtr: koffi.pointer(proto) };
  return types;
}

/**
 * One native callback for every system (as hcsshim does): HCS gets a small integer as the context pointer and
 * the callback looks the receiver up, so no JS object address ever crosses into native code.
 */
const eventReceivers = new Map<number, (e: HcsEvent) => void>();
let nextReceiver = 1;
let nativeCallback: unknown;

function dispatchEvent(eventPtr: bigint | null, context: bigint | null): void {
  if (!eventPtr) return;
  const { koffi, eventStruct } = koffiTypes();
  try {
    const ev = koffi.decode(eventPtr, eventStruct) as { Type: number; EventData: bigint | null };
    const data = ev.EventData ? (koffi.decode.string16(ev.EventData) as string) : '';
    const receiver = eventReceivers.get(Number(context ?? 0n));
    // Exceptions must not reach koffi (HCS would see a failed callback): receivers are guarded.
    receiver?.({ type: ev.Type >>> 0, data });
  } catch {
    // an undecodable event is dropped
  }
}

const loaded = new Map<string, ComputeCore>();

/** Loads computecore (once per library pair). Throws when the DLL is missing (Windows before 1809). */
export function loadComputeCore(libs: ComputeCoreLibraries = WINDOWS_LIBRARIES): ComputeCore {
  const key = `${libs.computecore}\0${libs.kernel32}`;
  const cached = loaded.get(key);
  if (cached) return cached;
  const { koffi, eventCallbackPtr } = koffiTypes();
  const cc = koffi.load(libs.computecore);
  const k32 = libs.kernel32 === libs.computecore ? cc : koffi.load(libs.kernel32);
  const fn = (lib: Koffi, proto: string): KoffiFn => lib.func(proto) as KoffiFn;
  const f = {
    createOperation: fn(cc, 'void * __stdcall HcsCreateOperation(void *context, void *callback)'),
    closeOperation: fn(cc, 'void __stdcall HcsCloseOperation(void *operation)'),
    createComputeSystem: fn(
      cc,
      'int32 __stdcall HcsCreateComputeSystem(str16 id, str16 configuration, void *operation, void *securityDescriptor, _Out_ void **computeSystem)',
    ),
    openComputeSystem: fn(
      cc,
      'int32 __stdcall HcsOpenComputeSystem(str16 id, uint32 requestedAccess, _Out_ void **computeSystem)',
    ),
    closeComputeSystem: fn(cc, 'void __stdcall HcsCloseComputeSystem(void *computeSystem)'),
    startComputeSystem: fn(
      cc,
      'int32 __stdcall HcsStartComputeSystem(void *computeSystem, void *operation, str16 options)',
    ),
    shutDownComputeSystem: fn(
      cc,
      'int32 __stdcall HcsShutDownComputeSystem(void *computeSystem, void *operation, str16 options)',
    ),
    terminateComputeSystem: fn(
      cc,
      'int32 __stdcall HcsTerminateComputeSystem(void *computeSystem, void *operation, str16 options)',
    ),
    modifyComputeSystem: fn(
      cc,
      'int32 __stdcall HcsModifyComputeSystem(void *computeSystem, void *operation, str16 configuration, void *identity)',
    ),
    getComputeSystemProperties: fn(
      cc,
      'int32 __stdcall HcsGetComputeSystemProperties(void *computeSystem, void *operation, str16 propertyQuery)',
    ),
    waitForOperationResult: fn(
      cc,
      'int32 __stdcall HcsWaitForOperationResult(void *operation, uint32 timeoutMs, _Out_ void **resultDocument)',
    ),
    cancelOperation: fn(cc, 'int32 __stdcall HcsCancelOperation(void *operation)'),
    setComputeSystemCallback: fn(
      cc,
      'int32 __stdcall HcsSetComputeSystemCallback(void *computeSystem, uint32 callbackOptions, void *context, LCOW_HCS_EVENT_CALLBACK *callback)',
    ),
    grantVmAccess: fn(cc, 'int32 __stdcall HcsGrantVmAccess(str16 vmId, str16 filePath)'),
    localFree: fn(k32, 'void * __stdcall LocalFree(void *mem)'),
  };
  const call = (g: KoffiFn, ...args: unknown[]): Promise<number> =>
    new Promise((resolve, reject) =>
      g.async(...args, (err: Error | null, hr: number) => (err ? reject(err) : resolve(hr >>> 0))),
    );
  const api: ComputeCore = {
    createOperation: () => (f.createOperation(null, null) as Handle | null) || null,
    closeOperation: (op) => void f.closeOperation(op),
    async createComputeSystem(id, configuration, op) {
      const out: Array<Handle | null> = [null];
      const hr = await call(f.createComputeSystem, id, configuration, op, null, out);
      return { hr, system: out[0] || null };
    },
    async openComputeSystem(id, access) {
      const out: Array<Handle | null> = [null];
      const hr = await call(f.openComputeSystem, id, access, out);
      return { hr, system: out[0] || null };
    },
    closeComputeSystem: async (system) => void (await call(f.closeComputeSystem, system)),
    startComputeSystem: (s, op, o) => call(f.startComputeSystem, s, op, o),
    shutDownComputeSystem: (s, op, o) => call(f.shutDownComputeSystem, s, op, o),
    terminateComputeSystem: (s, op, o) => call(f.terminateComputeSystem, s, op, o),
    modifyComputeSystem: (s, op, c) => call(f.modifyComputeSystem, s, op, c, null),
    getComputeSystemProperties: (s, op, q) => call(f.getComputeSystemProperties, s, op, q),
    async waitForOperationResult(op, timeoutMs) {
      const out: Array<bigint | null> = [null];
      const hr = await call(
        f.waitForOperationResult,
        op,
        Math.min(Math.max(0, Math.floor(timeoutMs)), INFINITE - 1),
        out,
      );
      const ptr = out[0];
      let result: string | undefined;
      if (ptr) {
        try {
          result = koffi.decode.string16(ptr) as string;
        } finally {
          f.localFree(ptr);
        }
      }
      return { hr, result };
    },
    cancelOperation: (op) => call(f.cancelOperation, op),
    async setComputeSystemCallback(system, onEvent) {
      nativeCallback ??= koffi.register(dispatchEvent, eventCallbackPtr);
      const id = nextReceiver++;
      eventReceivers.set(id, onEvent);
      const hr = await call(f.setComputeSystemCallback, system, HCS_EVENT_OPTION_NONE, BigInt(id), nativeCallback);
      const unregister = (): void => void eventReceivers.delete(id);
      if (hr >= 0x80000000) unregister();
      return { hr, unregister };
    },
    grantVmAccess: (vmId, filePath) => call(f.grantVmAccess, vmId, filePath),
  };
  loaded.set(key, api);
  return api;
}
