// The shim's admin endpoint (lcow.admin.v1.Admin) for `lcowctl`: a second ttrpc service, on a unix socket in
// the pod's state dir (/run/lcow/<ns>/<pod>/admin.sock, mode 0600 in a 0700 dir: root only), for as long as
// the pod runs. Chosen over files the shim keeps current because the data is live and asked for rarely (memory,
// process states, metrics are read when an operator asks, not rewritten every few seconds), and because
// `exec` needs a call anyway; the socket dies with the pod, so a listed socket that answers is a live pod.
import type { MessageInitShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { Admin as AdminDesc, type PodInfoSchema } from '../gen/admin/v1/admin_pb.js';
import { metrics as processMetrics, type MetricsRegistry } from '../telemetry/metrics.js';
import type { PodView } from '../task/pod-hooks.js';
import { Code, TtrpcError, TtrpcServer } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { mkdirPrivate } from '../util/private-fs.js';

export interface AdminSource {
  /** Identity known before the sandbox booted. */
  identity(): { id: string; namespace: string; backend: string; startedAt: Date; logDir: string };
  view(): PodView | undefined;
  allowUvmExec: boolean;
}

const EXEC_TIMEOUT_MAX_MS = 600_000;

export async function podInfo(src: AdminSource): Promise<MessageInitShape<typeof PodInfoSchema>> {
  const who = src.identity();
  const view = src.view();
  const sandbox = view?.sandbox;
  let memory = 0n;
  if (sandbox) {
    const stats = await sandbox.stats().catch(() => []);
    for (const s of stats) memory += BigInt(s.rssBytes);
  }
  return {
    id: who.id,
    namespace: who.namespace,
    backend: sandbox?.backend ?? who.backend,
    transport: sandbox?.transport ?? '',
    isolated: sandbox?.isolated ?? who.backend !== 'process',
    state: view?.state ?? 'booting',
    startedAt: timestampFromDate(who.startedAt),
    shimPid: process.pid,
    pids: view?.pids ?? [],
    memoryBytes: memory,
    containers: (view?.containers ?? []).map((c) => ({
      id: c.id,
      bundle: c.bundle,
      processes: c.processes.map((p) => ({
        execId: p.execId,
        pid: p.pid,
        state: p.state,
        exitStatus: p.state === 'exited' ? p.exitStatus : 0,
        exitedAt: p.exitedAt ? timestampFromDate(p.exitedAt) : undefined,
      })),
    })),
    logDir: who.logDir,
    details: sandbox?.describe?.() ?? {},
  };
}

export function createAdminServer(
  src: AdminSource,
  log: Logger,
  registry: MetricsRegistry = processMetrics,
): TtrpcServer {
  const server = new TtrpcServer({ logger: log, maxInFlightPerConnection: 16 });
  server.registerService(AdminDesc, {
    async info() {
      return podInfo(src);
    },
    async stats() {
      return { snapshotJson: Buffer.from(JSON.stringify(registry.snapshot())) };
    },
    async execInUvm(req) {
      const who = src.identity();
      if (!src.allowUvmExec) {
        log.warn('exec in the UVM refused: allow_uvm_exec is off', { pod: who.id, args: req.args });
        throw new TtrpcError(
          Code.PERMISSION_DENIED,
          'exec into the UVM is disabled: set allow_uvm_exec = true in the runtime config (ConfigPath TOML)',
        );
      }
      if (req.args.length === 0) throw new TtrpcError(Code.INVALID_ARGUMENT, 'no command');
      const agent = src.view()?.agent;
      if (!agent) throw new TtrpcError(Code.FAILED_PRECONDITION, `pod ${who.id} has no running sandbox`);
      const timeoutMs = Math.min(req.timeoutMs || 30_000, EXEC_TIMEOUT_MAX_MS);
      log.warn('exec in the UVM (lcowctl exec)', { pod: who.id, args: req.args, timeoutMs });
      const r = await agent.execInUvm({ args: req.args, timeoutMs }, { timeoutMs: timeoutMs + 10_000 });
      log.info('exec in the UVM finished', {
        pod: who.id,
        args: req.args,
        exitStatus: r.exitStatus,
        timedOut: r.timedOut,
      });
      return r;
    },
  });
  return server;
}

/** Serves the admin endpoint on `socket` (TtrpcServer.serve makes it 0600; the directory is made 0700). */
export async function serveAdmin(server: TtrpcServer, dir: string, socket: string): Promise<void> {
  mkdirPrivate(dir);
  await server.serve(socket);
}
