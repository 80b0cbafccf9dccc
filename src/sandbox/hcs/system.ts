// One HCS compute system (our utility VM) over the raw computecore API: every tracked call runs as an HCS
// operation (create, call, HcsWaitForOperationResult with a deadline, HcsCancelOperation when the deadline
// passed, close), shutdown/terminate are submitted without waiting (their completion is the SystemExited event),
// and the exit notification settles `exited` exactly once.
import { GENERIC_ALL, HcsEventType, type ComputeCore, type Handle, type HcsEvent } from './computecore.js';
import { HCS_E_OPERATION_TIMEOUT, HcsError, failed, isAlreadyStopping, isNotFound } from './hresult.js';
import type {
  ComputeSystem,
  ModifySettingRequest,
  PropertyQuery,
  SystemExitStatus,
  SystemProperties,
} from './schema.js';

/** How long a cancelled operation may take to settle before its handle is closed anyway. */
const CANCEL_SETTLE_MS = 5000;

export class HcsTimeoutError extends Error {
  override readonly name = 'HcsTimeoutError';
}

export type SystemExit =
  { kind: 'exited'; status: SystemExitStatus | undefined; unexpected: boolean } | { kind: 'service-disconnect' };

/**
 * Runs one tracked HCS call: `invoke(op)` starts it, the result document comes from HcsWaitForOperationResult
 * within `timeoutMs`; past it the operation is cancelled and HcsTimeoutError thrown. The operation handle is
 * always closed, but never while a wait on it is still in flight.
 */
export async function runOperation(
  api: ComputeCore,
  name: string,
  timeoutMs: number,
  invoke: (op: Handle) => Promise<number>,
  systemId?: string,
): Promise<string | undefined> {
  const op = api.createOperation();
  if (!op) throw new HcsError(`${name}: HcsCreateOperation`, 0x8007000e, undefined, systemId);
  try {
    const hr = await invoke(op);
    if (failed(hr)) throw new HcsError(name, hr, undefined, systemId);
    const r = await api.waitForOperationResult(op, timeoutMs);
    if (r.hr === HCS_E_OPERATION_TIMEOUT) {
      await api.cancelOperation(op);
      // Only waits for the cancelled call to settle before the handle is closed; the timeout is what is reported.
      await api.waitForOperationResult(op, CANCEL_SETTLE_MS).catch(() => undefined);
      throw new HcsTimeoutError(
        `${name}${systemId ? ` ${systemId}` : ''}: no result within ${timeoutMs} ms (cancelled)`,
      );
    }
    if (failed(r.hr)) throw new HcsError(name, r.hr, r.result, systemId);
    return r.result;
  } finally {
    api.closeOperation(op);
  }
}

/** Submits a call whose completion is observed elsewhere (shutdown, terminate: the exit event). */
async function submitOperation(
  api: ComputeCore,
  name: string,
  invoke: (op: Handle) => Promise<number>,
  systemId: string,
): Promise<number> {
  const op = api.createOperation();
  if (!op) throw new HcsError(`${name}: HcsCreateOperation`, 0x8007000e, undefined, systemId);
  try {
    return await invoke(op);
  } finally {
    // The HCS v2 contract lets a submitted operation run on after its handle is closed (result discarded).
    api.closeOperation(op);
  }
}

export interface HcsTimeouts {
  createMs: number;
  startMs: number;
  modifyMs: number;
  propertiesMs: number;
}

/** hcsshim's defaults (internal/timeout: SystemCreate and SystemStart 4 min); queries are quick. */
export const DEFAULT_TIMEOUTS: HcsTimeouts = {
  createMs: 240_000,
  startMs: 240_000,
  modifyMs: 60_000,
  propertiesMs: 30_000,
};

export class HcsComputeSystem {
  private handle: Handle | null;
  private unregister: (() => void) | undefined;
  private exitInfo: SystemExit | undefined;
  private readonly exitWaiters: Array<(e: SystemExit) => void> = [];
  /** Settles once: the VM exited (any way), or HCS itself went away. */
  readonly exited: Promise<SystemExit>;

  private constructor(
    private readonly api: ComputeCore,
    readonly id: string,
    handle: Handle,
    private readonly timeouts: HcsTimeouts,
  ) {
    this.handle = handle;
    this.exited = new Promise((resolve) => this.exitWaiters.push(resolve));
  }

  /** HcsCreateComputeSystem with `doc`, then the exit callback. On failure nothing is left behind. */
  static async create(
    api: ComputeCore,
    id: string,
    doc: ComputeSystem,
    timeouts: HcsTimeouts = DEFAULT_TIMEOUTS,
  ): Promise<HcsComputeSystem> {
    let system: Handle | null = null;
    await runOperation(
      api,
      'HcsCreateComputeSystem',
      timeouts.createMs,
      async (op) => {
        const r = await api.createComputeSystem(id, JSON.stringify(doc), op);
        system = r.system;
        return r.hr;
      },
      id,
    ).catch(async (err: unknown) => {
      if (system) {
        // Best effort under the create error, which is the one reported (the handle is closed either way).
        await submitOperation(
          api,
          'HcsTerminateComputeSystem',
          (op) => api.terminateComputeSystem(system!, op, null),
          id,
        ).catch(() => 0);
        await api.closeComputeSystem(system);
      }
      throw err;
    });
    if (!system) throw new HcsError('HcsCreateComputeSystem returned no handle', 0x80004005, undefined, id);
    const cs = new HcsComputeSystem(api, id, system, timeouts);
    try {
      await cs.registerCallback();
    } catch (err) {
      // Best effort under registerCallback's error, which is the one reported; close() follows either way.
      await cs.terminate().catch(() => undefined);
      await cs.close();
      throw err;
    }
    return cs;
  }

