// The Task service (containerd.task.v2.Task): Pod -> Task -> Proc state machines on the host side; the work
// happens in the guest agent through the Sandbox interface. One shim serves one pod: the first Create boots
// the sandbox, later Creates with the same group (io.kubernetes.cri.sandbox-id / io.containerd.runc.v2.group)
// join it.
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { create, toBinary, type DescMessage, type MessageInitShape } from '@bufbuild/protobuf';
import { AnySchema, timestampDate, timestampFromDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import { Agent as AgentDesc } from '../gen/agent/v1/agent_pb.js';
import * as ev from '../gen/containerd/events/task_pb.js';
import { ProcessDetailsSchema } from '../gen/containerd/runc/options_pb.js';
import type * as v2 from '../gen/containerd/task/v2/shim_pb.js';
import { Status } from '../gen/containerd/types/task/task_pb.js';
import { createSandbox, type PreparedRootfs, type Sandbox } from '../sandbox/index.js';
import { instrumentClient } from '../telemetry/client.js';
import { withSpan } from '../telemetry/index.js';
import { createClient, type ServiceClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { writePrivateFile } from '../util/private-fs.js';
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  TaskError,
  unimplemented,
  validateId,
} from './errors.js';
import { SANDBOX_RECORD_FILE, SHIM_VERSION } from './record.js';
import { StdioRelay, type StdioPaths } from './stdio.js';
import type { PodHooks, PodView } from './pod-hooks.js';

export { SANDBOX_RECORD_FILE, SHIM_VERSION };
import {
  mountsRootfsOnHost,
  prepareContainerFs,
  releaseContainerFs,
  shareBindMounts,
  type PreparedFs,
} from './uvm-fs.js';
import { carryPodNetwork, hostNetnsPath, refuseHostNetwork, type SpecWithNamespaces } from './pod-network.js';

export type AgentClient = ServiceClient<(typeof AgentDesc)['method']>;

export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';
export const GROUP_ANNOTATION = 'io.containerd.runc.v2.group';

export interface EventPublisher {
  /** Enqueues an event; never throws, never blocks. */
  publish(topic: string, typeName: string, payload: Uint8Array): void;
}

export interface TaskServiceOptions {
  namespace: string;
  logger: Logger;
  publisher: EventPublisher;
  /** Explicitly configured backend ('process'), or undefined. */
  sandboxBackend: string | undefined;
  /** Root for sandbox state dirs (e.g. /run/lcow/<ns>). */
  stateRoot: string;
  /** The runtime config TOML (UVM sizing...), passed to the sandbox backend. */
  runtimeConfig?: Record<string, unknown>;
  /** 1 or 2: the host's cgroup mode; Stats answers in that shape. */
  hostCgroupVersion: 1 | 2;
  /** Called when Shutdown decided the shim may exit (after the reply is sent). */
  onShutdown: () => void;
  /** Operations (logs, admin endpoint, metrics, guest spans): told about each pod's life. */
  hooks?: PodHooks;
}

type ProcState = 'created' | 'running' | 'exited';

class Proc {
  state: ProcState = 'created';
  pid = 0;
  exitStatus = 255;
  exitedAt: Date | undefined;
  readonly exited: Promise<void>;
  private resolveExited!: () => void;
  startInFlight: Promise<unknown> | undefined;

  constructor(
    readonly task: Task,
    readonly execId: string,
    readonly paths: StdioPaths,
    readonly stdio: StdioRelay,
  ) {
    this.exited = new Promise((r) => (this.resolveExited = r));
  }

  get id(): string {
    return this.execId || this.task.id;
  }

  setExited(status: number, at: Date): void {
    if (this.state === 'exited') return;
    this.state = 'exited';
    this.exitStatus = status;
    this.exitedAt = at;
    this.resolveExited();
  }
}

class Task {
  readonly execs = new Map<string, Proc>();
  paused = false;
  init!: Proc;
  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly pod: Pod,
    readonly log: Logger,
  ) {}
}

