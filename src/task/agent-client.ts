// The Task service's client of the guest agent: every unary call carries a deadline, so a wedged guest
// (frozen VM, hung agent) can never hang an RPC from containerd. Kill and Delete then fall back to stopping the
// sandbox (service.ts). WaitProcess has no deadline on purpose (it returns when the process exits, or fails
// when the connection closes); the stdio and event streams live as long as their process or the pod.
import type { Agent as AgentDesc } from '../gen/agent/v1/agent_pb.js';
import { Code, TtrpcError, type CallOptions, type ServiceClient } from '../ttrpc/index.js';

export type AgentClient = ServiceClient<(typeof AgentDesc)['method']>;
type UnaryName = {
  [K in keyof AgentClient]: AgentClient[K] extends (req: never, opts?: CallOptions) => Promise<unknown> ? K : never;
}[keyof AgentClient];

/** Per-method deadlines (ms). Generous: TCG guests are slow, and a missed deadline stops the pod for Kill/Delete. */
export type AgentDeadlines = Record<Exclude<UnaryName, 'waitProcess'>, number>;

export const DEFAULT_AGENT_DEADLINES: AgentDeadlines = {
  getInfo: 10_000,
  addShare: 60_000,
  removeShare: 15_000,
  createContainer: 90_000,
  startProcess: 60_000,
  execProcess: 30_000,
  signalProcess: 15_000,
  resizePty: 10_000,
  closeStdin: 10_000,
  pauseContainer: 30_000,
  resumeContainer: 30_000,
  updateContainer: 30_000,
  containerStats: 15_000,
  listProcesses: 10_000,
  deleteProcess: 30_000,
  deleteContainer: 60_000,
  writeStdinOnce: 30_000,
  shutdown: 5_000,
  // The command's own limit is at most 600 s (agent.execInUvm); the admin endpoint passes it.
  execInUvm: 610_000,
  // PCI hotplug of the pod NIC, then addresses and routes: slow under TCG.
  configureNetwork: 60_000,
  // A batch of at most 256 host changes replayed on the container's mount (share-notify).
  replayShareChanges: 30_000,
  // UVM templates (the QEMU sandbox calls these itself, never the Task service): PrepareTemplate waits ~5 s for
  // the balloon's last free page reports, then unloads the driver and syncs; AdoptClone sets the clock and
  // reseeds the kernel RNG.
  prepareTemplate: 60_000,
  adoptClone: 30_000,
};

/** `client` with a deadline on every unary call that has none (a caller's own timeoutMs wins). */
export function withDeadlines(client: AgentClient, deadlines: AgentDeadlines = DEFAULT_AGENT_DEADLINES): AgentClient {
  return new Proxy(client, {
    get(target, key, receiver) {
      const fn = Reflect.get(target, key, receiver) as unknown;
      const ms = (deadlines as Record<string | symbol, number | undefined>)[key];
      if (typeof fn !== 'function' || ms === undefined) return fn;
      return (req: unknown, opts?: CallOptions) =>
        (fn as (r: unknown, o?: CallOptions) => unknown).call(target, req, { timeoutMs: ms, ...opts });
    },
  });
}

export function isDeadlineExceeded(err: unknown): boolean {
  return err instanceof TtrpcError && err.code === Code.DEADLINE_EXCEEDED;
}

export function isNotFound(err: unknown): boolean {
  return err instanceof TtrpcError && err.code === Code.NOT_FOUND;
}