  /** HcsOpenComputeSystem: a system another (perhaps dead) shim created. Undefined when it does not exist. */
  static async open(
    api: ComputeCore,
    id: string,
    timeouts: HcsTimeouts = DEFAULT_TIMEOUTS,
  ): Promise<HcsComputeSystem | undefined> {
    const r = await api.openComputeSystem(id, GENERIC_ALL);
    if (isNotFound(r.hr)) return undefined;
    if (failed(r.hr) || !r.system) throw new HcsError('HcsOpenComputeSystem', r.hr, undefined, id);
    const cs = new HcsComputeSystem(api, id, r.system, timeouts);
    try {
      await cs.registerCallback();
    } catch (err) {
      await cs.close();
      throw err;
    }
    return cs;
  }

  private async registerCallback(): Promise<void> {
    const r = await this.api.setComputeSystemCallback(this.handleOrThrow('HcsSetComputeSystemCallback'), (e) =>
      this.onEvent(e),
    );
    if (failed(r.hr)) throw new HcsError('HcsSetComputeSystemCallback', r.hr, undefined, this.id);
    this.unregister = r.unregister;
  }

  private onEvent(e: HcsEvent): void {
    if (e.type === HcsEventType.SystemExited) {
      let status: SystemExitStatus | undefined;
      try {
        status = e.data ? (JSON.parse(e.data) as SystemExitStatus) : undefined;
      } catch {
        status = undefined;
      }
      this.settle({ kind: 'exited', status, unexpected: status?.ExitType === 'UnexpectedExit' });
    } else if (e.type === HcsEventType.ServiceDisconnect) {
      // vmcompute went away: no further events will come for this handle.
      this.settle({ kind: 'service-disconnect' });
    }
  }

  private settle(e: SystemExit): void {
    if (this.exitInfo) return;
    this.exitInfo = e;
    for (const w of this.exitWaiters.splice(0)) w(e);
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }

  private handleOrThrow(op: string): Handle {
    if (!this.handle) throw new Error(`${op} ${this.id}: the compute system handle is closed`);
    return this.handle;
  }

  async start(): Promise<void> {
    const h = this.handleOrThrow('HcsStartComputeSystem');
    await runOperation(
      this.api,
      'HcsStartComputeSystem',
      this.timeouts.startMs,
      (op) => this.api.startComputeSystem(h, op, null),
      this.id,
    );
  }

  /** Asks the guest to shut down (the Hyper-V shutdown integration service). Completion: `exited`. */
  async shutdown(): Promise<void> {
    if (!this.handle || this.exitInfo) return;
    const h = this.handle;
    const hr = await submitOperation(
      this.api,
      'HcsShutDownComputeSystem',
      (op) => this.api.shutDownComputeSystem(h, op, null),
      this.id,
    );
    if (failed(hr) && !isAlreadyStopping(hr) && !isNotFound(hr))
      throw new HcsError('HcsShutDownComputeSystem', hr, undefined, this.id);
  }

  /** Powers the VM off. Completion: `exited`. Idempotent. */
  async terminate(): Promise<void> {
    if (!this.handle || this.exitInfo) return;
    const h = this.handle;
    const hr = await submitOperation(
      this.api,
      'HcsTerminateComputeSystem',
      (op) => this.api.terminateComputeSystem(h, op, null),
      this.id,
    );
    if (failed(hr) && !isAlreadyStopping(hr) && !isNotFound(hr))
      throw new HcsError('HcsTerminateComputeSystem', hr, undefined, this.id);
  }

  async modify(request: ModifySettingRequest): Promise<void> {
    const h = this.handleOrThrow('HcsModifyComputeSystem');
    const body = JSON.stringify(request);
    await runOperation(
      this.api,
      'HcsModifyComputeSystem',
      this.timeouts.modifyMs,
      (op) => this.api.modifyComputeSystem(h, op, body),
      this.id,
    );
  }

  async properties(query: PropertyQuery): Promise<SystemProperties> {
    const h = this.handleOrThrow('HcsGetComputeSystemProperties');
    const q = JSON.stringify(query);
    const doc = await runOperation(
      this.api,
      'HcsGetComputeSystemProperties',
      this.timeouts.propertiesMs,
      (op) => this.api.getComputeSystemProperties(h, op, q),
      this.id,
    );
    if (!doc) throw new Error(`HcsGetComputeSystemProperties ${this.id}: empty result document`);
    const v = JSON.parse(doc) as unknown;
    if (typeof v !== 'object' || v === null) throw new Error(`HcsGetComputeSystemProperties ${this.id}: not an object`);
    return v as SystemProperties;
  }

  /** Waits for `exited` at most `ms`; true when it came. */
  async waitExited(ms: number): Promise<boolean> {
    if (this.exitInfo) return true;
    let timer: NodeJS.Timeout | undefined;
    const r = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
    clearTimeout(timer);
    return r;
  }

  /**
   * Releases the handle (no more events after this). With ShouldTerminateOnLastHandleClosed in the document,
   * closing the last handle also ends a still running VM.
   */
  async close(): Promise<void> {
    const h = this.handle;
    if (!h) return;
    this.handle = null;
    await this.api.closeComputeSystem(h);
    this.unregister?.();
  }
}
