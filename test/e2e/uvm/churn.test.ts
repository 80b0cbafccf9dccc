// Churn with the QEMU backend through a real containerd: pods created, used (a bind mount written and read over
// 9P, an exec) and deleted, one after another and then several at a time, beside an anchor pod whose shim lives
// through the run with containers churned inside it. Before/after figures must show no growth.
// `make test`: 1 + 2 at a time; `make stress` (LCOW_CHURN=full): 20 in a row, then 20 more 4 at a time.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Churn, FULL, assertNoGrowth, table } from '../../helpers/churn.js';
import { leftovers, startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { dirEntries, mountsMatching, qemuPids, shimPids, waitFor } from '../../helpers/host-state.js';
import { importTestImage } from '../../helpers/image.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const NS = `lcow-churn-q-${process.pid}`;
const PREFIX = `cq${process.pid}-`;
const SIZES = FULL ? { serial: 20, parallel: 4, rounds: 5 } : { serial: 1, parallel: 2, rounds: 1 };

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

describe(`churn: QEMU UVM pods (${SIZES.serial} in a row, ${SIZES.rounds}x${SIZES.parallel} at a time)`, function () {
  this.timeout(FULL ? 7_200_000 : 900_000);
  let cd: PrivateContainerd;
  let work: string;

  before(async function () {
    requirePrerequisite(this, unavailable);
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'warn', namespace: NS });
    work = mkdtempSync(join(tmpdir(), 'lcow-churn-q-'));
  });

  after(async function () {
    if (unavailable) return;
    for (const p of qemuPids((id) => id.startsWith(PREFIX))) process.kill(p, 'SIGKILL');
    await cd?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
    if (existsSync(`/run/lcow/${NS}`)) {
      assert.deepEqual(dirEntries(`/run/lcow/${NS}`), []);
      rmSync(`/run/lcow/${NS}`, { recursive: true });
    }
  });

  it('pods and containers come and go with no growth of fds, mounts, state, sockets, processes, shim RSS', async () => {
    const churn = new Churn(cd, await importTestImage(cd.address, cd.namespace), work, PREFIX);
    await churn.startAnchor();
    await churn.useContainer(churn.anchor, `${churn.anchor}-warm`); // first-use costs (module loading, JIT)
    const before = churn.snapshot();
    await churn.run(SIZES, (l) => process.stderr.write(`${l}\n`));
    // Exits, deletes and VM teardown finish asynchronously: let the counts settle before reading them.
    await waitFor(() => qemuPids((id) => id.startsWith(PREFIX)).length === before.qemus, 30_000);
    await waitFor(() => shimPids(NS).length === before.shims, 30_000);
    const after = churn.snapshot();
    process.stderr.write(`${table(`QEMU churn, ${churn.done} containers`, before, after)}\n`);
    assertNoGrowth(before, after);
    await churn.stopAnchor();
    assert.ok(
      await waitFor(() => shimPids(NS).length === 0 && qemuPids((id) => id.startsWith(PREFIX)).length === 0, 30_000),
    );
    assert.deepEqual(mountsMatching(`/run/lcow/${NS}/`, `v2.task/${NS}/`, work), []);
  });
});
