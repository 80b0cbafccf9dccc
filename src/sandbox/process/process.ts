// The `process` sandbox backend: the guest agent runs as a host child process in its own mount namespace
// (`unshare -m`), serving ttrpc on a unix socket in the state dir. NOT VM-isolated: for development and
// fast tests of shim <-> agent <-> runc only.
import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { TtrpcClient } from '../../ttrpc/index.js';
import type { Logger } from '../../util/log.js';
import { spawnAgent, takePrespawnedAgent } from './spawn.js';
import type {
  BootedSandbox,
  Sandbox,
  SandboxExitReason,
  SandboxOptions,
  SandboxRecord,
  SandboxStats,
  Share,
  ShareOptions,
} from '../sandbox.js';
import { SandboxLifecycle } from '../lifecycle.js';
import { processRssBytes, processStartTime } from '../../util/proc.js';

export class ProcessSandbox implements Sandbox {
  readonly backend = 'process';
  readonly isolated = false;
  readonly transport = 'unix';
  private child: ChildProcess | undefined;
  private client: TtrpcClient | undefined;
  private startTime = '';
  private shareSeq = 0;
  private readonly log: Logger;
  private readonly life: SandboxLifecycle;

  constructor(private readonly opts: SandboxOptions) {
    this.log = opts.logger.with({ sandbox: opts.id, backend: 'process' });
    this.life = new SandboxLifecycle(this.log);
  }

  get socketPath(): string {
    return join(this.opts.stateDir, 'agent.sock');
  }

  async boot(): Promise<BootedSandbox> {
    this.life.boot();
    this.log.warn('sandbox backend "process": containers are NOT VM-isolated (development backend)');
    const agent = takePrespawnedAgent(this.opts.stateDir) ?? spawnAgent(this.opts.stateDir);
    const child = agent.child;
    this.child = child;
    // The agent's log is kept per pod (guestLog); the shim's log has it at debug level.
    agent.onLine((line) => {
      this.log.debug('agent', { line });
      this.opts.guestLog?.agent(line);
    });
    let detail: string | undefined;
    const onExit = (code: number | null, signal: string | null): void => {
      this.log.info('agent exited', { code, signal });
      this.client?.close();
      this.life.ended({ code, signal, ...(detail ? { detail } : {}) });
    };
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode);
    else child.once('exit', onExit);
    try {
      await agent.ready;
      this.startTime = (await processStartTime(child.pid!)) ?? '';
      this.client = await TtrpcClient.connect(agent.socketPath);
      // Without its control connection the sandbox is useless: losing it is the sandbox's end.
      this.client.onClose(() => {
        if (this.life.phase !== 'ready') return;
        detail = 'agent connection lost';
        this.log.error('agent connection lost; killing the agent');
        this.killAgent('SIGKILL');
      });
      this.life.ready();
    } catch (err) {
      await this.stop('force');
      throw err;
    }
    return { agent: this.client, pids: [child.pid!] };
  }

  private killAgent(signal: NodeJS.Signals): void {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid!, signal);
    } catch {
      child.kill(signal);
    }
  }

  async addShare(hostPath: string, _opts: ShareOptions): Promise<Share> {
    // Same host, same paths: the agent sees host paths as they are (identity share).
    return { shareId: `share-${++this.shareSeq}`, guestPath: hostPath };
  }

  async removeShare(_shareId: string): Promise<void> {}

  async stats(): Promise<SandboxStats[]> {
    const pid = this.child?.pid;
    if (!pid) return [];
    const rssBytes = await processRssBytes(pid);
    return rssBytes === undefined ? [] : [{ pid, rssBytes }];
  }

  onExit(cb: (reason: SandboxExitReason) => void): void {
    this.life.onExit(cb);
  }

  record(): SandboxRecord {
    return {
      backend: this.backend,
      id: this.opts.id,
      stateDir: this.opts.stateDir,
      pids: this.child?.pid ? [{ pid: this.child.pid, startTime: this.startTime }] : [],
    };
  }

  async stop(mode: 'graceful' | 'force'): Promise<void> {
    this.life.stop();
    this.client?.close();
    const child = this.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill(mode === 'graceful' ? 'SIGTERM' : 'SIGKILL');
      const timer = setTimeout(() => this.killAgent('SIGKILL'), mode === 'graceful' ? 5000 : 0);
      await this.life.gone;
      clearTimeout(timer);
    } else if (!child) this.life.ended({ code: null, signal: null });
    await this.life.gone;
    await cleanupProcessSandbox(this.record());
  }
}

/** Kills the agent (if it is still the recorded incarnation), force-deletes runc containers, removes state. */
export async function cleanupProcessSandbox(rec: SandboxRecord): Promise<void> {
  for (const { pid, startTime } of rec.pids) {
    if (pid > 0 && (await processStartTime(pid)) === startTime) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  }
  const root = join(rec.stateDir, 'runc');
  let ids: string[] = [];
  try {
    ids = await readdir(root);
  } catch {
    // no runc state
  }
  for (const id of ids) await runcForceDelete(root, id);
  await rm(rec.stateDir, { recursive: true, force: true });
}

function runcForceDelete(root: string, id: string): Promise<void> {
  return new Promise((resolve) => {
    const c = spawn('runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
}
