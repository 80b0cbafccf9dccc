// The agent refuses container processes that would run as the share-notify replay uid: the 9P server answers
// that uid from its replay tree without touching the host, so such a process's writes would be dropped.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, AgentError } from '../../../src/agent/agent.js';

const REPLAY_UID = 4294901760;

function json(v: unknown): Uint8Array {
  return Buffer.from(JSON.stringify(v));
}

describe('agent: the share-notify replay uid is not a container uid', function () {
  let dir: string;
  let agent: Agent;
  const mounted: string[] = [];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'agent-replay-uid-'));
    agent = new Agent({
      stateDir: join(dir, 'state'),
      // A share "mounted" on a plain directory: the test needs the agent's bookkeeping, not a 9P mount.
      mount9p: async (req) => {
        mounted.push(req.target);
      },
      unmount: async () => undefined,
    });
    await agent.init();
  });
  afterEach(async () => {
    await agent.shutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  async function addNotifyShare(): Promise<void> {
    await agent.addShare({
      shareId: 's1',
      kind: '9p',
      source: '/host/dir',
      target: join(dir, 'share'),
      readOnly: false,
      notifyUid: REPLAY_UID,
      notifyPinDirs: 0,
    });
  }

  it('CreateContainer with process.user.uid = the replay uid: InvalidArgument naming the uid, nothing created', async () => {
    await addNotifyShare();
    await assert.rejects(
      agent.createContainer({
        containerId: 'c1',
        specJson: json({ process: { args: ['true'], user: { uid: REPLAY_UID, gid: 0 } } }),
        rootfs: [],
        stdio: { terminal: false, stdin: false, stdout: false, stderr: false },
      }),
      (err: AgentError) => err.code === 'InvalidArgument' && err.message.includes(String(REPLAY_UID)),
    );
    assert.throws(
      () => agent.container('c1'),
      (err: AgentError) => err.code === 'NotFound',
    );
  });
});
