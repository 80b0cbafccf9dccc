// 9P server micro-benchmarks through the TypeScript client over loopback TCP: the server runs as its own
// process (`lcowctl 9p serve`) so client and server each have a core, as with a guest kernel client.
// Depth 1 is what one guest thread doing psync I/O produces (cache=none); depth 16 shows pipelining.

import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MsgType } from '../../src/p9/messages.js';
import { P9Client } from '../helpers/p9client.js';
import type { BenchRow, BenchSuite } from './harness.js';

const MSIZE = 1024 * 1024 + 24;
const FILE_SIZE = 128 * 1024 * 1024;
const SECONDS = 2;

async function startServer(dir: string): Promise<{ proc: ChildProcess; port: number }> {
  const cli = path.resolve('dist/shim/lcowctl.js');
  const proc = spawn(process.execPath, [cli, '9p', 'serve', '--listen', 'tcp:127.0.0.1:0', '--export', dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on tcp:[^:]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    proc.once('exit', (code) => reject(new Error(`9p server exited ${code}`)));
  });
  return { proc, port };
}

/** Runs `op` from `depth` concurrent loops for SECONDS; returns completed ops per second. */
async function rate(depth: number, op: (worker: number) => Promise<unknown>): Promise<number> {
  let n = 0;
  const end = performance.now() + SECONDS * 1000;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async (_, w) => {
      while (performance.now() < end) {
        await op(w);
        n++;
      }
    }),
  );
  return n / ((performance.now() - start) / 1000);
}

async function run(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9bench-'));
  const { proc, port } = await startServer(dir);
  const rows: BenchRow[] = [];
  const suite = 'p9-local';
  try {
    const c = await P9Client.connect(port);
    await c.version(MSIZE);
    const { fid: root } = await c.attach('');
    const chunk = crypto.randomBytes(c.msize - 24 - ((c.msize - 24) % 4096));

    // Sequential write, then read, of one file with the largest payload msize allows.
    const dirFid = (await c.walk(root, [])).fid;
    await c.lcreate(dirFid, 'seq.bin', 2);
    let t = performance.now();
    for (let off = 0; off < FILE_SIZE; off += chunk.length) await c.write(dirFid, off, chunk);
    await c.rpc({ type: MsgType.Tfsync, fid: dirFid, datasync: 1 });
    let secs = (performance.now() - t) / 1000;
    rows.push({
      suite,
      name: `sequential write ${chunk.length >> 10} KiB, depth 1 (+fdatasync)`,
      value: FILE_SIZE / secs / 1e6,
      unit: 'MB/s',
    });

    const rf = (await c.walk(root, ['seq.bin'])).fid;
    await c.lopen(rf, 0);
    t = performance.now();
    for (let off = 0; off < FILE_SIZE;) off += (await c.read(rf, off, chunk.length)).length;
    secs = (performance.now() - t) / 1000;
    rows.push({
      suite,
      name: `sequential read ${chunk.length >> 10} KiB, depth 1`,
      value: FILE_SIZE / secs / 1e6,
      unit: 'MB/s',
    });

    const blocks = FILE_SIZE / 4096;
    for (const depth of [1, 16]) {
      const ops = await rate(depth, () => c.read(rf, Math.floor(Math.random() * blocks) * 4096, 4096));
      rows.push({ suite, name: `4 KiB random read, depth ${depth}`, value: ops, unit: 'ops/s' });
    }
    fs.writeFileSync(path.join(dir, 'small'), 'x');
    const small = (await c.walk(root, ['small'])).fid;
    for (const depth of [1, 16]) {
      const ops = await rate(depth, () => c.getattr(small, 0x7ffn));
      rows.push({ suite, name: `getattr, depth ${depth}`, value: ops, unit: 'ops/s' });
    }
    fs.mkdirSync(path.join(dir, 'a/b/c'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'a/b/c/leaf'), '');
    for (const depth of [1, 16]) {
      const ops = await rate(depth, async () => {
        const { fid } = await c.walk(root, ['a', 'b', 'c', 'leaf']);
        await c.clunk(fid);
      });
      rows.push({ suite, name: `walk 4 names + clunk, depth ${depth}`, value: ops, unit: 'ops/s' });
    }
    // What the Linux client sends to read a small file it just looked up (cache=none): walk, getattr, lopen,
    // Tread of rsize (gets the 4 KiB), Tread at EOF (gets 0), clunk.
    const treeFid = (await c.walk(root, [])).fid;
    await c.mkdir(treeFid, 'tree');
    for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(dir, 'tree', `f${i}`), chunk.subarray(0, 4096));
    for (const depth of [1, 16]) {
      let i = 0;
      const ops = await rate(depth, async () => {
        const { fid } = await c.walk(root, ['tree', `f${i++ % 100}`]);
        await c.getattr(fid, 0x7ffn);
        await c.lopen(fid, 0);
        await c.read(fid, 0, c.msize - 24);
        await c.read(fid, 4096, c.msize - 24);
        await c.clunk(fid);
      });
      rows.push({
        suite,
        name: `small-file read (walk, getattr, lopen, 2 reads, clunk), depth ${depth}`,
        value: ops,
        unit: 'files/s',
      });
    }
    // Small writes (4 KiB and 64 KiB) to one open file, as a file tree copy produces.
    const wf = (await c.walk(root, [])).fid;
    await c.lcreate(wf, 'small-writes.bin', 2);
    for (const size of [4096, 65536]) {
      const data = chunk.subarray(0, size);
      let off = 0;
      const ops = await rate(1, () => c.write(wf, (off = (off + size) % (16 << 20)), data));
      rows.push({ suite, name: `${size >> 10} KiB write, depth 1`, value: ops, unit: 'ops/s' });
    }
    c.close();
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => proc.once('exit', r));
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

export const suite: BenchSuite = {
  name: 'p9-local',
  unavailable: async () =>
    fs.existsSync(path.resolve('dist/shim/lcowctl.js')) ? undefined : 'dist/shim/lcowctl.js not built (make build)',
  run,
};
