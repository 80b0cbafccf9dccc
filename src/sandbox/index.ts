// Backend selection. The process backend is never a default: it runs containers on the host without a VM
// boundary, so it must be asked for explicitly (LCOW_SANDBOX=process or `sandbox = "process"`).
import type { Sandbox, SandboxOptions, SandboxRecord } from './sandbox.js';
import { SandboxUnavailableError } from './sandbox.js';
import { ProcessSandbox, cleanupProcessSandbox } from './process/process.js';

export * from './sandbox.js';

export function createSandbox(backend: string | undefined, opts: SandboxOptions): Sandbox {
  switch (backend) {
    case 'process':
      return new ProcessSandbox(opts);
    case undefined:
    case '':
    case 'qemu':
      throw new SandboxUnavailableError(
        'no VM sandbox backend is available: the qemu backend is not built yet; the unisolated development ' +
          'backend runs only when configured explicitly (LCOW_SANDBOX=process in the shim environment or ' +
          'sandbox = "process" in the runtime config)',
      );
    default:
      throw new SandboxUnavailableError(`unknown sandbox backend ${JSON.stringify(backend)}`);
  }
}

/** Best-effort teardown from a record (the owning shim is dead). */
export async function cleanupSandboxRecord(rec: SandboxRecord): Promise<void> {
  switch (rec.backend) {
    case 'process':
      return cleanupProcessSandbox(rec);
    default:
      throw new Error(`cannot clean up sandbox backend ${rec.backend}`);
  }
}
