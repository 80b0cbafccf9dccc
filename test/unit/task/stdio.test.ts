// The stdin relay ends its WriteStdin call on both sides when the source ends early (task deleted, client gone):
// before, every process left an open stream in the shim and in the agent until the pod's connection closed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StdioRelay } from '../../../src/task/stdio.js';
import type { AgentClient } from '../../../src/task/service.js';
import { Logger } from '../../../src/util/log.js';

describe('task/stdio: the stdin relay', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lcow-stdio-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('closes the send side of WriteStdin when the relay is closed before stdin reached EOF', async () => {
    const fifo = join(dir, 'stdin');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    const calls: string[] = [];
    const fakeStream = {
      send: async (chunk: { data: Uint8Array }) => void calls.push(`send ${chunk.data.length}`),
      closeSend: async () => void calls.push('closeSend'),
      response: async () => ({}),
    };
    const agent = {
      writeStdin: () => fakeStream,
      closeStdin: async () => void calls.push('closeStdin'),
    } as unknown as AgentClient;
    const relay = await StdioRelay.open(
      { stdin: fifo, stdout: '', stderr: '', terminal: false },
      { id: 'c1', namespace: 'ns' },
      new Logger({ write: () => true }, 'error'),
    );
    relay.attach(agent, 'c1', '');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(calls, ['send 0'], 'the first chunk names the process');
    relay.close();
    await relay.stdinFinished();
    assert.deepEqual(calls, ['send 0', 'closeSend'], 'the call is ended; stdin itself is not closed');
  });
});
