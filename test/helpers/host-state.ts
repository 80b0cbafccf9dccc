// What a test left on the host, read from /proc and the filesystem, limited to what the test itself made:
// other people run shims, QEMUs and containerds on this machine at the same time, so every scan is scoped by
// a namespace or a name the caller owns (include process.pid in them).
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';

/** [pid, argv] of every process (those that vanish mid-scan are skipped). */
function processes(): Array<[number, string[]]> {
  const out: Array<[number, string[]]> = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      out.push([Number(p), readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')]);
    } catch {
      // gone
    }
  }
  return out;
}

/** Processes whose argv satisfies `pred` (the test process itself included only if it matches). */
export function pidsWhere(pred: (argv: string[]) => boolean): number[] {
  return processes()
    .filter(([, argv]) => pred(argv))
    .map(([pid]) => pid);
}

/** The QEMU process of pod `id` (the VM's -name `lcow-<id>` is cut to 64 bytes, as the shim does). */
export function qemuPidsOfPod(id: string): number[] {
  const name = `lcow-${id}`.slice(0, 64).slice('lcow-'.length);
  return qemuPids((p) => p === name);
}

/** QEMU processes of the pods whose id satisfies `pod` (the shim names each VM `lcow-<pod id>`). */
export function qemuPids(pod: (id: string) => boolean): number[] {
  return processes()
    .filter(([, argv]) => argv[0]?.startsWith('qemu-system'))
    .filter(([, argv]) => {
      const name = argv[argv.indexOf('-name') + 1] ?? '';
      return name.startsWith('lcow-') && pod(name.slice('lcow-'.length));
    })
    .map(([pid]) => pid);
}

/** Shim daemons serving containerd namespace `ns`. */
export function shimPids(ns: string): number[] {
  return processes()
    .filter(([, argv]) => argv.some((a) => a.includes('containerd-shim-lcow-v1')) && argv.includes(ns))
    .map(([pid]) => pid);
}

/** Any process (shim, agent, runc, QEMU) whose command line mentions `needle`. */
export function processesMentioning(needle: string): string[] {
  return processes()
    .filter(([pid, argv]) => pid !== process.pid && argv.join(' ').includes(needle))
    .map(([pid, argv]) => `${pid}: ${argv.join(' ').trim()}`);
}

export function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}

/** The fds of `pid` as `fd -> target` (for a failure message). */
export function fdTargets(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`).map((fd) => {
      try {
        return `${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`;
      } catch {
        return `${fd} -> ?`;
      }
    });
  } catch {
    return [];
  }
}

export function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return -1;
  }
}

export function memAvailableMiB(): number {
  const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Math.round(Number(m[1]) / 1024) : -1;
}

/** Mount points (this process's mount namespace) whose path contains one of `needles`. */
export function mountsMatching(...needles: string[]): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((mp) => mp !== '' && needles.some((n) => mp.includes(n)));
}

export function dirEntries(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** Polls `cond` until it holds or `ms` passed; returns the last result. */
export async function waitFor(cond: () => boolean | Promise<boolean>, ms: number, stepMs = 200): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}
