import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryCgroupDir, oomKillCount, OomWatcher } from '../../../src/agent/oom.js';

describe('agent OOM watcher', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'oom-test-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads oom_kill from cgroup v2 memory.events and v1 memory.oom_control', async () => {
    const v2 = join(dir, 'v2');
    const v1 = join(dir, 'v1');
    mkdirSync(v2);
    mkdirSync(v1);
    writeFileSync(join(v2, 'memory.events'), 'low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n');
    writeFileSync(join(v1, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 7\n');
    assert.equal(await oomKillCount(v2), 2);
    assert.equal(await oomKillCount(v1), 7);
    assert.equal(await oomKillCount(join(dir, 'gone')), undefined);
  });

  it('finds the memory cgroup in runc state.json (v1 and v2 layouts)', async () => {
    mkdirSync(join(dir, 'a'));
    mkdirSync(join(dir, 'b'));
    writeFileSync(
      join(dir, 'a', 'state.json'),
      JSON.stringify({ cgroup_paths: { memory: '/sys/fs/cgroup/memory/x' } }),
    );
    writeFileSync(join(dir, 'b', 'state.json'), JSON.stringify({ cgroup_paths: { '': '/sys/fs/cgroup/x' } }));
    assert.equal(await memoryCgroupDir(dir, 'a'), '/sys/fs/cgroup/memory/x');
    assert.equal(await memoryCgroupDir(dir, 'b'), '/sys/fs/cgroup/x');
    assert.equal(await memoryCgroupDir(dir, 'c'), undefined);
  });

  it('reports each new OOM kill once, counting from when the container was added', async () => {
    const events = join(dir, 'memory.events');
    writeFileSync(events, 'oom_kill 3\n');
    const seen: string[] = [];
    const w = new OomWatcher((id) => seen.push(id), 60_000);
    await w.add('c1', dir);
    assert.equal(await w.check('c1'), false);
    writeFileSync(events, 'oom_kill 4\n');
    await w.poll();
    assert.equal(await w.check('c1'), false);
    assert.deepEqual(seen, ['c1']);
    w.remove('c1');
    assert.equal(w.size, 0);
  });
});
