// Shared setup for the shim integration tests: a private containerd with our bin/ on PATH and the
// process sandbox backend enabled, the busybox test image, and leftover checks.
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';

export const RUNTIME = 'io.containerd.lcow.v1';
const here = fileURLToPath(new URL('.', import.meta.url));
export const BIN_DIR = resolve(here, '../../../../bin');

export async function startLcowContainerd(): Promise<{ cd: PrivateContainerd; image: string }> {
  const cd = await startContainerd({ extraPath: [BIN_DIR], env: { LCOW_SANDBOX: 'process' } });
  const image = await importTestImage(cd.address, cd.namespace);
  return { cd, image };
}

/** Processes whose command line mentions one of our binaries (or runc for our state dirs). */
export function ourProcesses(): string[] {
  const out: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (/containerd-shim-lcow|lcow-agent|\/run\/lcow\//.test(cmd)) out.push(`${p}: ${cmd.trim()}`);
  }
  return out;
}

export function ourMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => /\/run\/lcow\/|io\.containerd\.runtime\.v2\.task\/testing/.test(l));
}

export function lcowState(): string[] {
  const dir = '/run/lcow/testing';
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** Waits until `check` returns an empty list (processes exit asynchronously). */
export async function eventually(check: () => string[], timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = check();
    if (r.length === 0 || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}
