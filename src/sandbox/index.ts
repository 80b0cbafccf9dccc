// Backend selection. The default is one utility VM per pod: `qemu` on Linux, `hcs` (Hyper-V) on Windows. The
// process backend is never a default: it runs containers on the host without a VM boundary, so it must be asked
// for explicitly (LCOW_SANDBOX=process or `sandbox = "process"`).
// Backends are loaded on demand: the shim daemon must not pay for QEMU/9P modules when it runs the process
// backend, nor `delete` for any backend while the serving shim is alive.
import type { Sandbox, SandboxOptions, SandboxRecord } from './sandbox.js';
import { SandboxUnavailableError } from './sandbox.js';

export * from './sandbox.js';

export async function createSandbox(backend: string | undefined, opts: SandboxOptions): Promise<Sandbox> {
  switch (backend) {
    case 'process':
      if (process.platform !== 'linux')
        throw new SandboxUnavailableError(`the process sandbox backend needs Linux (this is ${process.platform})`);
      return new (await import('./process/process.js')).ProcessSandbox(opts);
    case undefined:
    case '':
      if (process.platform === 'win32') return new (await import('./hcs/hcs.js')).HcsSandbox(opts);
      return createSandbox('qemu', opts);
    case 'hcs':
      if (process.platform !== 'win32')
        throw new SandboxUnavailableError(`the hcs sandbox backend needs Windows (this is ${process.platform})`);
      return new (await import('./hcs/hcs.js')).HcsSandbox(opts);
    case 'qemu':
      if (process.platform !== 'linux')
        throw new SandboxUnavailableError(`the qemu sandbox backend needs Linux (this is ${process.platform})`);
      return new (await import('./qemu/qemu.js')).QemuSandbox(opts);
    default:
      throw new SandboxUnavailableError(`unknown sandbox backend ${JSON.stringify(backend)}`);
  }
}

/**
 * Starts the backend's guest agent ahead of the first Create, so its start-up overlaps the shim daemon's module
 * loading. Only the process backend has one to start early; light on purpose (no ttrpc, no protobuf).
 */
export async function prespawnAgent(backend: string, stateDir: string): Promise<void> {
  if (backend === 'process') (await import('./process/spawn.js')).prespawnAgent(stateDir);
}

/** Kills an agent prespawned by prespawnAgent() that no sandbox took (shim exit). */
export async function discardPrespawnedAgent(): Promise<void> {
  (await import('./process/spawn.js')).discardPrespawnedAgent();
}

/** Best-effort teardown from a record (the owning shim is dead). */
export async function cleanupSandboxRecord(rec: SandboxRecord): Promise<void> {
  switch (rec.backend) {
    case 'process':
      return (await import('./process/process.js')).cleanupProcessSandbox(rec);
    case 'qemu':
      return (await import('./qemu/qemu.js')).cleanupQemuSandbox(rec);
    case 'hcs':
      return (await import('./hcs/hcs.js')).cleanupHcsSandbox(rec);
    default:
      throw new Error(`cannot clean up sandbox backend ${rec.backend}`);
  }
}
