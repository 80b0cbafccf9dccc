// ttrpc binding of the agent: lcow.agent.v1.Agent over src/ttrpc. Decodes, validates, calls Agent, maps
// AgentError codes to gRPC codes (here only; the core never sees ttrpc).
import { timestampFromDate, timestampMs } from '@bufbuild/protobuf/wkt';
import { Agent, AgentError } from './agent.js';
import type { PodNetwork } from './network.js';
import type { StdioWanted } from './procio.js';
import { cgroupVersion, metricsAny } from './stats.js';
import { Agent as AgentService, OutputStream, ShareChange_Kind, type StdioSpec } from '../gen/agent/v1/agent_pb.js';
import type { ReplayKind } from './share-replay.js';
import { Code, TtrpcError, TtrpcServer } from '../ttrpc/index.js';
import { traceServiceImpl } from '../telemetry/index.js';
import { flushGuestSpans, serveSpanStream } from '../telemetry/guest-spans.js';
import type { Logger } from '../util/log.js';
import type { PassThrough } from 'node:stream';
import { release } from 'node:os';
import { adoptClone, prepareTemplate, type CloneState } from './clone.js';

export const AGENT_VERSION = '0.1.0';

const codes: Record<AgentError['code'], Code> = {
  NotFound: Code.NOT_FOUND,
  AlreadyExists: Code.ALREADY_EXISTS,
  FailedPrecondition: Code.FAILED_PRECONDITION,
  InvalidArgument: Code.INVALID_ARGUMENT,
  Internal: Code.INTERNAL,
};

export function agentErrorToTtrpc(err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  if (err instanceof AgentError) return new TtrpcError(codes[err.code], err.message);
  return new TtrpcError(Code.UNKNOWN, err instanceof Error ? err.message : String(err));
}

/**
 * Tracing in the guest is on only while the shim reads StreamSpans, so the check is per call (one closure and
 * a test when off). Only calls that carry the shim's trace context are traced; the span stream itself never.
 * A traced call's spans are sent before its reply.
 */
function traced<I extends object>(impl: I): I {
  return traceServiceImpl(impl, { requireParent: true, afterEnd: flushGuestSpans }, ['streamSpans']);
}

/** The wire's optional StdioSpec as the agent's stdio request (absent means no stdio at all). */
function stdioWanted(s: StdioSpec | undefined): StdioWanted {
  return {
    terminal: s?.terminal ?? false,
    stdin: s?.stdin ?? false,
    stdout: s?.stdout ?? false,
    stderr: s?.stderr ?? false,
    width: s?.width,
    height: s?.height,
  };
}

const REPLAY_KINDS: Record<number, ReplayKind> = {
  [ShareChange_Kind.CREATE]: 'create',
  [ShareChange_Kind.DELETE]: 'delete',
  [ShareChange_Kind.MODIFY]: 'modify',
  [ShareChange_Kind.ATTRIB]: 'attrib',
  [ShareChange_Kind.RENAME]: 'rename',
};
export interface AgentServerOptions {
  /** UVM only: the pod network (ConfigureNetwork); absent in the process backend's host agent. */
  network?: PodNetwork;
  /**
   * UVM only (QEMU, hostfwd direction): the template state (PrepareTemplate / AdoptClone); absent elsewhere, where
   * those two answer FailedPrecondition.
   */
  clone?: CloneState;
}

