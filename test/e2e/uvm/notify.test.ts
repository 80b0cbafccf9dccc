// End to end: host changes under a bind mount wake inotify watchers in a container (docs/share-notify.md).
// A private containerd, our runtime, a QEMU UVM; the container runs Debian's inotifywait -m -r on the bind
// mount. The host creates, writes, renames and deletes files; each event must reach inotifywait within 1 s,
// and the host files must stay exactly as the host wrote them (replays never touch the host). Then a burst of
// 10,000 host changes: every changed path fires, the container reads the final contents, the shim's memory
// stays bounded.
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, leftovers, type PrivateContainerd } from '../../helpers/containerd.js';
import { importInotifyImage } from '../../helpers/image.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const NS = `lcow-e2e-notify-${process.pid}`;
const POD = `notify-pod-${process.pid}`;
const BURST_FILES = 2000;
const WRITES_PER_FILE = 5; // 2,000 x 5 = 10,000 host changes

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (!existsSync('/usr/bin/inotifywait')) return 'no inotifywait (apt-get install inotify-tools)';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

function pidsMatching(pred: (cmd: string[]) => boolean): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (pred(readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0'))) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}
const ourQemus = (): number[] =>
  pidsMatching((c) => c[0]?.startsWith('qemu-system') === true && c[c.indexOf('-name') + 1] === `lcow-${POD}`);
const ourShims = (): number[] =>
  pidsMatching((c) => c.some((a) => a.includes('containerd-shim-lcow-v1')) && c.includes(NS));

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}

/** The host tree as bytes, modes and mtimes: replays must leave it exactly so. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel))) {
      const p = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(dir, p));
      const hash = st.isFile()
        ? createHash('sha256')
            .update(readFileSync(join(dir, p)))
            .digest('hex')
        : '';
      out.set(p, `${st.mode} ${st.size} ${st.mtimeMs} ${hash}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out;
}

describe('e2e: host changes under a bind mount wake inotify in the container (share notify)', function () {
  this.timeout(600_000);
  let cd: PrivateContainerd;
  let hostDir: string;
  let roDir: string;
  let watcher: ChildProcessWithoutNullStreams | undefined;
  /** inotifywait's lines with the time the test saw each one. */
  const lines: Array<{ at: number; text: string }> = [];
  const latencies: Record<string, number> = {};

  const seen = (re: RegExp, after = 0): { at: number; text: string } | undefined =>
    lines.find((l) => l.at >= after && re.test(l.text));

  /** Makes a host change and waits for the event line it must produce; records the latency. */
  async function expectEvent(label: string, change: () => void, re: RegExp): Promise<void> {
    const t0 = performance.now();
    change();
    const ok = await waitFor(() => seen(re, t0) !== undefined, 5_000);
    assert.ok(ok, `no ${re} after ${label}; inotifywait printed:\n${lines.map((l) => l.text).join('\n')}`);
    latencies[label] = Math.round(seen(re, t0)!.at - t0);
  }

  before(async function () {
    requirePrerequisite(this, unavailable);
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'info', namespace: NS });
    const image = await importInotifyImage(cd.address, cd.namespace);
    hostDir = mkdtempSync(join(tmpdir(), 'lcow-e2e-notify-'));
    mkdirSync(join(hostDir, 'sub/deep'), { recursive: true });
    mkdirSync(join(hostDir, 'burst'));
    writeFileSync(join(hostDir, 'existing.txt'), 'before the container\n');
    roDir = mkdtempSync(join(tmpdir(), 'lcow-e2e-notify-ro-'));
    watcher = spawn(
      'ctr',
      [
        ...['--address', cd.address, '--namespace', NS, 'run', '--rm', '--runtime', RUNTIME],
        ...['--mount', `type=bind,src=${hostDir},dst=/data,options=rbind:rw`],
        ...['--mount', `type=bind,src=${roDir},dst=/ro,options=rbind:ro`],
        image,
        POD,
        ...['inotifywait', '-m', '-r', '--format', '%e %w%f', '/data', '/ro'],
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let buf = '';
    let err = '';
    watcher.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1))
        lines.push({ at: performance.now(), text: buf.slice(0, i).replace(/\r$/, '') });
    });
    watcher.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const ready = await waitFor(() => /Watches established/.test(err), 240_000);
    assert.ok(ready, `inotifywait did not start: ${err}\n${cd.log().slice(-3000)}`);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed' && cd)
      console.log(
        cd
          .log()
          .split('\n')
          .filter((l) => /notify|replay|share/i.test(l))
          .slice(-40)
          .join('\n'),
      );
  });

  after(async function () {
    if (unavailable) return;
    if (cd) {
      await cd.ctr(['task', 'kill', '-s', 'KILL', POD]).catch(() => undefined);
      if (watcher && watcher.exitCode === null)
        await new Promise<void>((r) => {
          const t = setTimeout(() => {
            watcher!.kill('SIGKILL');
            r();
          }, 30_000);
          watcher!.once('exit', () => {
            clearTimeout(t);
            r();
          });
        });
      await cd.ctr(['container', 'rm', POD]).catch(() => undefined);
      assert.equal(await waitFor(() => ourQemus().length === 0, 30_000), true, 'UVM left after the pod');
    }
    await cd?.stop();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
    if (roDir) rmSync(roDir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${NS}`, { recursive: true, force: true });
    const stateRoot = `/run/lcow/${NS}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(readdirSync(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(ourShims(), [], 'a shim was left running');
    if (Object.keys(latencies).length > 0) console.log(`      share notify latency (ms): ${JSON.stringify(latencies)}`);
  });

  it('create, modify, rename and delete on the host each reach inotifywait within 1 s', async function () {
    await expectEvent('create', () => writeFileSync(join(hostDir, 'new.txt'), 'one\n'), /^CREATE \/data\/new\.txt$/);
    await expectEvent('modify', () => appendFileSync(join(hostDir, 'new.txt'), 'two\n'), /^MODIFY \/data\/new\.txt$/);
    await expectEvent(
      'rename',
      () => renameSync(join(hostDir, 'new.txt'), join(hostDir, 'sub/renamed.txt')),
      /^MOVED_TO \/data\/sub\/renamed\.txt$/,
    );
    assert.ok(seen(/^MOVED_FROM \/data\/new\.txt$/), 'the rename has both ends');
    await expectEvent(
      'delete',
      () => unlinkSync(join(hostDir, 'sub/renamed.txt')),
      /^DELETE \/data\/sub\/renamed\.txt$/,
    );
    await expectEvent(
      'mkdir',
      () => mkdirSync(join(hostDir, 'sub/deep/newdir')),
      /^CREATE,ISDIR \/data\/sub\/deep\/newdir$/,
    );
    // inotifywait -r watches the new directory as soon as it hears of it: a file made in it is seen too.
    await expectEvent(
      'create in a new directory',
      () => writeFileSync(join(hostDir, 'sub/deep/newdir/inner.txt'), 'x'),
      /^CREATE \/data\/sub\/deep\/newdir\/inner\.txt$/,
    );
    for (const [label, ms] of Object.entries(latencies)) assert.ok(ms < 1000, `${label}: ${ms} ms`);
  });

  it('a read-only bind mount gets the events too and stays read-only in the container', async function () {
    await expectEvent('create (ro mount)', () => writeFileSync(join(roDir, 'conf'), 'v=1\n'), /^CREATE \/ro\/conf$/);
    await expectEvent('modify (ro mount)', () => appendFileSync(join(roDir, 'conf'), 'v=2\n'), /^MODIFY \/ro\/conf$/);
    const e = await cd.ctr([
      ...['task', 'exec', '--exec-id', 'ro1', POD, 'sh', '-c'],
      'cat /ro/conf; (echo x >> /ro/conf) 2>/dev/null && echo WRITABLE || echo read-only',
    ]);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(e.stdout, 'v=1\nv=2\nread-only\n');
    assert.equal(readFileSync(join(roDir, 'conf'), 'utf8'), 'v=1\nv=2\n');
  });

  it("the host files are byte-identical to what the host wrote; the guest's own writes are not echoed", async function () {
    writeFileSync(join(hostDir, 'exact.bin'), Buffer.from([0, 1, 2, 3, 255]));
    appendFileSync(join(hostDir, 'existing.txt'), 'appended on the host\n');
    await waitFor(() => seen(/^MODIFY \/data\/existing\.txt$/) !== undefined, 5_000);
    const before = snapshot(hostDir);
    await new Promise((r) => setTimeout(r, 1500)); // every replay of these changes is long done
    assert.deepEqual(snapshot(hostDir), before, 'a replay changed the host');
    assert.deepEqual(readFileSync(join(hostDir, 'exact.bin')), Buffer.from([0, 1, 2, 3, 255]));

    // A write made in the container reaches the host through 9P; the host watcher must not replay it back.
    const e = await cd.ctr(['task', 'exec', '--exec-id', 'w1', POD, 'sh', '-c', 'echo from-guest > /data/guest.txt']);
    assert.equal(e.code, 0, e.stderr);
    assert.equal(readFileSync(join(hostDir, 'guest.txt'), 'utf8'), 'from-guest\n');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(lines.filter((l) => l.text === 'CREATE /data/guest.txt').length, 1, 'the guest write was echoed');
  });

  it('a burst of 10,000 host changes: every changed path fires, the final state is visible, memory stays bounded', async function () {
    const [shim] = ourShims();
    assert.ok(shim, 'no shim');
    const rss0 = rssKiB(shim);
    let peakRss = rss0;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssKiB(shim))), 50);
    const t0 = performance.now();
    const expected = new Map<string, string>();
    for (let w = 0; w < WRITES_PER_FILE; w++) {
      for (let i = 0; i < BURST_FILES; i++) {
        const name = `burst/f${i}`;
        const data = `${name} write ${w}\n`;
        if (w === 0) writeFileSync(join(hostDir, name), data);
        else appendFileSync(join(hostDir, name), data);
        expected.set(name, (expected.get(name) ?? '') + data);
      }
    }
    const written = performance.now();
    const fired = (): number =>
      new Set(lines.filter((l) => l.text.includes('/data/burst/f')).map((l) => l.text.split(' ')[1])).size;
    const ok = await waitFor(() => fired() >= BURST_FILES, 240_000);
    const done = performance.now();
    clearInterval(sampler);
    const events = lines.filter((l) => l.text.includes('/data/burst/f')).length;
    console.log(
      `      burst: ${BURST_FILES * WRITES_PER_FILE} host changes on ${BURST_FILES} files written in ` +
        `${Math.round(written - t0)} ms; every path fired after ${Math.round(done - t0)} ms; ` +
        `${events} inotify events in the container; shim RSS ${Math.round(rss0 / 1024)} -> peak ` +
        `${Math.round(peakRss / 1024)} MiB`,
    );
    assert.ok(ok, `only ${fired()} of ${BURST_FILES} burst paths fired`);
    // The final state, read in the container, is what the host wrote last.
    const r = await cd.ctr([
      'task',
      'exec',
      '--exec-id',
      'sum',
      POD,
      'sh',
      '-c',
      `cat ${[0, 1, BURST_FILES - 1].map((i) => `/data/burst/f${i}`).join(' ')}`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, [0, 1, BURST_FILES - 1].map((i) => expected.get(`burst/f${i}`)).join(''));
    for (const [name, data] of expected) assert.equal(readFileSync(join(hostDir, name), 'utf8'), data);
    assert.ok(peakRss - rss0 < 64 * 1024, `shim RSS grew by ${Math.round((peakRss - rss0) / 1024)} MiB`);
  });
});
