import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Reaper } from '../../../src/agent/reaper.js';
import type { WaitResult } from '../../../src/agent/sys.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const distSrc = fileURLToPath(new URL('../../../src/agent/', import.meta.url));

describe('agent reaper', () => {
  it('hands watched exits to their watchers, reaps unwatched zombies, never libuv-owned ones; hold defers', async () => {
    const exited = new Set([10, 11, 12]);
    const reaped: number[] = [];
    const r = new Reaper(
      {
        wait: (pid: number): WaitResult | undefined => {
          if (!exited.has(pid)) return undefined;
          exited.delete(pid);
          reaped.push(pid);
          return { status: pid === 10 ? 3 : 0, signaled: false };
        },
        children: () => [10, 11, 12, 13],
        isZombie: (pid) => exited.has(pid),
        owned: (pid) => pid === 11,
      },
      60_000,
    );
    const release = r.hold();
    const e = await r.watch(10);
    assert.equal(e.status, 3);
    assert.deepEqual(reaped, [10], 'nothing unwatched reaped while held');
    release();
    assert.deepEqual(reaped, [10, 12], 'the unowned zombie reaped once released; libuv-owned 11 left alone');
    assert.equal(r.adoptedReaped, 1);
    r.stop();
  });

  it('as a subreaper: orphans are reaped, the exit of a child_process child is not stolen', async function () {
    // The agent runs only in a Linux guest; CI runs on Linux, where this never skips.
    requirePrerequisite(this, process.platform !== 'linux' ? 'PR_SET_CHILD_SUBREAPER exists only on Linux' : undefined);
    const dir = mkdtempSync(join(tmpdir(), 'reaper-test-'));
    const script = join(dir, 'orphans.mjs');
    writeFileSync(
      script,
      `
import { spawn } from 'node:child_process';
import { Reaper, trackSpawnedChildren, childPids, isZombie } from ${JSON.stringify(join(distSrc, 'reaper.js'))};
import { setChildSubreaper } from ${JSON.stringify(join(distSrc, 'sys.js'))};
if (!setChildSubreaper()) throw new Error('prctl');
trackSpawnedChildren();
const r = new Reaper({}, 100);
r.start();
// sh exits at once; its three background sleeps are reparented to us and die as our zombies.
const c = spawn('sh', ['-c', 'for i in 1 2 3; do sleep 0.2 & done; exit 4'], { stdio: 'ignore' });
const code = await new Promise((res) => c.on('exit', res));
await new Promise((res) => setTimeout(res, 900));
console.log(JSON.stringify({ code, zombies: childPids().filter(isZombie), reaped: r.adoptedReaped }));
r.stop();
`,
    );
    try {
      const out = await new Promise<string>((resolve, reject) =>
        execFile(process.execPath, [script], { timeout: 20_000 }, (err, stdout) =>
          err ? reject(err) : resolve(stdout),
        ),
      );
      const res = JSON.parse(out) as { code: number; zombies: number[]; reaped: number };
      assert.equal(res.code, 4, 'libuv still saw its own child exit');
      assert.deepEqual(res.zombies, []);
      assert.equal(res.reaped, 3);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