class Pod {
  readonly tasks = new Map<string, Task>();
  constructor(
    readonly id: string,
    readonly sandbox: Sandbox,
    readonly agent: AgentClient,
    readonly pids: number[],
  ) {}
}

/** VM sandboxes: each task's host rootfs mount and shares. */
const containerFs = new Map<Task, PreparedFs>();
/** Root filesystems a backend attached itself (Sandbox.prepareRootfs). */
const backendRootfs = new Map<Task, PreparedRootfs>();

const ts = (d: Date | undefined): Timestamp | undefined => (d ? timestampFromDate(d) : undefined);

export class TaskService {
  private pod: Pod | undefined;
  private podBooting: Promise<Pod> | undefined;
  private readonly log: Logger;
  private shuttingDown = false;

  constructor(private readonly opts: TaskServiceOptions) {
    this.log = opts.logger;
  }

  get taskCount(): number {
    return this.pod?.tasks.size ?? 0;
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

  // ---- pod / sandbox ----

  private async getPod(groupId: string, annotations: Record<string, string>, podNetns?: string): Promise<Pod> {
    if (this.pod) {
      if (this.pod.id !== groupId)
        throw failedPrecondition(`this shim serves pod ${this.pod.id}; cannot create a task of pod ${groupId}`);
      return this.pod;
    }
    if (!this.podBooting) {
      const hooks = this.opts.hooks;
      this.podBooting = (async () => {
        const sandbox = await createSandbox(this.opts.sandboxBackend, {
          id: groupId,
          stateDir: join(this.opts.stateRoot, groupId),
          logger: this.log,
          annotations,
          podNetns,
          runtimeConfig: this.opts.runtimeConfig,
          guestLog: hooks?.podStarting(groupId, annotations).guestLog,
        });
        if (!sandbox.isolated) this.log.warn('sandbox is not VM-isolated', { backend: sandbox.backend, pod: groupId });
        const booted = await withSpan('sandbox boot', { 'lcow.backend': sandbox.backend }, () => sandbox.boot());
        // Agent calls are timed (metrics) and, when tracing, CLIENT spans carrying the trace into the guest.
        const agent = instrumentClient(AgentDesc, createClient(AgentDesc, booted.agent), {
          background: ['WaitProcess'],
        });
        await agent.getInfo({}, { timeoutMs: 10_000 });
        const pod = new Pod(groupId, sandbox, agent, booted.pids);
        sandbox.onExit((reason) => {
          hooks?.sandboxExited(groupId, reason);
          this.sandboxExited(pod, reason.kind);
        });
        this.subscribeAgentEvents(pod);
        this.pod = pod;
        await hooks?.podReady(pod);
        return pod;
      })();
      this.podBooting.catch(() => {
        this.podBooting = undefined;
        if (!this.pod) this.opts.hooks?.podStopped(groupId);
      });
    }
    return this.podBooting;
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
        if (this.pod === pod) this.log.debug('agent event stream ended', { pod: pod.id, error: err });
      }
    })();
  }

  private sandboxExited(pod: Pod, kind: string): void {
    if (kind === 'stopped') return;
    this.log.error('sandbox exited unexpectedly', { pod: pod.id, kind });
    for (const t of pod.tasks.values()) {
      for (const p of [t.init, ...t.execs.values()]) {
        if (p.state !== 'exited') {
          p.setExited(255, new Date());
          this.publish('/tasks/exit', ev.TaskExitSchema, {
            containerId: t.id,
            id: p.id,
            pid: p.pid,
            exitStatus: 255,
            exitedAt: ts(p.exitedAt),
          });
        }
      }
    }
  }

  private async writeRecord(bundle: string, pod: Pod, owner: boolean): Promise<void> {
    const rec = {
      shimPid: process.pid,
      namespace: this.opts.namespace,
      pod: pod.id,
      owner,
      sandbox: pod.sandbox.record(),
    };
    // 0600 whatever the umask: it names the VM's pid, its state dir and host mounts.
    writePrivateFile(join(bundle, SANDBOX_RECORD_FILE), JSON.stringify(rec));
  }

  // ---- RPCs ----

  async create(req: v2.CreateTaskRequest): Promise<MessageInitShape<typeof v2.CreateTaskResponseSchema>> {
    validateId('id', req.id);
    if (!isAbsolute(req.bundle) || req.bundle.includes('\0')) throw invalidArgument('bundle must be an absolute path');
    if (req.checkpoint || req.parentCheckpoint) throw unimplemented('checkpoint/restore is not supported by lcow');
    if (this.shuttingDown) throw failedPrecondition('shim is shutting down');
    let spec: SpecWithNamespaces & {
      annotations?: Record<string, string>;
      root?: { path?: string; readonly?: boolean };
      process?: { consoleSize?: { height?: number; width?: number } };
    };
    try {
      spec = JSON.parse(await readFile(join(req.bundle, 'config.json'), 'utf8')) as typeof spec;
    } catch (err) {
      throw invalidArgument(`cannot read the bundle's config.json: ${(err as Error).message}`);
    }
    const annotations = spec.annotations ?? {};
    const groupId = annotations[GROUP_ANNOTATION] || annotations[SANDBOX_ID_ANNOTATION] || req.id;
    validateId('sandbox id', groupId);
    if (this.pod?.tasks.has(req.id)) throw alreadyExists(`task ${req.id} already exists`);
    const log = this.log.with({ pod: groupId, container: req.id });
    if (this.opts.sandboxBackend !== 'process') refuseHostNetwork(spec, annotations); // before a VM boots
    const pod = await this.getPod(groupId, annotations, hostNetnsPath(spec));
    if (pod.tasks.has(req.id)) throw alreadyExists(`task ${req.id} already exists`);

    const paths: StdioPaths = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal };
    const stdio = await StdioRelay.open(paths, { id: req.id, namespace: this.opts.namespace }, log);
    const task = new Task(req.id, req.bundle, pod, log);
    const init = new Proc(task, '', paths, stdio);
    task.init = init;
    pod.tasks.set(req.id, task);
    try {
      await carryPodNetwork(pod.sandbox, spec); // pod-network.ts: the CNI netns, carried into the VM
      // Rootfs: either mounts for the agent to perform, or the bundle's rootfs directory shared as is.
      const rootfs: Array<{ type: string; source: string; target: string; options: string[] }> = [];
      const attached = await pod.sandbox.prepareRootfs?.(req.id, req.rootfs);
      if (attached) {
        // The backend attached the rootfs itself (hcs: VHD layers over SCSI); the agent stacks them. The
        // spec's bind mounts are shared as with any VM sandbox.
        backendRootfs.set(task, attached);
        rootfs.push(...attached.rootfs);
        const fsState: PreparedFs = { shareIds: [], fileHolders: [] };
        containerFs.set(task, fsState);
        await shareBindMounts(pod.sandbox, spec, fsState);
      } else if (mountsRootfsOnHost(pod.sandbox)) {
        // VM sandbox: rootfs mounted on the host and shared whole, bind mounts shared (uvm-fs.ts).
        const fsState = await prepareContainerFs(pod.sandbox, req.bundle, spec, req.rootfs, log);
        containerFs.set(task, fsState);
      } else for (const m of req.rootfs) rootfs.push(await this.shareMount(pod, m));
      if (rootfs.length === 0 && !containerFs.has(task) && !backendRootfs.has(task)) {
        const hostRoot = isAbsolute(spec.root?.path ?? 'rootfs')
          ? spec.root!.path!
          : join(req.bundle, spec.root?.path ?? 'rootfs');
        const share = await pod.sandbox.addShare(hostRoot, { readOnly: spec.root?.readonly ?? false });
        spec.root = { ...(spec.root ?? {}), path: share.guestPath };
      }
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
      init.pid = r.pid;
      stdio.attach(pod.agent, req.id, '');
      this.watch(task, init);
      await this.writeRecord(req.bundle, pod, pod.tasks.size === 1);
    } catch (err) {
      log.warn('create failed', { error: err });
      stdio.close();
      pod.tasks.delete(req.id);
      await pod.agent.deleteContainer({ containerId: req.id }).catch(() => undefined);
      await this.releaseFs(task);
      if (pod.tasks.size === 0) await this.stopPod(pod);
      throw err;
    }
    this.publish('/tasks/create', ev.TaskCreateSchema, {
      containerId: req.id,
      bundle: req.bundle,
      rootfs: req.rootfs,
      io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
      checkpoint: req.checkpoint,
      pid: init.pid,
    });
    log.info('task created', { pid: init.pid });
    return { pid: init.pid };
  }

  /** Host paths inside a rootfs mount become guest paths through the sandbox's shares. */
  private async shareMount(
    pod: Pod,
    m: { type: string; source: string; target: string; options: string[] },
  ): Promise<{ type: string; source: string; target: string; options: string[] }> {
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

  /** The exit watcher: agent WaitProcess, then output drained, then (init) execs gone, then TaskExit. */
  private watch(task: Task, p: Proc): void {
    const agent = task.pod.agent;
    void (async () => {
      let status = 255;
      let at = new Date();
      try {
        const r = await agent.waitProcess({ containerId: task.id, execId: p.execId });
        status = r.exitStatus;
        if (r.exitedAt) at = timestampDate(r.exitedAt);
      } catch (err) {
        task.log.warn('wait failed', { exec: p.execId, error: err });
      }
      await withTimeout(p.stdio.outputDone(), 5000);
      if (p.startInFlight) await p.startInFlight.catch(() => undefined);
      if (p.execId === '') {
        // The container is gone: its execs die with its pid namespace; report them first.
        await withTimeout(
          Promise.all([...task.execs.values()].map((e) => (e.state === 'running' ? e.exited : undefined))),
          5000,
        );
      }
      if (p.state === 'exited') return;
      p.setExited(status, at);
      task.log.info('process exited', { exec: p.execId, pid: p.pid, status });
      this.publish('/tasks/exit', ev.TaskExitSchema, {
        containerId: task.id,
        id: p.id,
        pid: p.pid,
        exitStatus: status,
        exitedAt: ts(at),
      });
    })();
  }

  async start(req: v2.StartRequest): Promise<MessageInitShape<typeof v2.StartResponseSchema>> {
    const p = this.proc(req.id, req.execId);
    const task = p.task;
    if (p.state !== 'created' || p.startInFlight)
      throw failedPrecondition(`process ${p.id} is ${p.state}: it must be created to start`);
    const run = (async () => {
      // An exec's stdio is attached at Start (its stdin fifo is opened then; see StdioRelay.openStdin).
      if (p.execId !== '') p.stdio.attach(task.pod.agent, task.id, p.execId);
      const r = await task.pod.agent.startProcess({ containerId: task.id, execId: p.execId });
      p.pid = r.pid;
      p.state = 'running';
      // Published before the exit watcher can publish the exit (it awaits startInFlight).
      if (p.execId === '') this.publish('/tasks/start', ev.TaskStartSchema, { containerId: task.id, pid: p.pid });
      else
        this.publish('/tasks/exec-started', ev.TaskExecStartedSchema, {
          containerId: task.id,
          execId: p.execId,
          pid: p.pid,
        });
    })();
    p.startInFlight = run;
    try {
      await run;
    } catch (err) {
      if (p.execId !== '') p.setExited(1, new Date());
      p.startInFlight = undefined;
      throw err;
    }
    if (p.execId !== '') this.watch(task, p);
    task.log.info('process started', { exec: p.execId, pid: p.pid });
    return { pid: p.pid };
  }

  async delete(req: v2.DeleteRequest): Promise<MessageInitShape<typeof v2.DeleteResponseSchema>> {
    const p = this.proc(req.id, req.execId);
    const task = p.task;
    const agent = task.pod.agent;
    if (p.execId !== '') {
      if (p.state === 'running') throw failedPrecondition(`exec ${p.execId} is running; kill it first`);
      if (p.state === 'created') p.setExited(0, new Date());
      await agent.deleteProcess({ containerId: task.id, execId: p.execId }).catch(() => undefined);
      p.stdio.close();
      task.execs.delete(p.execId);
      return { pid: p.pid, exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
    }
    if (p.state === 'running') throw failedPrecondition(`task ${task.id} is running; kill it first`);
    if (p.state === 'created') {
      await agent.signalProcess({ containerId: task.id, execId: '', signal: 9, all: true }).catch(() => undefined);
      await withTimeout(p.exited, 10_000);
    }
    for (const e of task.execs.values()) {
      if (e.state !== 'exited') e.setExited(e.state === 'created' ? 0 : 255, new Date());
      e.stdio.close();
    }
    await agent.deleteContainer({ containerId: task.id }).catch((err: unknown) => {
      task.log.warn('agent delete failed', { error: err });
    });
    p.stdio.close();
    await this.releaseFs(task);
    task.pod.tasks.delete(task.id);
    this.publish('/tasks/delete', ev.TaskDeleteSchema, {
      containerId: task.id,
      pid: p.pid,
      exitStatus: p.exitStatus,
      exitedAt: ts(p.exitedAt),
      id: task.id,
    });
    task.log.info('task deleted');
    if (task.pod.tasks.size === 0) await this.stopPod(task.pod);
    return { pid: p.pid, exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
  }

  private async releaseFs(task: Task): Promise<void> {
    const attached = backendRootfs.get(task);
    backendRootfs.delete(task);
    await attached?.release().catch((err: unknown) => task.log.warn('releasing the rootfs failed', { error: err }));
    const fsState = containerFs.get(task);
    containerFs.delete(task);
    if (fsState) await releaseContainerFs(task.pod.sandbox, fsState, task.log);
  }

  private async stopPod(pod: Pod): Promise<void> {
    if (this.pod !== pod && this.pod !== undefined) return;
    this.log.info('stopping sandbox', { pod: pod.id });
    await pod.sandbox.stop('graceful').catch((err: unknown) => this.log.warn('sandbox stop failed', { error: err }));
    this.pod = undefined;
    this.podBooting = undefined;
    this.opts.hooks?.podStopped(pod.id);
  }

  async exec(req: v2.ExecProcessRequest): Promise<void> {
    const task = this.task(req.id);
    validateId('exec id', req.execId);
    if (task.execs.has(req.execId)) throw alreadyExists(`exec process ${req.execId} already exists`);
    if (task.init.state !== 'running') throw failedPrecondition(`task ${task.id} is not running`);
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
    const stdio = await StdioRelay.open(paths, { id: task.id, namespace: this.opts.namespace }, log, {
      deferStdin: true,
    });
    const p = new Proc(task, req.execId, paths, stdio);
    task.execs.set(req.execId, p);
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
    } catch (err) {
      stdio.close();
      task.execs.delete(req.execId);
      throw err;
    }
    this.publish('/tasks/exec-added', ev.TaskExecAddedSchema, { containerId: task.id, execId: req.execId });
  }

  state(req: v2.StateRequest): MessageInitShape<typeof v2.StateResponseSchema> {
    const p = this.proc(req.id, req.execId);
    let status: Status;
    switch (p.state) {
      case 'created':
        status = Status.CREATED;
        break;
      case 'running':
        status = p.execId === '' && p.task.paused ? Status.PAUSED : Status.RUNNING;
        break;
      default:
        status = Status.STOPPED;
    }
    return {
      id: p.id,
      bundle: p.task.bundle,
      pid: p.pid,
      status,
      stdin: p.paths.stdin,
      stdout: p.paths.stdout,
      stderr: p.paths.stderr,
      terminal: p.paths.terminal,
      exitStatus: p.state === 'exited' ? p.exitStatus : 255,
      exitedAt: p.state === 'exited' ? ts(p.exitedAt) : undefined,
      execId: p.execId,
    };
  }

  async kill(req: v2.KillRequest): Promise<void> {
    const p = this.proc(req.id, req.execId);
    if (req.signal === 0 || req.signal > 64) throw invalidArgument(`invalid signal ${req.signal}`);
    if (p.state === 'exited') throw notFound(`process ${p.id} already finished`);
    if (p.execId !== '' && p.state === 'created') {
      // Never started: no TaskExit (no TaskExecStarted was published either).
      p.setExited(1, new Date());
      return;
    }
    await p.task.pod.agent.signalProcess({
      containerId: p.task.id,
      execId: p.execId,
      signal: req.signal,
      all: req.all,
    });
  }

  async wait(req: v2.WaitRequest): Promise<MessageInitShape<typeof v2.WaitResponseSchema>> {
    const p = this.proc(req.id, req.execId);
    await p.exited;
    return { exitStatus: p.exitStatus, exitedAt: ts(p.exitedAt) };
  }

  async pids(req: v2.PidsRequest): Promise<MessageInitShape<typeof v2.PidsResponseSchema>> {
    const t = this.task(req.id);
    const processes: Array<
      MessageInitShape<typeof v2.PidsResponseSchema>['processes'] extends (infer E)[] | undefined ? E : never
    > = [];
    if (t.init.state === 'running') {
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
    if (p.state === 'exited') throw notFound(`process ${p.id} already finished`);
    await p.task.pod.agent.resizePty({
      containerId: p.task.id,
      execId: p.execId,
      width: req.width,
      height: req.height,
    });
  }

  async closeIO(req: v2.CloseIORequest): Promise<void> {
    const p = this.proc(req.id, req.execId);
    p.task.log.debug('close io', { exec: p.execId, stdin: req.stdin });
    if (req.stdin) p.stdio.closeStdin();
  }

  async pause(req: v2.PauseRequest): Promise<void> {
    const t = this.task(req.id);
    if (t.init.state !== 'running') throw failedPrecondition(`task ${t.id} is not running`);
    await t.pod.agent.pauseContainer({ containerId: t.id });
    t.paused = true;
    this.publish('/tasks/paused', ev.TaskPausedSchema, { containerId: t.id });
  }

  async resume(req: v2.ResumeRequest): Promise<void> {
    const t = this.task(req.id);
    if (!t.paused) throw failedPrecondition(`task ${t.id} is not paused`);
    await t.pod.agent.resumeContainer({ containerId: t.id });
    t.paused = false;
    this.publish('/tasks/resumed', ev.TaskResumedSchema, { containerId: t.id });
  }

  async update(req: v2.UpdateTaskRequest): Promise<void> {
    const t = this.task(req.id);
    if (!req.resources || req.resources.value.length === 0) throw invalidArgument('resources are missing');
    if (req.resources.value.length > 1 << 20) throw invalidArgument('resources are too large');
    if (t.init.state !== 'running') throw failedPrecondition(`task ${t.id} is not running`);
    await t.pod.agent.updateContainer({ containerId: t.id, resourcesJson: req.resources.value });
  }

  async stats(req: v2.StatsRequest): Promise<MessageInitShape<typeof v2.StatsResponseSchema>> {
    const t = this.task(req.id);
    if (t.init.state === 'exited') throw notFound(`task ${t.id} is not running`);
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
        state: p.state === 'running' && p.execId === '' && t.paused ? ('paused' as const) : p.state,
        exitStatus: p.exitStatus,
        exitedAt: p.exitedAt,
      })),
    }));
    return { id: pod.id, state: 'running', sandbox: pod.sandbox, agent: pod.agent, pids: pod.pids, containers };
  }

  /** Tears everything down (SIGTERM to the shim). */
  async close(): Promise<void> {
    const pod = this.pod;
    if (pod) {
      for (const t of pod.tasks.values()) for (const p of [t.init, ...t.execs.values()]) p.stdio.close();
      await this.stopPod(pod);
    }
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
