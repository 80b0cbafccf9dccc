import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { processPrivateBytes, processPssBytes, processRssBytes, processStartTime } from '../../../src/util/proc.js';

describe('util/proc', () => {
  it('reads the start time and RSS of a live process', async () => {
    const start = await processStartTime(process.pid);
    assert.match(start ?? '', /^\d+$/);
    assert.equal(await processStartTime(process.pid), start, 'stable for one incarnation');
    const rss = await processRssBytes(process.pid);
    assert.ok(rss !== undefined && rss > 1 << 20, `rss ${rss}`);
  });

  it('splits memory into private pages <= PSS <= RSS', async () => {
    // A buffer only this process touches makes the private part at least that big.
    const mine = Buffer.alloc(8 << 20, 1);
    const [priv, pss, rss] = await Promise.all([
      processPrivateBytes(process.pid),
      processPssBytes(process.pid),
      processRssBytes(process.pid),
    ]);
    assert.ok(priv !== undefined && pss !== undefined && rss !== undefined);
    assert.ok(priv >= mine.length, `private ${priv}`);
    assert.ok(priv <= pss && pss <= rss + 4096, `private ${priv} pss ${pss} rss ${rss}`);
  });

  it('answers undefined for a pid that is gone', async () => {
    const child = spawnSync('true');
    assert.equal(child.status, 0);
    assert.equal(await processStartTime(child.pid), undefined);
    assert.equal(await processRssBytes(child.pid), undefined);
    assert.equal(await processPrivateBytes(child.pid), undefined);
  });
});
