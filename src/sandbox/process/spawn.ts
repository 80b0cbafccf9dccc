// Starting the process backend's agent: `unshare --mount` + node + lcow-agent, ready when it writes to fd 3.
// Light on purpose (no ttrpc, no protobuf): the shim daemon calls prespawnAgent() first thing, so that the
// agent's Node start-up overlaps the daemon's own module loading; ProcessSandbox.boot() then takes it.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { entryScript } from '../../util/install.js';
import { mkdirPrivate } from '../../util/private-fs.js';

const AGENT_SCRIPT = entryScript('lcow-agent');
const BOOT_TIMEOUT_MS = 15_000;

export interface SpawnedAgent {
  readonly stateDir: string;
  readonly socketPath: string;
  readonly child: ChildProcess;
  /** Resolves once the agent listens; rejects if it exits, fails or times out first. */
  readonly ready: Promise<void>;
  /** Receives the agent's stderr lines (lines before the first call are replayed). */
  onLine(cb: (line: string) => void): void;
}

export function spawnAgent(stateDir: string): SpawnedAgent {
  mkdirPrivate(stateDir);
  const socketPath = join(stateDir, 'agent.sock');
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--',
      process.execPath,
      AGENT_SCRIPT,
      '--state-dir',
      stateDir,
      '--listen',
      socketPath,
      '--ready-fd',
      '3',
      '--exit-with-parent',
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], detached: true },
  );
  const buffered: string[] = [];
  let sink: ((line: string) => void) | undefined;
  createInterface({ input: child.stderr! }).on('line', (line) => (sink ? sink(line) : buffered.push(line)));
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('guest agent did not become ready in time')), BOOT_TIMEOUT_MS);
    const fd3 = child.stdio[3] as NodeJS.ReadableStream & { destroy(): void };
    const done = (err?: Error): void => {
      clearTimeout(timer);
      fd3.destroy();
      if (err) reject(err);
      else resolve();
    };
    fd3.once('data', () => done());
    child.once('error', (err) => done(err));
    child.once('exit', (code) => done(new Error(`guest agent exited during boot (code ${code})`)));
  });
  // Marked handled only: whoever takes this agent awaits `ready` and gets its error; one never taken is killed.
  ready.catch(() => undefined);
  return {
    stateDir,
    socketPath,
    child,
    ready,
    onLine(cb) {
      sink = cb;
      for (const l of buffered.splice(0)) cb(l);
    },
  };
}

let prespawned: SpawnedAgent | undefined;

/** Starts the agent for `stateDir` ahead of the first Create (idempotent). */
export function prespawnAgent(stateDir: string): void {
  if (prespawned) return;
  prespawned = spawnAgent(stateDir);
}

/** The prespawned agent for `stateDir` if it is still alive (then it is no longer held here). */
export function takePrespawnedAgent(stateDir: string): SpawnedAgent | undefined {
  const p = prespawned;
  if (!p || p.stateDir !== stateDir) return undefined;
  prespawned = undefined;
  if (p.child.exitCode !== null || p.child.signalCode !== null) return undefined;
  return p;
}

/** Kills an agent that was prespawned but never taken (shim exit). */
export function discardPrespawnedAgent(): void {
  const p = prespawned;
  prespawned = undefined;
  if (p && p.child.exitCode === null && p.child.signalCode === null) {
    try {
      process.kill(-p.child.pid!, 'SIGKILL');
    } catch {
      p.child.kill('SIGKILL');
    }
  }
}
