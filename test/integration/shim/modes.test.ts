// File and socket modes of everything the shim creates, with containerd (and so the shim) running under
// `umask 000` (issue 9: "the shim's ttrpc socket: its mode follows the inherited umask"). Modes must be explicit:
// the ttrpc socket 0600 (as containerd's own shims), state dirs 0700, records and pid/address files 0600. Then a
// second local user (uid 65534, nobody) tries to connect to the shim's and the agent's sockets and to read the
// record: refused by the kernel. Process backend (no VM); the QEMU backend's token file, QMP socket and state dir
// are checked the same way in test/e2e/uvm/squat.test.ts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstatSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { socketPath } from '../../../src/shim/address.js';
import { SANDBOX_RECORD_FILE } from '../../../src/task/record.js';
import { containerdUnavailable, type PrivateContainerd } from '../../helpers/containerd.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import {
  assertNoLeaks,
  bundleDir,
  lcowStateRoot,
  removeEmptyStateRoot,
  RUNTIME,
  startLcowContainerd,
  until,
} from './helpers.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : containerdUnavailable();
const NOBODY = 65534;

const mode = (p: string): string => (lstatSync(p).mode & 0o7777).toString(8).padStart(4, '0');

/** What a process running as uid/gid 65534 gets when it connects to a unix socket or reads a file. */
function asNobody(op: 'connect' | 'read', path: string): Promise<string> {
  const script =
    op === 'connect'
      ? `const s=require('net').connect(process.argv[1]);s.on('connect',()=>{console.log('CONNECTED');process.exit(0)});s.on('error',e=>{console.log(e.code);process.exit(0)})`
      : `try{require('fs').readFileSync(process.argv[1]);console.log('READ')}catch(e){console.log(e.code)}`;
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', script, path], {
      uid: NOBODY,
      gid: NOBODY,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', reject);
    c.on('close', () => resolve(out.trim()));
  });
}

describe('shim file and socket modes under umask 000 (process backend)', function () {
  this.timeout(120_000);
  before(function () {
    requirePrerequisite(this, skip);
  });
  let cd: PrivateContainerd;
  let image: string;

  before(async () => {
    ({ cd, image } = await startLcowContainerd({ umask: 0o000 }));
  });
  after(async () => {
    await cd?.stop();
    removeEmptyStateRoot();
  });
  afterEach(async () => {
    await assertNoLeaks(cd);
  });

  it('socket 0600, state dirs 0700, records 0600; a second local user can neither connect nor read', async () => {
    const id = `modes-${process.pid}`;
    const r = await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, id, 'sleep', '600'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    try {
      const bundle = bundleDir(cd, id);
      const address = readFileSync(join(bundle, 'address'), 'utf8').trim();
      const sock = socketPath(address);
      assert.ok(lstatSync(sock).isSocket());
      const stateDir = join(lcowStateRoot(), id);
      assert.ok(await until(() => lstatSafe(join(stateDir, 'agent.sock')), 10_000), 'agent socket');
      const got = {
        'shim ttrpc socket': mode(sock),
        'bundle/address': mode(join(bundle, 'address')),
        'bundle/shim.pid': mode(join(bundle, 'shim.pid')),
        [`bundle/${SANDBOX_RECORD_FILE}`]: mode(join(bundle, SANDBOX_RECORD_FILE)),
        '/run/lcow': mode('/run/lcow'),
        '/run/lcow/<ns>': mode(lcowStateRoot()),
        '/run/lcow/<ns>/<pod>': mode(stateDir),
        'agent socket': mode(join(stateDir, 'agent.sock')),
      };
      assert.deepEqual(got, {
        'shim ttrpc socket': '0600',
        'bundle/address': '0600',
        'bundle/shim.pid': '0600',
        [`bundle/${SANDBOX_RECORD_FILE}`]: '0600',
        '/run/lcow': '0700',
        '/run/lcow/<ns>': '0700',
        '/run/lcow/<ns>/<pod>': '0700',
        'agent socket': '0600',
      });
      // The attacks of a local user: connect to the Task service (it could kill or exec into every container),
      // to the agent, read the record. The kernel refuses each.
      assert.equal(await asNobody('connect', sock), 'EACCES');
      assert.equal(await asNobody('connect', join(stateDir, 'agent.sock')), 'EACCES');
      assert.equal(await asNobody('read', join(bundle, SANDBOX_RECORD_FILE)), 'EACCES');
      // and root (containerd) still connects
      const asRoot = await new Promise<string | undefined>((resolve) => {
        const s = net.connect(sock);
        s.on('connect', () => {
          s.destroy();
          resolve('CONNECTED');
        });
        s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code));
      });
      assert.equal(asRoot, 'CONNECTED');
    } finally {
      await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
      await until(async () => /STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout), 20_000);
      await cd.ctr(['task', 'delete', id]);
      await cd.ctr(['container', 'rm', id]);
    }
  });
});

function lstatSafe(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}
