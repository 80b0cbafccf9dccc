// The Task service (containerd.task.v2.Task). One shim serves one pod: the first Create boots the pod's sandbox
// (CRI: the sandbox container's Create), later Creates with the same group (io.kubernetes.cri.sandbox-id /
// io.containerd.runc.v2.group) join it. The work happens in the guest agent; the service keeps the state that
// containerd sees, moved only through state.ts (one transition function) under a per-process lock.
//
// Invariants (tested in test/unit/task): a process is in exactly one state; its exit is published at most once
// and never lost (every started process that ends gets one TaskExit, after its TaskStart); Wait returns once
// the exit is recorded; Init's TaskExit comes after its execs'. Every agent call has a deadline; when Kill or
// Delete miss one, the sandbox is stopped, which ends every process in it.
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { create, toBinary, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { AnySchema, timestampDate, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import { Agent as AgentDesc } from '../gen/agent/v1/agent_pb.js';
import * as ev from '../gen/containerd/events/task_pb.js';
import { ProcessDetailsSchema } from '../gen/containerd/runc/options_pb.js';
import type * as v2 from '../gen/containerd/task/v2/shim_pb.js';
import { Status } from '../gen/containerd/types/task/task_pb.js';
import type { Sandbox, SandboxExitReason, SandboxOptions } from '../sandbox/index.js';
import { instrumentClient } from '../telemetry/client.js';
import { withSpan } from '../telemetry/index.js';
import { createClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { writePrivateFile } from '../util/private-fs.js';
import {
  DEFAULT_AGENT_DEADLINES,
  isDeadlineExceeded,
  withDeadlines,
  type AgentClient,
  type AgentDeadlines,
} from './agent-client.js';
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  TaskError,
  unimplemented,
  validateId,
} from './errors.js';
import { Pod, Proc, Task } from './model.js';
import { SANDBOX_RECORD_FILE, SHIM_VERSION } from './record.js';
import { allows, isLive, type ProcEvent } from './state.js';
import { StdioRelay, type StdioPaths } from './stdio.js';
import type { PodHooks, PodView } from './pod-hooks.js';
import { carryPodNetwork, hostNetnsPath, refuseHostNetwork, type SpecWithNamespaces } from './pod-network.js';
import {
  mountsRootfsOnHost,
  prepareContainerFs,
  releaseContainerFs,
  shareBindMounts,
  type OciSpecLike,
  type PreparedFs,
} from './uvm-fs.js';

export { SANDBOX_RECORD_FILE, SHIM_VERSION };
export type { AgentClient };

export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
export const GROUP_ANNOTATION = 'io.containerd.runc.v2.group';

export interface EventPublisher {
  /** Enqueues an event; never throws, never blocks. */
  publish(topic: string, typeName: string, payload: Uint8Array): void;
}

/** Makes (does not boot) the sandbox of a pod: the configured backend in the shim, a fake in unit tests. */
export type SandboxFactory = (opts: SandboxOptions) => Promise<Sandbox>;

export interface TaskServiceOptions {
  namespace: string;
  logger: Logger;
  publisher: EventPublisher;
  createSandbox: SandboxFactory;
  /** Root for sandbox state dirs (e.g. /run/lcow/<ns>). */
  stateRoot: string;
  /** The runtime config TOML (UVM sizing...), passed to the sandbox backend. */
  runtimeConfig?: Record<string, unknown>;
  /** 1 or 2: the host's cgroup mode; Stats answers in that shape. */
  hostCgroupVersion: 1 | 2;
  /** Called when Shutdown decided the shim may exit (after the reply is sent). */
  onShutdown: () => void;
  /** Deadlines of the agent calls (tests shorten them). */
  agentDeadlines?: AgentDeadlines;
  /** Bounds on waiting for exits and output during Delete and exit reporting (default 10 s / 5 s). */
  exitWaitMs?: number;
  drainWaitMs?: number;
  /** Operations (logs, admin endpoint, metrics, guest spans): told about each pod's life. */
  hooks?: PodHooks;
}

/** The parts of the OCI spec the service reads (the rest passes through to the agent). */
interface BundleSpec extends OciSpecLike, SpecWithNamespaces {
  annotations?: Record<string, string>;
  process?: { consoleSize?: { height?: number; width?: number } };
}

type RootfsMount = { type: string; source: string; target: string; options: string[] };

const ts = (d: Date | undefined): Timestamp | undefined => (d ? timestampFromDate(d) : undefined);
const SIGKILL = 9;

export class TaskService {
  private pod: Pod | undefined;
  private podBooting: Promise<Pod> | undefined;
  /** Task ids whose Create is in flight: taken (AlreadyExists), not yet visible to other RPCs. */
  private readonly creating = new Set<string>();
  private readonly log: Logger;
  private readonly exitWaitMs: number;
  private readonly drainWaitMs: number;
  private shuttingDown = false;

  constructor(private readonly opts: TaskServiceOptions) {
    this.log = opts.logger;
    this.exitWaitMs = opts.exitWaitMs ?? 10_000;
    this.drainWaitMs = opts.drainWaitMs ?? 5_000;
  }

  /** Tasks created or being created: Shutdown exits the shim only at zero. */
  get taskCount(): number {
    return (this.pod?.tasks.size ?? 0) + this.creating.size;
  }

  private publish<D extends DescMessage>(topic: string, schema: D, init: MessageInitShape<D>): void {
    this.opts.publisher.publish(topic, schema.typeName, toBinary(schema, create(schema, init)));
  }

  private task(id: string): Task {
    validateId('id', id);
    const t = this.pod?.tasks.get(id);
    if (!t) throw notFound(`task ${id} not found`);
    return t;
  }

  private proc(id: string, execId: string): Proc {
    const t = this.task(id);
    if (execId === '') return t.init;
    const p = t.execs.get(execId);
    if (!p) throw notFound(`process ${execId} does not exist in task ${id}`);
    return p;
  }

  // ---- exits: the one place a process leaves the live states ----

  /**
   * Records that `p` ended with `status` (event 'exit', or 'kill'/'startFailed' for an exec that never ran)
   * and publishes TaskExit if a start was published for it. Synchronous: nothing can interleave between the
   * state move and the event. Returns false when `p` had already ended (the exit is reported once).
   */
  private finish(p: Proc, status: number, at: Date, event: ProcEvent = 'exit'): boolean {
    if (!allows(p, event)) return false;
    const publish = p.kind === 'init' || p.started;
    p.exitStatus = status;
    p.exitedAt = at;
    if (publish)
      this.publish('/tasks/exit', ev.TaskExitSchema, {
        containerId: p.task.id,
        id: p.id,
        pid: p.pid,
        exitStatus: status,
        exitedAt: ts(at),
      });
    p.move(event); // resolves the exit latch: Wait returns after the event went out
    p.task.log.info('process exited', { exec: p.execId, pid: p.pid, status, published: publish });
    return true;
  }

  /** An exit seen from outside Start (agent wait, sandbox gone): recorded only after Start's outcome. */
  private async recordExit(p: Proc, status: number, at: Date): Promise<void> {
    // Only Start's outcome matters here, not its error: Start reports that to its own caller.
    for (let s = p.starting; s; s = p.starting === s ? undefined : p.starting) await s.catch(() => undefined);
    this.finish(p, status, at);
  }

  /** The exit watcher: agent WaitProcess, then output drained, then (init) execs gone, then TaskExit. */
  private watch(p: Proc): void {
    const task = p.task;
    void (async () => {
      let status = 255;
      let at = new Date();
      try {
        const r = await task.pod.agent.waitProcess({ containerId: task.id, execId: p.execId });
        status = r.exitStatus;
        if (r.exitedAt) at = timestampDate(r.exitedAt);
      } catch (err) {
        task.log.warn('wait failed', { exec: p.execId, error: err });
      }
      await withTimeout(p.stdio.outputDone(), this.drainWaitMs);
      // The container is gone: its execs die with its pid namespace; their exits go first.
      if (p.kind === 'init')
        await withTimeout(Promise.all([...task.execs.values()].map((e) => e.exited)), this.drainWaitMs);
      await this.recordExit(p, status, at);
    })();
  }

  // ---- pod / sandbox ----

  /**
   * What the pod's sandbox is made from: the first task's spec (CRI: the sandbox container). Hooks that need
   * the sandbox container's spec (e.g. its network namespace) belong here.
   */
  private sandboxOptions(podId: string, spec: BundleSpec): SandboxOptions {
    const annotations = spec.annotations ?? {};
    return {
      id: podId,
      stateDir: join(this.opts.stateRoot, podId),
      logger: this.log,
      annotations,
      // CNI's network namespace (pod-network.ts): a VM backend checks it can carry it before booting.
      podNetns: hostNetnsPath(spec),
      runtimeConfig: this.opts.runtimeConfig,
      guestLog: this.opts.hooks?.podStarting(podId, annotations).guestLog,
    };
  }

  /** The pod a new task of group `podId` joins; boots its sandbox for the pod's first task. */
  private async podFor(podId: string, spec: BundleSpec, bundle: string): Promise<Pod> {
    if (this.pod?.stopping) await this.pod.stopping; // its last task was deleted: the next task boots anew
    const pod = this.pod;
    if (pod) {
      if (pod.id !== podId)
        throw failedPrecondition(`this shim serves pod ${pod.id}; cannot create a task of pod ${podId}`);
      if (pod.gone) throw failedPrecondition(`the sandbox of pod ${pod.id} is gone; delete its tasks first`);
      return pod;
    }
    if (!this.podBooting) {
      const booting = this.bootPod(podId, spec, bundle).catch((err: unknown) => {
        this.log.error('the sandbox did not boot', { pod: podId, error: err });
        throw err;
      });
      this.podBooting = booting;
      booting.then(
        () => (this.podBooting = undefined),
        () => {
          this.podBooting = undefined;
          if (!this.pod) this.opts.hooks?.podStopped(podId);
        },
      );
    }
    return this.podBooting;
  }

  private async bootPod(podId: string, spec: BundleSpec, bundle: string): Promise<Pod> {
    const sandbox = await this.opts.createSandbox(this.sandboxOptions(podId, spec));
    if (!sandbox.isolated) this.log.warn('sandbox is not VM-isolated', { backend: sandbox.backend, pod: podId });
    else refuseHostNetwork(spec, spec.annotations ?? {}); // before a VM boots (pod-network.ts)
    // Recorded before the boot: if the shim dies while booting, `delete` still finds the state to remove.
    await this.writeRecord(bundle, podId, sandbox, true);
    const booted = await withSpan('sandbox boot', { 'lcow.backend': sandbox.backend }, () => sandbox.boot());
    // Agent calls are timed (metrics) and, when tracing, CLIENT spans carrying the trace into the guest; every
    // one has a deadline (agent-client.ts).
    const agent = withDeadlines(
      instrumentClient(AgentDesc, createClient(AgentDesc, booted.agent), { background: ['WaitProcess'] }),
      this.opts.agentDeadlines ?? DEFAULT_AGENT_DEADLINES,
    );
    try {
      await agent.getInfo({});
    } catch (err) {
      await sandbox.stop('force');
      throw err;
    }
    const pod = new Pod(podId, sandbox, agent, booted.pids);
    sandbox.onExit((reason) => {
      this.opts.hooks?.sandboxExited(podId, reason);
      void this.sandboxEnded(pod, reason);
    });
    this.subscribeAgentEvents(pod);
    this.pod = pod;
    await this.opts.hooks?.podReady(pod);
    return pod;
  }

  /** The agent's asynchronous events (OOM kills) become containerd events for the life of the pod. */
  private subscribeAgentEvents(pod: Pod): void {
    const stream = pod.agent.subscribeEvents({});
    void (async () => {
      try {
        for await (const e of stream) {
          if (e.event.case === 'oom') {
            this.log.warn('container OOM-killed', { pod: pod.id, container: e.containerId });
            this.publish('/tasks/oom', ev.TaskOOMSchema, { containerId: e.containerId });
          }
        }
      } catch (err) {
        if (!pod.gone) this.log.debug('agent event stream ended', { pod: pod.id, error: err });
      }
    })();
  }

  /** The sandbox is gone (for any reason): every process in it has ended; execs are reported before init. */
  private async sandboxEnded(pod: Pod, reason: SandboxExitReason): Promise<void> {
    pod.gone = true;
    const live = [...pod.tasks.values()].flatMap((t) => t.procs).filter((p) => isLive(p.state));
    if (reason.kind === 'crashed') this.log.error('sandbox ended unexpectedly', { pod: pod.id, ...reason });
    else if (live.length > 0) this.log.warn('sandbox stopped with live processes', { pod: pod.id, n: live.length });
    const at = new Date();
    await Promise.all(live.filter((p) => p.kind === 'exec').map((p) => this.recordExit(p, 255, at)));
    await Promise.all(live.filter((p) => p.kind === 'init').map((p) => this.recordExit(p, 255, at)));
  }

  /**
   * The agent missed a deadline where the caller cannot be left hanging (Kill, Delete): stop the sandbox.
   * Every process in it then ends (sandboxEnded), which is what Kill asked for and what Delete needs.
   */
  private async agentUnresponsive(pod: Pod, call: string): Promise<void> {
    this.log.error('the agent missed a deadline; stopping the sandbox', { pod: pod.id, call });
    await pod.sandbox
      .stop('force')
      .catch((err: unknown) => this.log.warn('sandbox stop failed', { pod: pod.id, error: err }));
  }

  private async writeRecord(bundle: string, podId: string, sandbox: Sandbox, owner: boolean): Promise<void> {
    const rec = {
      shimPid: process.pid,
      namespace: this.opts.namespace,
      pod: podId,
      owner,
      sandbox: sandbox.record(),
    };
    // 0600 whatever the umask: it names the VM's pid, its state dir and host mounts.
    writePrivateFile(join(bundle, SANDBOX_RECORD_FILE), JSON.stringify(rec));
  }

  private async stopPod(pod: Pod): Promise<void> {
    if (this.pod !== pod) return;
    pod.stopping ??= (async () => {
      this.log.info('stopping sandbox', { pod: pod.id });
      await pod.sandbox.stop('graceful').catch((err: unknown) => this.log.warn('sandbox stop failed', { error: err }));
      if (this.pod === pod) this.pod = undefined;
      this.opts.hooks?.podStopped(pod.id);
    })();
    await pod.stopping;
  }

  // ---- RPCs ----

  async create(req: v2.CreateTaskRequest): Promise<MessageInitShape<typeof v2.CreateTaskResponseSchema>> {
    validateId('id', req.id);
    if (!isAbsolute(req.bundle) || req.bundle.includes('\0')) throw invalidArgument('bundle must be an absolute path');
    if (req.checkpoint || req.parentCheckpoint) throw unimplemented('checkpoint/restore is not supported by lcow');
    if (this.shuttingDown) throw failedPrecondition('shim is shutting down');
    const spec = await readBundleSpec(req.bundle);
    const annotations = spec.annotations ?? {};
    const podId = annotations[GROUP_ANNOTATION] || annotations[SANDBOX_ID_ANNOTATION] || req.id;
    validateId('sandbox id', podId);
    if (this.pod?.tasks.has(req.id) || this.creating.has(req.id)) throw alreadyExists(`task ${req.id} already exists`);
    this.creating.add(req.id);
    try {
      const pod = await this.podFor(podId, spec, req.bundle);
      return await this.createTask(pod, req, spec);
    } finally {
      this.creating.delete(req.id);
    }
  }

  /** Create's second half, in the pod: rootfs and mounts, stdio, the agent's container, the exit watcher. */
  private async createTask(
    pod: Pod,
    req: v2.CreateTaskRequest,
    spec: BundleSpec,
  ): Promise<MessageInitShape<typeof v2.CreateTaskResponseSchema>> {
    const log = this.log.with({ pod: pod.id, container: req.id });
    const paths: StdioPaths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const task = new Task(req.id, req.bundle, pod, log);
    let stdio: StdioRelay | undefined;
    let containerCreated = false;
    try {
      // The client's fifos may be gone already (e.g. ctr died with containerd while the UVM booted).
      stdio = await StdioRelay.open(paths, { id: req.id, namespace: this.opts.namespace }, log);
      task.init = new Proc(task, '', paths, stdio);
      if (pod.sandbox.isolated) refuseHostNetwork(spec, spec.annotations ?? {});
      await carryPodNetwork(pod.sandbox, spec); // pod-network.ts: the CNI netns, carried into the VM
      const rootfs = await this.prepareRootfs(pod, task, req.rootfs, spec);
      const size = spec.process?.consoleSize;
      const r = await pod.agent.createContainer({
        containerId: req.id,
        specJson: Buffer.from(JSON.stringify(spec)),
        rootfs,
        stdio: {
          terminal: req.terminal,
          stdin: stdio.wantsStdin,
          stdout: stdio.wantsStdout,
          stderr: stdio.wantsStderr,
          width: size?.width ?? 0,
          height: size?.height ?? 0,
        },
      });
      containerCreated = true;
      task.init.pid = r.pid;
      await this.writeRecord(req.bundle, pod.id, pod.sandbox, pod.tasks.size === 0);
      if (pod.gone) throw failedPrecondition(`the sandbox of pod ${pod.id} ended during Create`);
    } catch (err) {
      log.warn('create failed', { error: err });
      stdio?.close();
      if (containerCreated || (stdio && !isDeadlineExceeded(err)))
        await pod.agent
          .deleteContainer({ containerId: req.id })
          .catch((delErr: unknown) =>
            log.warn('deleting the half-created container in the guest failed', { error: delErr }),
          );
      await this.releaseFs(task);
      // A pod whose only task failed to be created has no reason to keep its sandbox.
      if (pod.tasks.size === 0 && this.creating.size <= 1) await this.stopPod(pod);
      throw err;
    }
    const init = task.init;
    pod.tasks.set(req.id, task);
    stdio.attach(pod.agent, req.id, '');
    this.publish('/tasks/create', ev.TaskCreateSchema, {
      containerId: req.id,
      bundle: req.bundle,
      rootfs: req.rootfs,
      io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
      checkpoint: req.checkpoint,
      pid: init.pid,
    });
    this.watch(init);
    log.info('task created', { pid: init.pid });
    return { pid: init.pid };
  }

  /**
   * The container's root and mounts as the guest sees them. VM sandboxes: the rootfs is mounted on the host
   * and shared whole, bind mounts shared (uvm-fs.ts). Otherwise the rootfs mounts go to the agent with their
   * host paths shared, or the bundle's rootfs directory is shared as is. Rewrites `spec` for the guest.
   */
  private async prepareRootfs(pod: Pod, task: Task, mounts: RootfsMount[], spec: BundleSpec): Promise<RootfsMount[]> {
    const attached = await pod.sandbox.prepareRootfs?.(task.id, mounts);
    if (attached) {
      // The backend attached the rootfs itself (hcs: VHD layers over SCSI); the agent stacks them. The spec's
      // bind mounts are shared as with any VM sandbox.
      task.attachedRootfs = attached;
      const fsState: PreparedFs = { shareIds: [], fileHolders: [] };
      task.fs = fsState;
      await shareBindMounts(pod.sandbox, spec, fsState);
      return attached.rootfs;
    }
    if (mountsRootfsOnHost(pod.sandbox)) {
      task.fs = await prepareContainerFs(pod.sandbox, task.bundle, spec, mounts, task.log);
      return [];
    }
    const rootfs: RootfsMount[] = [];
    for (const m of mounts) rootfs.push(await this.shareMount(pod, m));
    if (rootfs.length === 0) {
      const p = spec.root?.path ?? 'rootfs';
      const share = await pod.sandbox.addShare(isAbsolute(p) ? p : join(task.bundle, p), {
        readOnly: spec.root?.readonly ?? false,
      });
      spec.root = { ...(spec.root ?? {}), path: share.guestPath };
    }
    return rootfs;
  }

  /** Host paths inside a rootfs mount become guest paths through the sandbox's shares. */
  private async shareMount(pod: Pod, m: RootfsMount): Promise<RootfsMount> {
    const share = async (p: string): Promise<string> => (await pod.sandbox.addShare(p, { readOnly: false })).guestPath;
    const options: string[] = [];
    for (const o of m.options) {
      const eq = o.indexOf('=');
      const key = eq > 0 ? o.slice(0, eq) : '';
      if (m.type === 'overlay' && (key === 'lowerdir' || key === 'upperdir' || key === 'workdir')) {
        const dirs = await Promise.all(
          o
            .slice(eq + 1)
            .split(':')
            .map(share),
        );
        options.push(`${key}=${dirs.join(':')}`);
      } else options.push(o);
    }
    const source = m.type === 'bind' || m.source.startsWith('/') ? await share(m.source) : m.source;
    return { type: m.type, source, target: m.target, options };
  }

  private async releaseFs(task: Task): Promise<void> {
    const attached = task.attachedRootfs;
    task.attachedRootfs = undefined;
    await attached?.release().catch((err: unknown) => task.log.warn('releasing the rootfs failed', { error: err }));
    const fsState = task.fs;
    task.fs = undefined;
    if (fsState) await releaseContainerFs(task.pod.sandbox, fsState, task.log);
  }

  async start(req: v2.StartRequest): Promise<MessageInitShape<typeof v2.StartResponseSchema>> {
    const p = this.proc(req.id, req.execId);
    return p.lock.run(async () => {
      p.check('start');
      const task = p.task;
      const run = (async () => {
        // An exec's stdio is attached at Start (its stdin fifo is opened then; see StdioRelay.openStdin).
        if (p.kind === 'exec') p.stdio.attach(task.pod.agent, task.id, p.execId);
        const r = await task.pod.agent.startProcess({ containerId: task.id, execId: p.execId });
        p.pid = r.pid;
        p.move('start');
        p.started = true;
        // Published before any exit of this process can be (recordExit waits for `starting`).
        if (p.kind === 'init') this.publish('/tasks/start', ev.TaskStartSchema, { containerId: task.id, pid: p.pid });
        else
          this.publish('/tasks/exec-started', ev.TaskExecStartedSchema, {
            containerId: task.id,
            execId: p.execId,
            pid: p.pid,
          });
      })();
      p.starting = run;
      try {
        await run;
      } catch (err) {
        // A failed exec start is an exit with status 1 (no TaskExit: nothing started). A failed init start
        // leaves the task created: containerd deletes it, which kills whatever runc left.
        if (p.kind === 'exec') this.finish(p, 1, new Date(), 'startFailed');
        throw err;
      } finally {
        p.starting = undefined;
      }
      if (p.kind === 'exec') this.watch(p);
      task.log.info('process started', { exec: p.execId, pid: p.pid });
      return { pid: p.pid };
    });
  }

  async delete(req: v2.DeleteRequest): Promise<MessageInitShape<typeof v2.DeleteResponseSchema>> {
    const p = this.proc(req.id, req.execId);
    return p.lock.run(async () => {
      p.check('delete');
      if (p.kind === 'exec') await this.deleteExec(p);
      else await this.deleteTask(p);
      return { pid: p.pid, exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
    });
  }

  private async deleteExec(p: Proc): Promise<void> {
    const task = p.task;
    if (p.state === 'created') {
      p.exitStatus = 0; // hcsshim's ForceExit(0) of a never-started exec; no TaskExit
      p.exitedAt = new Date();
    }
    try {
      await task.pod.agent.deleteProcess({ containerId: task.id, execId: p.execId });
    } catch (err) {
      if (isDeadlineExceeded(err)) await this.agentUnresponsive(task.pod, 'DeleteProcess');
      else task.log.debug('agent delete process', { exec: p.execId, error: err });
    }
    p.stdio.close();
    task.execs.delete(p.execId);
    p.move('delete');
  }

  private async deleteTask(init: Proc): Promise<void> {
    const task = init.task;
    const pod = task.pod;
    if (init.state === 'created' && !pod.gone) {
      // Never started: kill what runc created, then wait for the watcher to see it go.
      try {
        await pod.agent.signalProcess({ containerId: task.id, execId: '', signal: SIGKILL, all: true });
      } catch (err) {
        if (isDeadlineExceeded(err)) await this.agentUnresponsive(pod, 'SignalProcess');
        else task.log.debug('kill before delete', { error: err });
      }
      await withTimeout(init.exited, this.exitWaitMs);
    }
    // Execs end with the container: never-started ones silently (status 0), running ones with their TaskExit.
    for (const e of task.execs.values()) if (e.state === 'created') this.finish(e, 0, new Date(), 'kill');
    await withTimeout(Promise.all(task.procs.map((q) => q.exited)), this.drainWaitMs);
    const at = new Date();
    for (const q of task.procs) if (isLive(q.state)) this.finish(q, 255, at);
    if (!pod.gone) {
      try {
        await pod.agent.deleteContainer({ containerId: task.id });
      } catch (err) {
        if (isDeadlineExceeded(err)) await this.agentUnresponsive(pod, 'DeleteContainer');
        else task.log.warn('agent delete failed', { error: err });
      }
    }
    for (const e of task.execs.values()) {
      e.stdio.close();
      e.move('delete');
    }
    task.execs.clear();
    init.stdio.close();
    await this.releaseFs(task);
    pod.tasks.delete(task.id);
    init.move('delete');
    this.publish('/tasks/delete', ev.TaskDeleteSchema, {
      containerId: task.id,
      pid: init.pid,
      exitStatus: init.exitStatus,
      exitedAt: ts(init.exitedAt),
      id: task.id,
    });
    task.log.info('task deleted');
    if (pod.tasks.size === 0 && this.creating.size === 0) await this.stopPod(pod);
  }

  async exec(req: v2.ExecProcessRequest): Promise<void> {
    const task = this.task(req.id);
    validateId('exec id', req.execId);
    if (task.execs.has(req.execId) || task.addingExecs.has(req.execId))
      throw alreadyExists(`exec process ${req.execId} already exists`);
    task.init.check('exec');
    if (!req.spec || req.spec.value.length === 0) throw invalidArgument('exec spec is missing');
    if (req.spec.value.length > 1 << 20) throw invalidArgument('exec spec is too large');
    let proc: { consoleSize?: { width?: number; height?: number } };
    try {
      proc = JSON.parse(Buffer.from(req.spec.value).toString('utf8')) as typeof proc;
    } catch {
      throw invalidArgument('exec spec is not a JSON OCI process');
    }
    const paths: StdioPaths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const log = task.log.with({ exec: req.execId });
    task.addingExecs.add(req.execId);
    try {
      const stdio = await StdioRelay.open(paths, { id: task.id, namespace: this.opts.namespace }, log, {
        deferStdin: true,
      });
      try {
        await task.pod.agent.execProcess({
          containerId: task.id,
          execId: req.execId,
          processJson: req.spec.value,
          stdio: {
            terminal: req.terminal,
            stdin: stdio.wantsStdin,
            stdout: stdio.wantsStdout,
            stderr: stdio.wantsStderr,
            width: proc.consoleSize?.width ?? 0,
            height: proc.consoleSize?.height ?? 0,
          },
        });
        if (!task.pod.tasks.has(task.id) || !isLive(task.init.state))
          throw failedPrecondition(`task ${task.id} ended while the exec was being added`);
      } catch (err) {
        stdio.close();
        throw err;
      }
      task.execs.set(req.execId, new Proc(task, req.execId, paths, stdio));
    } finally {
      task.addingExecs.delete(req.execId);
    }
    this.publish('/tasks/exec-added', ev.TaskExecAddedSchema, { containerId: task.id, execId: req.execId });
  }

  state(req: v2.StateRequest): MessageInitShape<typeof v2.StateResponseSchema> {
    const p = this.proc(req.id, req.execId);
    p.check('state');
    const status = {
      created: Status.CREATED,
      running: Status.RUNNING,
      paused: Status.PAUSED,
      exited: Status.STOPPED,
      deleted: Status.STOPPED,
    }[p.state];
    const exited = p.state === 'exited';
    return {
      id: p.id,
      bundle: p.task.bundle,
      pid: p.pid,
      status,
      stdin: p.paths.stdin,
      stdout: p.paths.stdout,
      stderr: p.paths.stderr,
      terminal: p.paths.terminal,
      exitStatus: exited ? p.exitStatus : 255,
      exitedAt: exited ? ts(p.exitedAt) : undefined,
      execId: p.execId,
    };
  }

  async kill(req: v2.KillRequest): Promise<void> {
    const p = this.proc(req.id, req.execId);
    if (req.signal === 0 || req.signal > 64) throw invalidArgument(`invalid signal ${req.signal}`);
    await p.lock.run(async () => {
      p.check('kill');
      // Never started (an exec still created): it ends here with status 1 and no TaskExit (hcsshim's rule).
      if (p.kind === 'exec' && p.state === 'created') {
        this.finish(p, 1, new Date(), 'kill');
        return;
      }
      const pod = p.task.pod;
      try {
        await pod.agent.signalProcess({
          containerId: p.task.id,
          execId: p.execId,
          signal: req.signal,
          all: req.all,
        });
      } catch (err) {
        if (!isDeadlineExceeded(err)) throw err;
        await this.agentUnresponsive(pod, 'SignalProcess');
        await withTimeout(p.exited, this.exitWaitMs);
      }
    });
  }

  async wait(req: v2.WaitRequest): Promise<MessageInitShape<typeof v2.WaitResponseSchema>> {
    const p = this.proc(req.id, req.execId);
    p.check('wait');
    await p.exited;
    return { exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
  }

  async pids(req: v2.PidsRequest): Promise<MessageInitShape<typeof v2.PidsResponseSchema>> {
    const t = this.task(req.id);
    const processes: Array<
      MessageInitShape<typeof v2.PidsResponseSchema>['processes'] extends (infer E)[] | undefined ? E : never
    > = [];
    if ((t.init.state === 'running' || t.init.state === 'paused') && !t.pod.gone) {
      const r = await t.pod.agent.listProcesses({ containerId: t.id }).catch(() => ({ processes: [] }));
      for (const e of r.processes) {
        const info = e.execId
          ? create(AnySchema, {
              typeUrl: ProcessDetailsSchema.typeName,
              value: toBinary(ProcessDetailsSchema, create(ProcessDetailsSchema, { execId: e.execId })),
            })
          : undefined;
        processes.push({ pid: e.pid, info });
      }
    }
    // Never empty: the sandbox's own processes (VM / agent) are part of the task (containerd 1.7+ treats an
    // empty list as a leaked shim).
    for (const pid of t.pod.pids) processes.push({ pid });
    return { processes };
  }

  async resizePty(req: v2.ResizePtyRequest): Promise<void> {
    const p = this.proc(req.id, req.execId);
    if (req.width > 0xffff || req.height > 0xffff) throw invalidArgument('console size out of range');
    if (!p.paths.terminal) throw failedPrecondition(`process ${p.id} has no terminal`);
    await p.lock.run(async () => {
      p.check('resizePty');
      await p.task.pod.agent.resizePty({
        containerId: p.task.id,
        execId: p.execId,
        width: req.width,
        height: req.height,
      });
    });
  }

  async closeIO(req: v2.CloseIORequest): Promise<void> {
    const p = this.proc(req.id, req.execId);
    await p.lock.run(async () => {
      p.check('closeIO');
      p.task.log.debug('close io', { exec: p.execId, stdin: req.stdin });
      if (req.stdin) p.stdio.closeStdin();
    });
  }

  async pause(req: v2.PauseRequest): Promise<void> {
    const t = this.task(req.id);
    await t.init.lock.run(async () => {
      t.init.check('pause');
      await t.pod.agent.pauseContainer({ containerId: t.id });
      if (!allows(t.init, 'pause')) return; // it exited meanwhile: the exit is what counts
      t.init.move('pause');
      this.publish('/tasks/paused', ev.TaskPausedSchema, { containerId: t.id });
    });
  }

  async resume(req: v2.ResumeRequest): Promise<void> {
    const t = this.task(req.id);
    await t.init.lock.run(async () => {
      t.init.check('resume');
      await t.pod.agent.resumeContainer({ containerId: t.id });
      if (!allows(t.init, 'resume')) return;
      t.init.move('resume');
      this.publish('/tasks/resumed', ev.TaskResumedSchema, { containerId: t.id });
    });
  }

  async update(req: v2.UpdateTaskRequest): Promise<void> {
    const t = this.task(req.id);
    if (!req.resources || req.resources.value.length === 0) throw invalidArgument('resources are missing');
    if (req.resources.value.length > 1 << 20) throw invalidArgument('resources are too large');
    const resources = req.resources.value;
    await t.init.lock.run(async () => {
      t.init.check('update');
      await t.pod.agent.updateContainer({ containerId: t.id, resourcesJson: resources });
    });
  }

  async stats(req: v2.StatsRequest): Promise<MessageInitShape<typeof v2.StatsResponseSchema>> {
    const t = this.task(req.id);
    t.init.check('stats');
    const r = await t.pod.agent.containerStats({ containerId: t.id, cgroupVersion: this.opts.hostCgroupVersion });
    return { stats: r.metrics };
  }

  connect(req: v2.ConnectRequest): MessageInitShape<typeof v2.ConnectResponseSchema> {
    const t = this.pod?.tasks.get(req.id);
    return { shimPid: process.pid, taskPid: t?.init.pid || this.pod?.pids[0] || 0, version: SHIM_VERSION };
  }

  shutdown(_req: v2.ShutdownRequest): void {
    if (this.taskCount > 0) return;
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.log.info('shutdown: no task left');
    setImmediate(() => this.opts.onShutdown());
  }

  checkpoint(): never {
    throw unimplemented('checkpoint is not supported by the lcow shim (no CRIU in the utility VM)');
  }

  /** The pod as operators see it (admin endpoint); undefined when this shim has no pod yet. */
  podView(): PodView | undefined {
    const pod = this.pod;
    if (!pod) return this.podBooting ? { id: '', state: 'booting', pids: [], containers: [] } : undefined;
    const containers = [...pod.tasks.values()].map((t) => ({
      id: t.id,
      bundle: t.bundle,
      processes: [t.init, ...t.execs.values()].map((p) => ({
        execId: p.execId,
        pid: p.pid,
        state: p.state === 'deleted' ? ('exited' as const) : p.state,
        exitStatus: p.exitStatus,
        exitedAt: p.exitedAt,
      })),
    }));
    return { id: pod.id, state: 'running', sandbox: pod.sandbox, agent: pod.agent, pids: pod.pids, containers };
  }

  /** Tears everything down (SIGTERM to the shim). */
  async close(): Promise<void> {
    // A boot that fails has nothing to tear down here, and its error went to the Create that started it.
    const pod = this.pod ?? (await this.podBooting?.catch(() => undefined));
    if (pod) {
      for (const t of pod.tasks.values()) for (const p of t.procs) p.stdio.close();
      await this.stopPod(pod);
    }
  }
}

async function readBundleSpec(bundle: string): Promise<BundleSpec> {
  try {
    return JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as BundleSpec;
  } catch (err) {
    throw invalidArgument(`cannot read the bundle's config.json: ${(err as Error).message}`);
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export { TaskError };
