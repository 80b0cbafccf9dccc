// Churn with the process backend (fast, no VM): pods created, used (bind mount, exec) and deleted, one after
// another then several at a time, beside an anchor pod with containers churned inside its long-lived shim.
// `make test`: 10 in a row + 4 at a time; `make stress` (LCOW_CHURN=full): 200 in a row, then 10x4 at a time.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Churn, FULL, assertNoGrowth, table } from '../../helpers/churn.js';
import { containerdUnavailable, type PrivateContainerd } from '../../helpers/containerd.js';
import { shimPids, waitFor } from '../../helpers/host-state.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { assertNoLeaks, removeEmptyStateRoot, startLcowContainerd, TEST_NAMESPACE } from './helpers.js';

const SIZES = FULL ? { serial: 200, parallel: 4, rounds: 10 } : { serial: 10, parallel: 4, rounds: 1 };
const skip = process.getuid?.() !== 0 ? 'needs root' : containerdUnavailable();

describe(`churn: process-backend pods (${SIZES.serial} in a row, ${SIZES.rounds}x${SIZES.parallel} at a time)`, function () {
  this.timeout(FULL ? 3_600_000 : 300_000);
  let cd: PrivateContainerd;
  let image: string;
  let work: string;

  before(async function () {
    requirePrerequisite(this, skip);
    ({ cd, image } = await startLcowContainerd());
    work = mkdtempSync(join(tmpdir(), 'lcow-churn-p-'));
  });

  after(async function () {
    if (skip) return;
    await cd?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
    removeEmptyStateRoot();
  });

  it('pods and containers come and go with no growth of fds, mounts, state, sockets, processes, shim RSS', async () => {
    const churn = new Churn(cd, image, work, `cp${process.pid}-`);
    await churn.startAnchor();
    await churn.useContainer(churn.anchor, `${churn.anchor}-warm`); // first-use costs (module loading, JIT)
    const before = churn.snapshot();
    await churn.run(SIZES, (l) => process.stderr.write(`${l}\n`));
    await waitFor(() => shimPids(TEST_NAMESPACE).length === before.shims, 30_000);
    const after = churn.snapshot();
    process.stderr.write(`${table(`process-backend churn, ${churn.done} containers`, before, after)}\n`);
    assertNoGrowth(before, after);
    await churn.stopAnchor();
    await assertNoLeaks(cd);
  });
});
