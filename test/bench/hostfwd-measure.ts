// Measures the QEMU transport end to end through containerd: a cold `ctr run --rm true` (new UVM), then in one
// pod: 64 MiB dd to a 9P bind mount (conv=fsync) and 500 small-file creates. Prints one JSON line.
// Usage: node dist/test/bench/hostfwd-measure.js
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd } from '../helpers/containerd.js';
import { importTestImage } from '../helpers/image.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const cd = await startContainerd({
  extraPath: [join(ROOT, 'bin')],
  logLevel: 'info',
  namespace: `lcow-meas-${process.pid}`,
});
const hostDir = mkdtempSync(join(tmpdir(), 'lcow-meas-'));
try {
  const image = await importTestImage(cd.address, cd.namespace);
  const t0 = Date.now();
  const cold = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, image, `cold-${process.pid}`, 'true'], {
    timeoutMs: 240_000,
  });
  const coldMs = Date.now() - t0;
  if (cold.code !== 0) throw new Error(cold.stderr);
  const script =
    // The guest clock through /proc/uptime (busybox date has no %N): seconds with two decimals.
    'up() { cut -d" " -f1 /proc/uptime; }; s=$(up); dd if=/dev/zero of=/data/f bs=1M count=64 conv=fsync 2>/dev/null; echo DD $s $(up); ' +
    'mkdir /data/t; s=$(up); i=0; while [ $i -lt 500 ]; do echo x > /data/t/f$i; i=$((i+1)); done; echo FILES $s $(up)';
  const r = await cd.ctr(
    [
      'run',
      '--rm',
      '--runtime',
      RUNTIME,
      '--mount',
      `type=bind,src=${hostDir},dst=/data,options=rbind:rw`,
      image,
      `io-${process.pid}`,
      'sh',
      '-c',
      script,
    ],
    { timeoutMs: 600_000 },
  );
  if (r.code !== 0) throw new Error(r.stderr);
  const span = (tag: string): number => {
    const m = new RegExp(`${tag} ([\\d.]+) ([\\d.]+)`).exec(r.stdout);
    if (!m) throw new Error(`no ${tag} in ${r.stdout}`);
    return Math.round((Number(m[2]) - Number(m[1])) * 1000);
  };
  const dd = span('DD');
  const files = span('FILES');
  console.log(
    JSON.stringify({
      coldRunMs: coldMs,
      dd64MiBMs: dd,
      ddMiBps: +(64000 / dd).toFixed(1),
      files500Ms: files,
      filesPerSec: +(500000 / files).toFixed(0),
    }),
  );
} finally {
  await cd.stop();
  rmSync(hostDir, { recursive: true, force: true });
}
