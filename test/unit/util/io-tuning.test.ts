// The idle trim of the file-serving processes: once per idle period, never while busy.
import assert from 'node:assert/strict';
import { trimWhenIdle } from '../../../src/util/io-tuning.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Keeps this thread on the CPU for `ms` (the timer cannot run meanwhile; the next check sees the usage). */
function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // busy
  }
}

describe('util/io-tuning: trimWhenIdle', () => {
  it('trims once per idle period and not after a busy one', async function () {
    this.timeout(10_000);
    const period = 200;
    let trims = 0;
    const timer = trimWhenIdle(() => trims++, period);
    try {
      spin(period * 1.5);
      await sleep(period * 0.6); // the first check ran and saw a busy period
      assert.equal(trims, 0, 'busy: no trim');
      await sleep(period * 4);
      assert.equal(trims, 1, 'idle for several periods: one trim');
      spin(period * 1.5);
      await sleep(period * 0.6);
      assert.equal(trims, 1);
      await sleep(period * 2.5);
      assert.equal(trims, 2, 'idle again after being busy: one more');
    } finally {
      clearInterval(timer);
    }
  });
});
