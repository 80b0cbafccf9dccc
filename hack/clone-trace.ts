// Where a templated pod's start goes: a private containerd (traces to an in-process OTLP receiver), one pod to
// get a template built, then N traced `ctr run --rm true`, each in a new pod whose UVM is restored from the
// template; prints each run's wall time and its trace as a tree. A developer's tool (run it under vmslot):
//   vmslot node dist/hack/clone-trace.js [RUNS] [lcow.toml]
// CLONE_TRACE=0: no tracing (wall times only; tracing costs the guest its OpenTelemetry start-up).
// LCOW_TEMPLATE_DIR (default: a temp dir under /dev/shm, removed at the end) keeps templates between runs.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd } from '../test/helpers/containerd.js';
import { importTestImage } from '../test/helpers/image.js';
import { OtlpReceiver, traceTree } from '../test/helpers/otlp-receiver.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const RUNTIME = 'io.containerd.lcow.v1';

function templateBuilt(dir: string): boolean {
  return readdirSync(dir).some((n) => /^[0-9a-f]{32}$/.test(n) && existsSync(join(dir, n, 'meta.json')));
}

async function main(): Promise<void> {
  const runs = Number(process.argv[2] ?? 3);
  const configPath = process.argv[3];
  const keep = process.env.LCOW_TEMPLATE_DIR;
  const tplDir = keep ?? mkdtempSync('/dev/shm/lcow-clone-trace-');
  const otlp = await OtlpReceiver.start();
  const traced = process.env.CLONE_TRACE !== '0';
  const ns = `lcow-clone-trace-${process.pid}`;
  const cd = await startContainerd({
    extraPath: [join(ROOT, 'bin')],
    logLevel: 'info',
    namespace: ns,
    env: { ...(traced ? otlp.env() : {}), LCOW_TEMPLATE_DIR: tplDir },
  });
  try {
    const image = await importTestImage(cd.address, cd.namespace);
    const cfg = configPath ? ['--runtime-config-path', configPath] : [];
    const run = async (id: string, trace?: string): Promise<number> => {
      const ann = ['--annotation', `io.kubernetes.cri.sandbox-id=${id}`];
      if (trace) ann.push('--annotation', `lcow.traceparent=00-${trace}-00f067aa0ba902b7-01`);
      const t0 = performance.now();
      const r = await cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...cfg, ...ann, image, id, 'true'], {
        timeoutMs: 300_000,
      });
      if (r.code !== 0) throw new Error(`ctr run ${id}: ${r.stderr}\n${cd.log().slice(-3000)}`);
      return performance.now() - t0;
    };
    if (!templateBuilt(tplDir)) {
      const ms = await run(`warm-${process.pid}`);
      process.stdout.write(`first pod (cold, starts the template build): ${ms.toFixed(0)} ms\n`);
      const end = Date.now() + 300_000;
      while (!templateBuilt(tplDir) && Date.now() < end) await new Promise((r) => setTimeout(r, 500));
      if (!templateBuilt(tplDir)) throw new Error(`no template built in ${tplDir}`);
    }
    const walls: number[] = [];
    for (let i = 0; i < runs; i++) {
      const trace = `${process.pid.toString(16).padStart(8, '0')}${i.toString(16).padStart(8, '0')}c10e7ace0000beef`;
      const ms = await run(`c${i}-${process.pid}`, traced ? trace : undefined);
      walls.push(ms);
      if (!traced) {
        process.stdout.write(`run ${i}: ${ms.toFixed(0)} ms wall\n`);
        continue;
      }
      const end = Date.now() + 10_000;
      while (!otlp.trace(trace).some((s) => s.name === 'containerd.task.v2.Task/Delete') && Date.now() < end)
        await new Promise((r) => setTimeout(r, 200));
      process.stdout.write(`\n== run ${i}: ${ms.toFixed(0)} ms wall\n${traceTree(otlp.trace(trace)).text}\n`);
    }
    const sorted = [...walls].sort((a, b) => a - b);
    process.stdout.write(
      `\nwall ms: ${walls.map((w) => w.toFixed(0)).join(' ')}; median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)}\n`,
    );
  } finally {
    await cd.stop();
    await otlp.close();
    if (!keep) rmSync(tplDir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${ns}`, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
