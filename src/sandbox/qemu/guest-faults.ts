// Console lines that mean a UVM cannot boot, turned into an error that says why and what to change. Without this,
// a guest image too big for the UVM's memory booted half-unpacked ("Initramfs unpacking failed: write error") and
// failed much later with an unrelated error (a segfaulting agent, or runc missing files inside the guest).
import { MEMORY_ANNOTATION } from '../sizing.js';

const MORE_MEMORY = `give the pod more memory (annotation ${MEMORY_ANNOTATION}, or memory_mb in the runtime config)`;

/**
 * Why the boot cannot succeed, when `line` (from the UVM's console) says so; undefined for every other line. The
 * guest is untrusted: the answer only ever shortens a boot that would fail anyway, and quotes the line as data.
 */
export function bootFault(line: string, memoryMiB: number): string | undefined {
  if (/Initramfs unpacking failed/.test(line))
    return (
      `the guest image does not fit in the UVM's ${memoryMiB} MiB of memory: the kernel could not unpack the ` +
      `initrd (${quote(line)}); ${MORE_MEMORY}, or boot from the read-only root image (the default guest image's ` +
      'rootfs.erofs, config `rootfs`), which is not held in guest memory'
    );
  if (/Kernel panic - not syncing: (Out of memory|System is deadlocked on memory)/.test(line))
    return `the UVM ran out of its ${memoryMiB} MiB of memory while booting (${quote(line)}); ${MORE_MEMORY}`;
  if (/^LCOW fatal /.test(line)) return `the UVM's init failed: ${quote(line)}`;
  return undefined;
}

function quote(line: string): string {
  const s = line.replace(/^\[\s*[\d.]+\]\s*/, '').trim();
  return JSON.stringify(s.length > 200 ? `${s.slice(0, 200)}...` : s);
}
