// Shared setup for the shim integration tests: a private containerd with our bin/ on PATH and the
// process sandbox backend enabled, the busybox test image, and leftover checks.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, existsSync, rmdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Task as TaskV2 } from '../../../src/gen/containerd/task/v2/shim_pb.js';
import { socketPath } from '../../../src/shim/address.js';
import { createClient, NAMESPACE_KEY, TtrpcClient, type ServiceClient } from '../../../src/ttrpc/index.js';
import { startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';

export const RUNTIME = 'io.containerd.lcow.v1';
const here = fileURLToPath(new URL('.', import.meta.url));
export const BIN_DIR = resolve(here, '../../../../bin');

/**
 * The namespace of this test process: unique, so that the leak checks below only see our own shims, agents,
 * state and mounts (others may run lcow shims on this host at the same time).
 */
export const TEST_NAMESPACE = `lcow-it-${process.pid}`;

export async function startLcowContainerd(
  opts: { umask?: number } = {},
): Promise<{ cd: PrivateContainerd; image: string }> {
  const cd = await startContainerd({
    extraPath: [BIN_DIR],
    env: { LCOW_SANDBOX: 'process' },
    namespace: TEST_NAMESPACE,
    umask: opts.umask,
  });
  const image = await importTestImage(cd.address, cd.namespace);
  return { cd, image };
}

/** Processes whose command line mentions one of our binaries (or runc for our state dirs). */
export function ourProcesses(): string[] {
  const out: string[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (!/containerd-shim-lcow|lcow-agent|\/run\/lcow\//.test(cmd)) continue;
    if (cmd.includes(`-namespace ${TEST_NAMESPACE} `) || cmd.includes(`/run/lcow/${TEST_NAMESPACE}/`))
      out.push(`${p}: ${cmd.trim()}`);
  }
  return out;
}

export function ourMounts(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/run/lcow/${TEST_NAMESPACE}/`) || l.includes(`v2.task/${TEST_NAMESPACE}/`));
}

/** The process backend's state root for this test namespace (/run/lcow/<ns>). */
export function lcowStateRoot(): string {
  return `/run/lcow/${TEST_NAMESPACE}`;
}

export function lcowState(): string[] {
  const dir = `/run/lcow/${TEST_NAMESPACE}`;
  return existsSync(dir) ? readdirSync(dir) : [];
}

/**
 * Removes this run's state root once it is empty (the shim keeps /run/lcow/<ns> across pods, as runc keeps its
 * per-namespace root; a test run's namespace is its own and must not outlive it). Leftover pod state stays for
 * the leak assertions to report.
 */
export function removeEmptyStateRoot(): void {
  if (existsSync(lcowStateRoot()) && lcowState().length === 0) rmdirSync(lcowStateRoot());
  // The pods' kept logs (console, agent log) of this run's namespace.
  rmSync(`/var/log/lcow/${TEST_NAMESPACE}`, { recursive: true, force: true });
}

/** Waits until `check` returns an empty list (processes exit asynchronously). */
export async function eventually(check: () => string[], timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = check();
    if (r.length === 0 || Date.now() > deadline) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** containerd's bundle directory of a task (the private instance's state dir). */
export function bundleDir(cd: PrivateContainerd, id: string): string {
  return join(cd.dir, 'state', 'io.containerd.runtime.v2.task', cd.namespace, id);
}

/** A typed Task service client on the shim socket named by the bundle's `address` file. */
export async function taskClient(
  cd: PrivateContainerd,
  id: string,
): Promise<{ task: ServiceClient<(typeof TaskV2)['method']>; client: TtrpcClient; address: string }> {
  const address = readFileSync(join(bundleDir(cd, id), 'address'), 'utf8').trim();
  const client = await TtrpcClient.connect(socketPath(address));
  return { task: createClient(TaskV2, client), client, address };
}

export const nsMeta = (cd: PrivateContainerd) => ({ metadata: { [NAMESPACE_KEY]: cd.namespace } });

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Polls `probe` until it returns true (or the time is up); returns the last result. */
export async function until(
  probe: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  stepMs = 100,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return true;
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
}

// Runs a command on a fresh pty (its controlling terminal) sized ROWSxCOLS; when the output shows a line
// starting with `A:`, resizes the pty to ROWS2xCOLS2 (the kernel sends SIGWINCH to the foreground process:
// ctr) and types "go<CR>". Prints everything read from the pty and exits with the command's status.
const PTY_DRIVER = String.raw`
import os, sys, fcntl, termios, struct, select, time, re
rows, cols, rows2, cols2 = map(int, sys.argv[1:5]); cmd = sys.argv[5:]
def setsize(fd, r, c): fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', r, c, 0, 0))
m, s = os.openpty()
setsize(s, rows, cols)
pid = os.fork()
if pid == 0:
    os.setsid()
    fcntl.ioctl(s, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2): os.dup2(s, fd)
    os.close(m)
    if s > 2: os.close(s)
    os.execvp(cmd[0], cmd)
os.close(s)
buf = b''; resized = False; deadline = time.time() + 60
while time.time() < deadline:
    r, _, _ = select.select([m], [], [], 0.2)
    if m in r:
        try: d = os.read(m, 4096)
        except OSError: break
        if not d: break
        buf += d
        if os.environ.get("LCOW_PTY_DEBUG"): sys.stderr.write(repr(d) + "\n")
    if not resized and re.search(rb'A:[^\r\n]*\r*\n', buf):
        resized = True
        setsize(m, rows2, cols2)
        time.sleep(0.2)
        os.write(m, b"go\r")
        if os.environ.get("LCOW_PTY_DEBUG"): sys.stderr.write("resized+typed\n")
# ctr exits once the exit status came back through agent, shim and containerd: seconds on a loaded TCG host.
for _ in range(600):
    done, st = os.waitpid(pid, os.WNOHANG)
    if done: break
    time.sleep(0.1)
else:
    os.kill(pid, 9)
    _, st = os.waitpid(pid, 0)
sys.stdout.buffer.write(buf); sys.stdout.flush()
sys.exit(os.waitstatus_to_exitcode(st) if hasattr(os, 'waitstatus_to_exitcode') else st >> 8)
`;

/** `ctr ...` under a pty with a resize mid-run (see PTY_DRIVER); output has the pty's \r\n line ends. */
export function ctrOnPty(
  cd: PrivateContainerd,
  args: string[],
  size: [number, number],
  resized: [number, number],
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      'python3',
      [
        '-c',
        PTY_DRIVER,
        ...[...size, ...resized].map(String),
        'ctr',
        '--address',
        cd.address,
        '--namespace',
        cd.namespace,
        ...args,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const out: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.on('close', (code) => resolve({ code, output: Buffer.concat(out).toString() }));
  });
}

/** The leak checks every shim integration test runs afterwards. */
export async function assertNoLeaks(cd: PrivateContainerd): Promise<void> {
  assert.deepEqual(await eventually(ourProcesses), [], 'no shim/agent/runc process left');
  assert.deepEqual(ourMounts(), [], 'no mount left');
  assert.deepEqual(lcowState(), [], 'no sandbox state left');
  const tasks = await cd.ctr(['task', 'ls', '-q']);
  assert.equal(tasks.stdout.trim(), '', 'no task left');
  const cs = await cd.ctr(['container', 'ls', '-q']);
  assert.equal(cs.stdout.trim(), '', 'no container left');
}
