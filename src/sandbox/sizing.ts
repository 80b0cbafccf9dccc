// UVM sizing shared by the VM backends (QEMU on Linux, HCS on Windows): per-pod annotations with hcsshim's
// names win over the runtime config TOML, which wins over the backend's defaults. Existing Kubernetes manifests
// written for hcsshim's runhcs shim keep working unchanged.
import { join } from 'node:path';
import { INSTALL_ROOT } from '../util/install.js';

export const MEMORY_ANNOTATION = 'io.microsoft.virtualmachine.computetopology.memory.sizeinmb';
export const CPU_ANNOTATION = 'io.microsoft.virtualmachine.computetopology.processor.count';
/** The smallest UVM the guest image boots in (node + runc + the agent). */
export const MIN_MEMORY_MIB = 256;

/** A positive integer from a TOML value or an annotation string; undefined when absent or not usable. */
export function positiveInt(v: unknown): number | undefined {
  const n = typeof v === 'string' ? Number(v.trim()) : typeof v === 'number' ? v : NaN;
  return Number.isFinite(n) && n > 0 ? Math.floor(n) : undefined;
}

/**
 * The backend's table of the runtime config (`[qemu]`, `[hcs]`) merged over the top level: `pick(k)` reads the
 * table first, then the top-level key, so `memory_mb = 512` applies to every backend.
 */
export function configPicker(runtime: Record<string, unknown>, table: string): (key: string) => unknown {
  const t = runtime[table];
  const section = (typeof t === 'object' && t !== null ? t : {}) as Record<string, unknown>;
  return (key) => section[key] ?? runtime[key];
}

export interface UvmSizing {
  memoryMiB: number;
  /** 0: the backend chooses. */
  cpus: number;
}

/** Annotations, then the runtime config (`memory_mb`, `cpus`), then `defaults`. */
export function uvmSizing(
  pick: (key: string) => unknown,
  annotations: Record<string, string>,
  defaults: { memoryMiB: number; cpus: number },
): UvmSizing {
  const memoryMiB = positiveInt(annotations[MEMORY_ANNOTATION]) ?? positiveInt(pick('memory_mb')) ?? defaults.memoryMiB;
  if (memoryMiB < MIN_MEMORY_MIB)
    throw new Error(`UVM memory ${memoryMiB} MiB is below the ${MIN_MEMORY_MIB} MiB minimum`);
  return { memoryMiB, cpus: positiveInt(annotations[CPU_ANNOTATION]) ?? positiveInt(pick('cpus')) ?? defaults.cpus };
}

/** Where the guest image (vmlinuz, initrd.img) is: LCOW_GUEST_DIR, else <install root>/build/guest. */
export function defaultGuestDir(): string {
  return process.env.LCOW_GUEST_DIR || join(INSTALL_ROOT, 'build', 'guest');
}
