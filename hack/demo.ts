// `make demo`: a private containerd with our runtime on PATH and no sandbox configuration (so the default, the
// QEMU utility VM, is used), the local busybox image, and one `ctr run` that shows the guest kernel and a
// file round trip through a 9P bind mount. Cleans up everything, on failure too.
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, type PrivateContainerd } from '../test/helpers/containerd.js';
import { importTestImage } from '../test/helpers/image.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const say = (s: string): void => void process.stdout.write(`demo: ${s}\n`);

function qemuProcesses(): string[] {
  const out: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.startsWith('qemu-system') && cmd.includes('-name lcow-')) out.push(`${p}: ${cmd.slice(0, 80)}`);
    } catch {
      // gone
    }
  }
  return out;
}

async function main(): Promise<number> {
  const guestKernel = readFileSync(join(ROOT, 'build/guest/kernel-version'), 'utf8').trim();
  const hostDir = mkdtempSync(join(tmpdir(), 'lcow-demo-'));
  writeFileSync(join(hostDir, 'hello.txt'), 'hello from the host\n');
  let cd: PrivateContainerd | undefined;
  try {
    say('starting a private containerd (runtime io.containerd.lcow.v1, no sandbox configured: QEMU UVM by default)');
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'info' });
    const image = await importTestImage(cd.address, cd.namespace);
    say(`image ${image}; host kernel ${release()}, guest kernel ${guestKernel}`);
    const args = [
      'run',
      '--rm',
      '--runtime',
      'io.containerd.lcow.v1',
      '--mount',
      `type=bind,src=${hostDir},dst=/data,options=rbind:rw`,
      image,
      'demo',
      'sh',
      '-c',
      'uname -r; cat /data/hello.txt; echo from-guest > /data/out.txt',
    ];
    say(`ctr ${args.join(' ')}`);
    const t0 = Date.now();
    const r = await cd.ctr(args, { timeoutMs: 300_000 });
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    process.stdout.write(r.stdout.replace(/^/gm, '  | '));
    if (r.stderr.trim()) process.stdout.write(r.stderr.replace(/^/gm, '  ! '));
    if (r.code !== 0) {
      process.stdout.write(cd.log().split('\n').slice(-40).join('\n') + '\n');
      throw new Error(`ctr run exited with ${r.code}`);
    }
    const lines = r.stdout.trim().split('\n');
    if (lines[0]?.trim() !== guestKernel) throw new Error(`uname -r said ${lines[0]}, not the guest's ${guestKernel}`);
    say(`uname -r in the container: ${lines[0]} (the guest's kernel; the host runs ${release()}) [${secs}s]`);
    if (!lines.includes('hello from the host')) throw new Error('the container did not see /data/hello.txt');
    const out = join(hostDir, 'out.txt');
    if (!existsSync(out) || readFileSync(out, 'utf8') !== 'from-guest\n')
      throw new Error('out.txt did not reach the host');
    say(`${out} on the host: ${JSON.stringify(readFileSync(out, 'utf8'))}`);
    say('OK');
    return 0;
  } finally {
    await cd?.stop();
    rmSync(hostDir, { recursive: true, force: true });
    const left = qemuProcesses();
    if (left.length) say(`WARNING: QEMU processes left: ${left.join('; ')}`);
    else say('cleaned up: containerd stopped, no QEMU left, temp dirs removed');
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`demo: FAILED: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
