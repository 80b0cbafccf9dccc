// `make bench`: runs every suite (or those named on the command line), prints a table, writes JSON.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { formatTable, formatTargets, type BenchRow, type BenchSuite } from './harness.js';

// Suites register here as they are written; each module exports `suite: BenchSuite`.
const suiteModules: Array<() => Promise<{ suite: BenchSuite }>> = [
  () => import('./ttrpc.js'),
  () => import('./telemetry.js'),
  () => import('./p9-local.js'),
  () => import('./p9-raw.js'),
  () => import('./shim.js'),
  () => import('./uvm.js'),
  () => import('./targets.js'),
  () => import('./p9-kernel.js'),
  () => import('./p9-kernel.js').then((m) => ({ suite: m.transportSuite })),
  () => import('./cri.js'),
  () => import('./apps.js'),
  () => import('./rootfs-cache.js'),
];

async function main(): Promise<number> {
  const wanted = new Set(process.argv.slice(2));
  const rows: BenchRow[] = [];
  const skipped: Array<{ suite: string; reason: string }> = [];
  let failed = 0;
  for (const load of suiteModules) {
    const { suite } = await load();
    if (wanted.size > 0 && !wanted.has(suite.name)) continue;
    const reason = await suite.unavailable?.();
    if (reason !== undefined) {
      skipped.push({ suite: suite.name, reason });
      continue;
    }
    process.stderr.write(`bench: running ${suite.name}...\n`);
    try {
      rows.push(...(await suite.run()));
    } catch (err) {
      failed++;
      process.stderr.write(`bench: ${suite.name} failed: ${err instanceof Error ? err.stack : String(err)}\n`);
    }
  }
  process.stdout.write(formatTable(rows) + '\n');
  const targets = formatTargets(rows);
  if (targets) process.stdout.write(`\nTargets (issue 11; "today" = before templates, TCG, this host):\n${targets}\n`);
  for (const s of skipped) process.stdout.write(`not run: ${s.suite}: ${s.reason}\n`);
  const dir = 'bench-results';
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  const json = JSON.stringify({ date: new Date().toISOString(), host: process.platform, rows, skipped }, null, 2);
  writeFileSync(file, json);
  writeFileSync(join(dir, 'latest.json'), json);
  process.stdout.write(`results: ${file}\n`);
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => (process.exitCode = code),
  (err: unknown) => {
    process.stderr.write(`bench runner failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
