// A pod's logs, kept where the pod's state is not: <log_root>/<namespace>/<pod>/. The state dir
// (/run/lcow/<ns>/<pod>) goes when the pod stops and containerd deletes the bundle at delete, but an operator
// reads a console after the pod died. So:
//   console.log   every line the guest's serial console printed (kernel, init, the agent's stderr); rotated
//   agent.log     the agent's own JSON log lines; rotated
//   pod.json      who the pod was and how it ended
// The directory stays after the pod is gone, until `lcowctl prune` deletes it or the retention (newest
// log_keep_pods stopped pods per namespace, none older than log_keep_days) does, at the next pod start.
// Agent lines also go to the shim's log (the log containerd gives the shim) at their own level, with the pod id.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GuestLogSink } from '../sandbox/index.js';
import type { Logger, LogLevel } from '../util/log.js';
import { RotatingFile } from '../util/rotating-file.js';
import { AGENT_LOG, CONSOLE_LOG, POD_META, podLogDir, type OpsConfig, type PodMeta } from './config.js';

const LEVELS = new Set(['trace', 'debug', 'info', 'warn', 'error']);

export class PodLogs implements GuestLogSink {
  readonly dir: string;
  private readonly consoleFile: RotatingFile;
  private readonly agentFile: RotatingFile;
  private meta: PodMeta;

  constructor(
    cfg: OpsConfig,
    meta: Omit<PodMeta, 'logDir'>,
    private readonly log: Logger,
  ) {
    this.dir = podLogDir(cfg.logRoot, meta.namespace, meta.id);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.meta = { ...meta, logDir: this.dir };
    this.writeMeta();
    const opts = { maxBytes: cfg.logMaxBytes, keep: cfg.logFiles };
    this.consoleFile = new RotatingFile(join(this.dir, CONSOLE_LOG), opts);
    this.agentFile = new RotatingFile(join(this.dir, AGENT_LOG), opts);
  }

  console(line: string): void {
    this.consoleFile.writeLine(line);
    // The agent's stderr shares the console: its JSON lines are its log.
    if (line.startsWith('{"')) this.agent(line);
  }

  agent(line: string): void {
    this.agentFile.writeLine(line);
    let entry: Record<string, unknown> | undefined;
    try {
      const v = JSON.parse(line) as unknown;
      if (v && typeof v === 'object' && !Array.isArray(v)) entry = v as Record<string, unknown>;
    } catch {
      entry = undefined;
    }
    const level: LogLevel = entry && LEVELS.has(entry.level as string) ? (entry.level as LogLevel) : 'info';
    if (!this.log.enabled(level)) return;
    if (!entry) return this.log.log(level, 'agent', { line: line.slice(0, 4096) });
    // Re-logged with the pod's fields; the guest's own time and fields kept (bounded) under `agent`.
    const { msg, level: _level, time, ...rest } = entry;
    void _level;
    const fields = JSON.stringify(rest);
    this.log.log(level, `agent: ${String(msg ?? '').slice(0, 1024)}`, {
      guestTime: time,
      agent: fields.length <= 4096 ? rest : fields.slice(0, 4096),
    });
  }

  update(patch: Partial<PodMeta>): void {
    this.meta = { ...this.meta, ...patch };
    this.writeMeta();
  }

  private writeMeta(): void {
    try {
      const tmp = join(this.dir, `.${POD_META}.tmp`);
      writeFileSync(tmp, JSON.stringify(this.meta, null, 2) + '\n', { mode: 0o600 });
      renameSync(tmp, join(this.dir, POD_META));
    } catch (err) {
      this.log.warn('cannot write pod.json', { dir: this.dir, error: err });
    }
  }

  close(): void {
    this.consoleFile.close();
    this.agentFile.close();
  }
}

/** pod.json of a log dir, or undefined. */
export function readPodMeta(dir: string): PodMeta | undefined {
  try {
    const m = JSON.parse(readFileSync(join(dir, POD_META), 'utf8')) as PodMeta;
    return typeof m.id === 'string' && typeof m.namespace === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the shim that wrote a pod.json still runs (so the pod is not over even without stoppedAt). */
export function shimAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('containerd-shim-lcow');
  } catch {
    return false;
  }
}

/** When a pod's logs stopped growing for good: stoppedAt, or for a shim that died without saying, the dir's mtime. */
export function stoppedTime(dir: string, meta: PodMeta): number | undefined {
  if (meta.stoppedAt) return Date.parse(meta.stoppedAt);
  if (shimAlive(meta.shimPid)) return undefined;
  try {
    return statSync(dir).mtimeMs;
  } catch {
    return undefined;
  }
}

/**
 * Deletes the logs of stopped pods in `namespace` beyond the newest `keepPods`, or older than `keepDays`.
 * Never a running pod's (`except` is the pod starting now). Returns the pod ids removed.
 */
export function pruneLogs(
  logRoot: string,
  namespace: string,
  keepPods: number,
  keepDays: number,
  except?: string,
): string[] {
  const nsDir = join(logRoot, namespace);
  if (!existsSync(nsDir)) return [];
  const stopped: Array<{ id: string; dir: string; at: number }> = [];
  for (const id of readdirSync(nsDir)) {
    if (id === except) continue;
    const dir = join(nsDir, id);
    const meta = readPodMeta(dir);
    if (!meta) continue;
    const at = stoppedTime(dir, meta);
    if (at !== undefined) stopped.push({ id, dir, at });
  }
  stopped.sort((a, b) => b.at - a.at);
  const cutoff = Date.now() - keepDays * 86_400_000;
  const removed: string[] = [];
  stopped.forEach((p, i) => {
    if (i >= keepPods || p.at < cutoff) {
      rmSync(p.dir, { recursive: true, force: true });
      removed.push(p.id);
    }
  });
  return removed;
}
