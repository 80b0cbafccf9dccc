// The pod/UVM lifecycle every backend shares: its transition table, and the exit notification's contract
// (once, in order, also when registered late, never synchronously, 'stopped' only when a stop was asked).
import assert from 'node:assert/strict';
import {
  IllegalSandboxTransition,
  SandboxLifecycle,
  sandboxTransition,
  type SandboxEvent,
  type SandboxPhase,
} from '../../../src/sandbox/lifecycle.js';
import type { SandboxExitReason } from '../../../src/sandbox/sandbox.js';
import { toTtrpcError } from '../../../src/task/errors.js';
import { Code } from '../../../src/ttrpc/index.js';
import { silentLogger } from '../../../src/util/log.js';

const PHASES: SandboxPhase[] = ['new', 'booting', 'ready', 'stopping', 'gone'];
const EVENTS: SandboxEvent[] = ['boot', 'ready', 'stop', 'ended'];

// Written out: the next phase, or '!' for a refused move.
const TABLE: Record<SandboxEvent, Record<SandboxPhase, SandboxPhase | '!'>> = {
  boot: { new: 'booting', booting: '!', ready: '!', stopping: '!', gone: '!' },
  ready: { new: '!', booting: 'ready', ready: '!', stopping: '!', gone: '!' },
  stop: { new: 'stopping', booting: 'stopping', ready: 'stopping', stopping: '!', gone: '!' },
  ended: { new: 'gone', booting: 'gone', ready: 'gone', stopping: 'gone', gone: '!' },
};

describe('sandbox lifecycle', () => {
  for (const e of EVENTS)
    for (const p of PHASES)
      it(`${p} --${e}--> ${TABLE[e][p]}`, () => {
        const want = TABLE[e][p];
        if (want === '!') {
          assert.throws(() => sandboxTransition(p, e), IllegalSandboxTransition);
          try {
            sandboxTransition(p, e);
          } catch (err) {
            assert.equal(toTtrpcError(err).code, Code.FAILED_PRECONDITION);
          }
        } else assert.equal(sandboxTransition(p, e), want);
      });

  it('exit callbacks: once each, in order, after the end; late ones on a microtask; a throwing one does not stop the rest', async () => {
    const life = new SandboxLifecycle(silentLogger);
    const seen: string[] = [];
    life.onExit(() => seen.push('a'));
    life.onExit(() => {
      throw new Error('bad callback');
    });
    life.onExit((r) => seen.push(`b:${r.kind}`));
    life.boot();
    life.ready();
    assert.deepEqual(seen, []);
    life.ended({ code: 1, signal: null, detail: 'qemu died' });
    life.ended({ code: 2, signal: null });
    assert.deepEqual(seen, ['a', 'b:crashed']);
    let late: SandboxExitReason | undefined;
    life.onExit((r) => (late = r));
    assert.equal(late, undefined, 'never synchronously inside onExit');
    await Promise.resolve();
    assert.deepEqual(late, { kind: 'crashed', code: 1, signal: null, detail: 'qemu died' });
    assert.deepEqual(await life.gone, late);
  });

  it("'stopped' only when stop() came before the end; stop() is idempotent", async () => {
    const life = new SandboxLifecycle(silentLogger);
    life.boot();
    life.ready();
    assert.equal(life.stop(), true);
    assert.equal(life.stop(), false);
    life.ended({ code: 0, signal: null });
    assert.deepEqual(await life.gone, { kind: 'stopped' });
    assert.equal(life.stop(), false);
  });

  it('a boot that ends before ready cannot become ready', () => {
    const life = new SandboxLifecycle(silentLogger);
    life.boot();
    life.ended({ code: null, signal: 'SIGKILL' });
    assert.throws(() => life.ready(), IllegalSandboxTransition);
  });
});
