// Operations settings from the runtime config TOML (the file containerd names in the runtime's options) and
// where pod state and logs live. Every key is optional:
//
//   log_level = "info"          # the shim's log level (containerd's -debug wins: debug)
//   log_root = "/var/log/lcow"  # per-pod logs: <log_root>/<namespace>/<pod>/{console,agent}.log, pod.json
//   log_max_bytes = 1048576     # one log file's size before it rotates
//   log_files = 2               # rotated files kept besides the current one
//   log_keep_pods = 20          # logs of stopped pods kept per namespace (newest first)...
//   log_keep_days = 7           # ...and none older than this
//   allow_uvm_exec = false      # `lcowctl exec POD -- CMD` runs commands in the UVM (debugging; logged)
import { join } from 'node:path';
import { parseLogLevel, type LogLevel } from '../util/log.js';

export const DEFAULT_STATE_ROOT = '/run/lcow';
export const DEFAULT_LOG_ROOT = '/var/log/lcow';
export const ADMIN_SOCKET = 'admin.sock';
export const POD_META = 'pod.json';
export const CONSOLE_LOG = 'console.log';
export const AGENT_LOG = 'agent.log';

export interface OpsConfig {
  logLevel: LogLevel | undefined;
  logRoot: string;
  logMaxBytes: number;
  logFiles: number;
  logKeepPods: number;
  logKeepDays: number;
  allowUvmExec: boolean;
}

function positive(v: unknown, fallback: number, min = 0): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) && n >= min ? Math.floor(n) : fallback;
}

export function opsConfig(runtime: Record<string, unknown> = {}, env: NodeJS.ProcessEnv = process.env): OpsConfig {
  const level = typeof runtime.log_level === 'string' ? runtime.log_level.toLowerCase() : undefined;
  return {
    logLevel: level ? parseLogLevel(level === 'warning' ? 'warn' : level, 'info') : undefined,
    logRoot:
      typeof runtime.log_root === 'string' && runtime.log_root.startsWith('/')
        ? runtime.log_root
        : env.LCOW_LOG_ROOT || DEFAULT_LOG_ROOT,
    logMaxBytes: positive(runtime.log_max_bytes, 1 << 20, 4096),
    logFiles: positive(runtime.log_files, 2, 0),
    logKeepPods: positive(runtime.log_keep_pods, 20, 0),
    logKeepDays: positive(runtime.log_keep_days, 7, 0),
    allowUvmExec: runtime.allow_uvm_exec === true,
  };
}

/** Pod ids and namespaces are containerd ids: safe as one path component. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function isSafeId(id: string): boolean {
  return ID_RE.test(id);
}

export function podLogDir(logRoot: string, namespace: string, pod: string): string {
  if (!isSafeId(namespace) || !isSafeId(pod)) throw new Error(`unsafe pod or namespace name: ${namespace}/${pod}`);
  return join(logRoot, namespace, pod);
}

/** The JSON the shim keeps in <log dir>/pod.json (also after the pod is gone). */
export interface PodMeta {
  id: string;
  namespace: string;
  backend: string;
  shimPid: number;
  startedAt: string;
  stoppedAt?: string;
  /** How the sandbox ended: "stopped", or "crashed" (code/signal). */
  exit?: { kind: string; code?: number | null; signal?: string | null };
  stateDir: string;
  logDir: string;
}
