import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { processRssBytes, processStartTime } from '../../../src/util/proc.js';

describe('util/proc', () => {
  it('reads the start time and RSS of a live process', async () => {
    const start = await processStartTime(process.pid);
    assert.match(start ?? '', /^\d+$/);
    assert.equal(await processStartTime(process.pid), start, 'stable for one incarnation');
    const rss = await processRssBytes(process.pid);
    assert.ok(rss !== undefined && rss > 1 << 20, `rss ${rss}`);
  });

  it('answers undefined for a pid that is gone', async () => {
    const child = spawnSync('true');
    assert.equal(child.status, 0);
    assert.equal(await processStartTime(child.pid), undefined);
    assert.equal(await processRssBytes(child.pid), undefined);
  });
});