export function createAgentServer(
  agent: Agent,
  log: Logger,
  onShutdown: () => void,
  { network, clone }: AgentServerOptions = {},
): TtrpcServer {
  const server = new TtrpcServer({ logger: log, errorMapper: agentErrorToTtrpc });
  const guestCgroup = cgroupVersion();
  server.registerService(
    AgentService,
    traced({
      async getInfo() {
        return {
          version: AGENT_VERSION,
          pid: process.pid,
          cgroupVersion: guestCgroup,
          kernel: release(),
          // The OCI runtime's name (runc or crun: `guest_runtime`), not its version: no process start per call.
          runcVersion: agent.runc.flavour,
        };
      },
      async addShare(req) {
        return { guestPath: await agent.addShare(req) };
      },
      async removeShare(req) {
        await agent.removeShare(req.shareId);
        return {};
      },
      async replayShareChanges(req) {
        return agent.replayShareChanges(
          req.shareId,
          req.changes.map((c) => ({
            kind: REPLAY_KINDS[c.kind] ?? 'attrib',
            path: c.path,
            to: c.to,
            dir: c.dir,
            content: c.content,
            type: c.type,
          })),
        );
      },
      async createContainer(req) {
        const r = await agent.createContainer({
          containerId: req.containerId,
          specJson: req.specJson,
          rootfs: req.rootfs.map((m) => ({ type: m.type, source: m.source, target: m.target, options: m.options })),
          stdio: stdioWanted(req.stdio),
          bundle: req.bundle,
        });
        return r;
      },
      async startProcess(req) {
        return { pid: await agent.startProcess(req.containerId, req.execId) };
      },
      async execProcess(req) {
        await agent.execProcess({
          containerId: req.containerId,
          execId: req.execId,
          processJson: req.processJson,
          stdio: stdioWanted(req.stdio),
        });
        return {};
      },
      async signalProcess(req) {
        await agent.signalProcess(req.containerId, req.execId, req.signal, req.all);
        return {};
      },
      async waitProcess(req) {
        const e = await agent.waitProcess(req.containerId, req.execId);
        return { exitStatus: e.status, exitedAt: timestampFromDate(e.exitedAt) };
      },
      async resizePty(req) {
        agent.resizePty(req.containerId, req.execId, req.width, req.height);
        return {};
      },
      async closeStdin(req) {
        agent.closeStdin(req.containerId, req.execId);
        return {};
      },
      async pauseContainer(req) {
        await agent.pause(req.containerId);
        return {};
      },
      async resumeContainer(req) {
        await agent.resume(req.containerId);
        return {};
      },
      async updateContainer(req) {
        await agent.update(req.containerId, req.resourcesJson);
        return {};
      },
      async containerStats(req) {
        const want = req.cgroupVersion === 1 || req.cgroupVersion === 2 ? req.cgroupVersion : guestCgroup;
        return { metrics: metricsAny(await agent.stats(req.containerId), want), cgroupVersion: want };
      },
      async listProcesses(req) {
        return { processes: await agent.listProcesses(req.containerId) };
      },
      async deleteProcess(req) {
        agent.deleteProcess(req.containerId, req.execId);
        return {};
      },
      async deleteContainer(req) {
        await agent.deleteContainer(req.containerId);
        return {};
      },
      async readOutput(req, out) {
        const p = agent.container(req.containerId).process(req.execId);
        const src: PassThrough | undefined =
          req.stream === OutputStream.STDOUT
            ? p.io.stdout
            : req.stream === OutputStream.STDERR
              ? p.io.stderr
              : undefined;
        if (!src) throw new AgentError('FailedPrecondition', 'the process has no such output stream');
        try {
          for await (const chunk of src) {
            if (out.signal.aborted) break;
            await out.send({ data: chunk as Buffer });
          }
        } finally {
          p.outputFinished(src);
        }
      },
      async writeStdin(requests) {
        let written = 0n;
        let target: PassThrough | undefined;
        for await (const chunk of requests) {
          if (!target) {
            const p = agent.container(chunk.containerId).process(chunk.execId);
            if (!p.io.stdin) throw new AgentError('FailedPrecondition', 'the process has no stdin');
            target = p.io.stdin;
          }
          if (chunk.data.length === 0) continue;
          if (target.writableEnded) break;
          if (!target.write(chunk.data)) await new Promise((r) => target!.once('drain', r));
          written += BigInt(chunk.data.length);
        }
        return { bytesWritten: written };
      },
      async writeStdinOnce(req) {
        const p = agent.container(req.containerId).process(req.execId);
        if (!p.io.stdin) throw new AgentError('FailedPrecondition', 'the process has no stdin');
        if (!p.io.stdin.writableEnded && req.data.length) p.io.stdin.write(req.data);
        return { bytesWritten: BigInt(req.data.length) };
      },
      async subscribeEvents(_req, out) {
        await new Promise<void>((resolve) => {
          const off = agent.onOom((containerId) => {
            // Fire-and-forget: the OOM callback is synchronous; a send fails only when the subscriber went away.
            void out
              .send({ containerId, event: { case: 'oom', value: {} } })
              .catch((err: unknown) => log.debug('OOM event not sent', { container: containerId, error: err }));
          });
          out.signal.addEventListener('abort', () => {
            off();
            resolve();
          });
        });
      },
      async shutdown() {
        await agent.shutdown();
        setImmediate(onShutdown);
        return {};
      },
      async streamSpans(req, out) {
        await serveSpanStream(req.maxBatch, out, log);
      },
      async execInUvm(req) {
        return agent.execInUvm(req.args, req.timeoutMs);
      },
      async configureNetwork(req) {
        if (!network) throw new AgentError('FailedPrecondition', 'this agent does not run in a UVM: no pod network');
        return { netnsPath: await network.configure(req) };
      },
      async prepareTemplate() {
        if (!clone) throw new AgentError('FailedPrecondition', 'this agent does not run in a UVM');
        try {
          await prepareTemplate(clone, agent, { log });
        } catch (err) {
          throw new AgentError('FailedPrecondition', (err as Error).message);
        }
        log.info('template prepared: the next control connection close re-listens');
        return {};
      },
      async adoptClone(req) {
        if (!clone) throw new AgentError('FailedPrecondition', 'this agent does not run in a UVM');
        if (!req.now) throw new AgentError('InvalidArgument', 'now is required');
        let r;
        try {
          r = adoptClone(clone, timestampMs(req.now), req.entropy);
        } catch (err) {
          throw new AgentError('InvalidArgument', (err as Error).message);
        }
        log.info('adopted as a clone', { clockStepMs: r.clockStepMs });
        return { bootId: r.bootId, clockStepMs: BigInt(r.clockStepMs) };
      },
    }),
  );
  return server;
}
