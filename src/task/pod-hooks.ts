// What the Task service tells the operations side (src/ops: logs kept per pod, the admin endpoint, metrics,
// the guest's span stream) about a pod's life, and the read-only view of a pod it can ask for. The service
// calls these at four points and knows nothing of what they do.
import type { GuestLogSink, Sandbox, SandboxExitReason } from '../sandbox/index.js';
import type { AgentClient } from './service.js';

export interface PodHooks {
  /** A pod's first Create, before its sandbox boots; the result goes to the sandbox. */
  podStarting(podId: string, annotations: Record<string, string>): { guestLog?: GuestLogSink };
  /** The agent answered; the Create that booted the pod waits for this. */
  podReady(pod: { id: string; sandbox: Sandbox; agent: AgentClient }): Promise<void>;
  /** The sandbox ended (stopped, or crashed). */
  sandboxExited(podId: string, reason: SandboxExitReason): void;
  /** The pod is over: its sandbox was stopped (last task deleted, shim exit) or never booted. */
  podStopped(podId: string): void;
}

export type ProcView = {
  execId: string;
  pid: number;
  state: 'created' | 'running' | 'paused' | 'exited';
  exitStatus: number;
  exitedAt?: Date;
};

export interface PodView {
  id: string;
  state: 'booting' | 'running';
  sandbox?: Sandbox;
  agent?: AgentClient;
  pids: number[];
  containers: Array<{ id: string; bundle: string; processes: ProcView[] }>;
}
