// What an idle templated pod's QEMU holds: starts N idle pods (`sleep 3600`, each its own UVM restored from a
// template) in a private containerd and prints, per QEMU, its PSS by mapping kind from /proc/<pid>/smaps: the
// template's RAM file (private copy-on-write pages), anonymous mappings (TCG's code cache, QEMU's heap),
// the rest; and the shim's PSS. A developer's tool (run it under vmslot):
//   vmslot node dist/hack/pod-memory.js [PODS] [lcow.toml]
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd } from '../test/helpers/containerd.js';
import { importTestImage } from '../test/helpers/image.js';
import { podProcesses, removeIdlePods, startIdlePods } from '../test/helpers/idle-pods.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const RUNTIME = 'io.containerd.lcow.v1';

interface Breakdown {
  [kind: string]: { pss: number; rss: number; privateDirty: number; thp: number };
}

/** PSS/RSS/Private_Dirty in KiB of each mapping kind of `pid`. */
function smapsBreakdown(pid: number): Breakdown {
  const out: Breakdown = {};
  let kind = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1]!.trim();
      const size = line
        .split(' ')[0]!
        .split('-')
        .map((h) => parseInt(h, 16));
      const mib = (size[1]! - size[0]!) / 2 ** 20;
      kind =
        name.endsWith('/mem') || name.includes('/mem (deleted)')
          ? 'template RAM file'
          : name === '[heap]'
            ? 'heap'
            : name === ''
              ? mib >= 16
                ? `anon >=16MiB (${Math.round(mib)} MiB)`
                : 'anon small'
              : name.startsWith('/')
                ? name.includes('qemu') || name.includes('.so')
                  ? 'binaries/libs'
                  : name
                : name;
      out[kind] ??= { pss: 0, rss: 0, privateDirty: 0, thp: 0 };
      continue;
    }
    const m = /^(Pss|Rss|Private_Dirty|AnonHugePages):\s+(\d+) kB/.exec(line);
    if (m && kind) {
      const k = m[1] === 'Pss' ? 'pss' : m[1] === 'Rss' ? 'rss' : m[1] === 'AnonHugePages' ? 'thp' : 'privateDirty';
      out[kind]![k] += Number(m[2]);
    }
  }
  return out;
}

async function main(): Promise<void> {
  const pods = Number(process.argv[2] ?? 3);
  const configPath = process.argv[3];
  const keep = process.env.LCOW_TEMPLATE_DIR;
  const tplDir = keep ?? mkdtempSync('/dev/shm/lcow-pod-memory-');
  const ns = `lcow-pod-memory-${process.pid}`;
  const cd = await startContainerd({
    extraPath: [join(ROOT, 'bin')],
    logLevel: 'info',
    namespace: ns,
    env: { LCOW_TEMPLATE_DIR: tplDir },
  });
  const ids: string[] = [];
  try {
    const image = await importTestImage(cd.address, cd.namespace);
    const cfg = configPath ? ['--runtime-config-path', configPath] : [];
    const built = (): boolean =>
      readdirSync(tplDir).some((n) => /^[0-9a-f]{32}$/.test(n) && existsSync(join(tplDir, n, 'meta.json')));
    if (!built()) {
      const r = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...cfg, image, `warm-${process.pid}`, 'true'], {
        timeoutMs: 300_000,
      });
      if (r.code !== 0) throw new Error(r.stderr);
      const end = Date.now() + 300_000;
      while (!built() && Date.now() < end) await new Promise((r2) => setTimeout(r2, 500));
    }
    const wanted = Array.from({ length: pods }, (_, i) => `idle${i}-${process.pid}`);
    ids.push(...wanted);
    await startIdlePods(cd, image, wanted, cfg);
    await new Promise((r) => setTimeout(r, Number(process.env.SETTLE_MS ?? 5000)));
    for (const id of ids) {
      const { qemu, shim } = podProcesses(id);
      const b = smapsBreakdown(qemu);
      const total = Object.values(b).reduce((s, v) => s + v.pss, 0);
      const shimPss = Object.values(smapsBreakdown(shim)).reduce((s, v) => s + v.pss, 0);
      process.stdout.write(
        `pod ${id}: QEMU PSS ${(total / 1024).toFixed(1)} MiB, shim PSS ${(shimPss / 1024).toFixed(1)} MiB\n`,
      );
      for (const [k, v] of Object.entries(b)
        .sort((x, y) => y[1].pss - x[1].pss)
        .slice(0, 8))
        process.stdout.write(
          `   ${k}: pss ${(v.pss / 1024).toFixed(1)} rss ${(v.rss / 1024).toFixed(1)} private_dirty ${(v.privateDirty / 1024).toFixed(1)} thp ${(v.thp / 1024).toFixed(1)} MiB\n`,
        );
    }
  } finally {
    await removeIdlePods(cd, ids);
    await cd.stop();
    if (!keep) rmSync(tplDir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${ns}`, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
