// Rootfs cache bench: what v9fs cache=loose on the container rootfs share buys (config rootfs_share_cache,
// default loose) against the uncached cache=mmap that bind mounts use. The same WordPress image (Apache, mod_php,
// MariaDB: thousands of files read from the rootfs) in two pods, one per mode, the data on a bind mount in both:
// a stat of every file of /usr (twice: the second pass is what a cached lookup costs), mariadb-install-db,
// MariaDB and Apache start, WordPress's web installer, front page views. Time per phase and the rootfs share's
// 9P requests per mode; the ratio is mmap / loose (above 1: loose is faster).
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable } from '../helpers/apps.js';
import { WP_DATABASE, WP_INIT, WP_START, WP_STOP, WP_WEB_INSTALL } from '../helpers/app-scripts.js';
import type { BenchRow, BenchSuite } from './harness.js';

const VIEWS = Number(process.env.LCOW_BENCH_WP_VIEWS ?? 5);
type Mode = 'loose' | 'mmap';
/** Run order (LCOW_BENCH_ROOTFS_ORDER=mmap,loose to swap it: on a shared host, load drifts between the two). */
const MODES: Mode[] = (process.env.LCOW_BENCH_ROOTFS_ORDER ?? 'loose,mmap')
  .split(',')
  .filter((m): m is Mode => m === 'loose' || m === 'mmap');

const PHASES: Array<[string, string]> = [
  ['stat every file of /usr (cold)', 'find /usr -xdev -printf "%s %m\\n" | wc -l'],
  ['stat every file of /usr (again)', 'find /usr -xdev -printf "%s %m\\n" | wc -l'],
  ['mariadb-install-db (data on the share)', WP_INIT],
  ['MariaDB + Apache start, first PHP page', WP_START],
  ['WordPress web install', `${WP_DATABASE} && [ "$(${WP_WEB_INSTALL})" = 200 ]`],
  [
    `${VIEWS} front page views`,
    `for i in $(seq ${VIEWS}); do curl -fsS -o /dev/null http://localhost/ || exit 1; done`,
  ],
];

export const suite: BenchSuite = {
  name: 'rootfs-cache',
  unavailable: async () => appsUnavailable(),
  async run(): Promise<BenchRow[]> {
    if (new Set(MODES).size !== 2) throw new Error('LCOW_BENCH_ROOTFS_ORDER must name loose and mmap');
    const h = new AppHarness('rootfs-bench');
    const tmp = mkdtempSync(join(tmpdir(), 'lcow-bench-rootfs-'));
    const secs: Record<Mode, number[]> = { loose: [], mmap: [] };
    const requests: Record<Mode, number> = { loose: 0, mmap: 0 };
    try {
      await h.start();
      const image = await appImage(h.cd, 'wordpress');
      for (const mode of MODES) {
        const config = join(tmp, `${mode}.toml`);
        writeFileSync(config, `rootfs_share_cache = "${mode}"\n`);
        const data = join(tmp, `data-${mode}`);
        mkdirSync(data); // each mode starts from an empty data directory
        chmodSync(data, 0o755);
        const pod = await h.startPod(image, [{ src: data, dst: '/data' }], {
          memoryMiB: 1536,
          runtimeConfigPath: config,
        });
        for (const [name, script] of PHASES) {
          const t0 = Date.now();
          await h.sh(pod, script, 1_200_000);
          secs[mode].push((Date.now() - t0) / 1000);
          process.stderr.write(`      rootfs ${mode}: ${name} ${secs[mode].at(-1)!.toFixed(1)} s\n`);
        }
        const rootfs = (await h.p9Stats(pod)).find((s) => s.hostPath.endsWith('/rootfs'));
        requests[mode] = Object.values(rootfs?.ops ?? {}).reduce((a, o) => a + o.count, 0);
        await h.sh(pod, WP_STOP);
        await h.removePod(pod);
      }
    } finally {
      await h.close();
      rmSync(tmp, { recursive: true, force: true });
    }
    const rows: BenchRow[] = PHASES.map(([name], i) => ({
      suite: 'rootfs-cache',
      name: `WordPress image: ${name}, rootfs cache=loose`,
      value: secs.loose[i]!,
      unit: 's',
      extra: { 'cache=mmap': secs.mmap[i]!, 'mmap / loose': secs.mmap[i]! / secs.loose[i]! },
    }));
    const total = (m: Mode): number => secs[m].reduce((a, s) => a + s, 0);
    rows.push(
      {
        suite: 'rootfs-cache',
        name: 'WordPress image: all phases, rootfs cache=loose',
        value: total('loose'),
        unit: 's',
        extra: { 'cache=mmap': total('mmap'), 'mmap / loose': total('mmap') / total('loose') },
      },
      {
        suite: 'rootfs-cache',
        name: 'WordPress image: 9P requests on the rootfs share (pod start to last phase), cache=loose',
        value: requests.loose,
        unit: 'req',
        extra: { 'cache=mmap': requests.mmap, 'mmap / loose': requests.mmap / requests.loose },
      },
    );
    return rows;
  },
};
