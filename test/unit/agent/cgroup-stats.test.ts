// crun has no `events --stats`: the agent reads a container's stats from its cgroup v2 files, in runc's JSON shape
// (RuncStats), and finds its cgroup from the init's /proc/<pid>/cgroup. Byte layouts as the kernel writes them
// (Documentation/admin-guide/cgroup-v2.rst).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cgroupV2Stats, parseSingle, statsFromCgroupFiles } from '../../../src/agent/cgroup-stats.js';
import { memoryCgroupDir, unifiedCgroupDir } from '../../../src/agent/oom.js';
import { toV2Metrics } from '../../../src/agent/stats.js';

const CPU_STAT = 'usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 7\nnr_throttled 2\nthrottled_usec 30\n';
const MEMORY_STAT = 'anon 4096\nfile 8192\nkernel_stack 16384\nslab 100\npgfault 42\npgmajfault 1\n';

describe('agent: container stats from cgroup v2 files (crun)', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'cgstats-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('cpu.stat (µs) becomes runc ns; memory.stat is the raw table; limits: max is no limit', () => {
    const s = statsFromCgroupFiles({
      'cpu.stat': CPU_STAT,
      'memory.stat': MEMORY_STAT,
      'memory.current': '123456\n',
      'memory.max': 'max\n',
      'memory.peak': '200000\n',
      'pids.current': '3\n',
      'pids.max': '100\n',
    });
    assert.deepEqual(s.cpu?.usage, { total: 1_500_000, user: 1_000_000, kernel: 500_000 });
    assert.deepEqual(s.cpu?.throttling, { periods: 7, throttledPeriods: 2, throttledTime: 30_000 });
    assert.equal(s.memory?.usage?.usage, 123456);
    assert.equal(s.memory?.usage?.limit, 2 ** 64);
    assert.equal(s.memory?.usage?.max, 200000);
    assert.equal(s.memory?.swap?.usage, undefined, 'no swap controller: absent, not 0');
    assert.equal(s.memory?.raw?.kernel_stack, 16384);
    assert.deepEqual(s.pids, { current: 3, limit: 100 });
    // Through the same conversion as runc's JSON: µs again, and "no limit" clamped to uint64.
    const m = toV2Metrics(s);
    assert.equal(m.cpu?.usageUsec, 1500n);
    assert.equal(m.cpu?.throttledUsec, 30n);
    assert.equal(m.memory?.usage, 123456n);
    assert.equal(m.memory?.usageLimit, 2n ** 64n - 1n);
    assert.equal(m.memory?.kernelStack, 16384n);
    assert.equal(m.pids?.current, 3n);
  });

  it('junk in the files is ignored, not thrown or turned into NaN', () => {
    assert.equal(parseSingle('12abc'), undefined);
    assert.equal(parseSingle(''), undefined);
    assert.equal(parseSingle(undefined), undefined);
    const s = statsFromCgroupFiles({ 'cpu.stat': 'usage_usec -5\nbogus\nuser_usec 2 3\n', 'memory.stat': 'x y\n' });
    assert.equal(s.cpu?.usage?.total, undefined);
    assert.equal(s.cpu?.usage?.user, 2000);
    assert.deepEqual(s.memory?.raw, {});
  });

  it('reads a directory; a missing controller file is left out; a gone cgroup throws', async () => {
    writeFileSync(join(dir, 'cpu.stat'), CPU_STAT);
    writeFileSync(join(dir, 'memory.current'), '4096\n');
    const s = await cgroupV2Stats(dir);
    assert.equal(s.cpu?.usage?.total, 1_500_000);
    assert.equal(s.memory?.usage?.usage, 4096);
    assert.equal(s.pids?.current, undefined);
    await assert.rejects(cgroupV2Stats(join(dir, 'gone')), /cgroup .*gone/);
  });

  it("the cgroup of a process from its /proc/<pid>/cgroup; runc's state.json first", async () => {
    const own = /^0::(\/.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'));
    if (own) assert.equal(await unifiedCgroupDir(process.pid), join('/sys/fs/cgroup', own[1]!));
    else assert.equal(await unifiedCgroupDir(process.pid), undefined, 'a cgroup v1 host has no 0:: line');
    assert.equal(await unifiedCgroupDir(2 ** 22 + 1), undefined, 'no such pid');
    // crun keeps no state.json: the init's cgroup is used.
    assert.equal(await memoryCgroupDir(dir, 'c1', process.pid), await unifiedCgroupDir(process.pid));
    assert.equal(await memoryCgroupDir(dir, 'c1'), undefined);
  });
});
