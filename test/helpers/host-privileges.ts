// What a guest may never leave on the host: setuid/setgid files, device nodes, FIFOs, sockets, and security.*,
// trusted.* or system.* extended attributes. Used by the attack suite and the kernel-client battery.
import { lstatSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { lgetxattr, llistxattr } from '../../src/util/syscalls.js';

/** Privileged objects under `dir` on the host, except the paths in `allowed` (made by the test itself). */
export function hostPrivileges(dir: string, allowed: Set<string> = new Set()): string[] {
  const found: string[] = [];
  const names = Buffer.alloc(65536);
  const visit = (p: string): void => {
    const st = lstatSync(p);
    if (!allowed.has(p)) {
      if (st.isFile() && st.mode & 0o6000) found.push(`${p}: setuid/setgid (mode ${st.mode.toString(8)})`);
      if (st.isCharacterDevice() || st.isBlockDevice() || st.isFIFO() || st.isSocket())
        found.push(`${p}: special file`);
      if (!st.isSymbolicLink()) {
        const n = llistxattr(p, names);
        for (const name of names.subarray(0, n).toString().split('\0')) {
          if (/^(security|trusted|system)\./.test(name)) found.push(`${p}: xattr ${name}`);
        }
      }
    }
    if (st.isDirectory()) for (const e of readdirSync(p)) visit(join(p, e));
  };
  visit(dir);
  return found;
}

/** A host extended attribute's value, or undefined when absent. */
export function hostXattr(p: string, name: string): Buffer | undefined {
  try {
    const buf = Buffer.alloc(65536);
    return buf.subarray(0, lgetxattr(p, name, buf));
  } catch {
    return undefined;
  }
}
