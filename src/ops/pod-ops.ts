// The shim's operations side of a pod (the PodHooks the Task service calls): its logs kept under the log root,
// its admin endpoint for lcowctl, its gauges (pods and containers running), and, when tracing, the guest's span
// stream. One shim serves one pod, so this holds at most one.
import { join } from 'node:path';
import type { SandboxExitReason } from '../sandbox/index.js';
import { relayGuestSpans } from '../telemetry/guest-spans.js';
import { tracingEnabled, withSpan } from '../telemetry/index.js';
import { metrics as processMetrics, type MetricsRegistry } from '../telemetry/metrics.js';
import type { PodHooks, PodView } from '../task/pod-hooks.js';
import type { AgentClient } from '../task/service.js';
import type { TtrpcServer } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { createAdminServer, serveAdmin } from './admin-server.js';
import { ADMIN_SOCKET, type OpsConfig } from './config.js';
import { PodLogs, pruneLogs } from './pod-logs.js';

export const POD_METRICS = {
  pods: 'lcow.pods.running',
  containers: 'lcow.containers.running',
} as const;

interface Current {
  id: string;
  backend: string;
  startedAt: Date;
  logs: PodLogs | undefined;
  admin: TtrpcServer;
  adminReady: Promise<void>;
  unobserve: Array<() => void>;
}

export interface PodOpsOptions {
  namespace: string;
  /** /run/lcow/<ns>: the pod's state dir is <stateRoot>/<pod>. */
  stateRoot: string;
  /** The configured backend (undefined: the default, qemu). */
  backend: string | undefined;
  config: OpsConfig;
  logger: Logger;
  registry?: MetricsRegistry;
}

export class PodOps implements PodHooks {
  private current: Current | undefined;
  private view: () => PodView | undefined = () => undefined;
  private readonly registry: MetricsRegistry;

  constructor(private readonly opts: PodOpsOptions) {
    this.registry = opts.registry ?? processMetrics;
  }

  /** The source of live pod data (the Task service). */
  attach(view: () => PodView | undefined): void {
    this.view = view;
  }

  podStarting(podId: string): { guestLog?: PodLogs } {
    const { namespace, config, logger } = this.opts;
    const log = logger.with({ pod: podId });
    try {
      const removed = pruneLogs(config.logRoot, namespace, config.logKeepPods, config.logKeepDays, podId);
      if (removed.length) log.info('removed the logs of old pods', { pods: removed });
    } catch (err) {
      log.warn('log retention failed', { error: err });
    }
    const stateDir = join(this.opts.stateRoot, podId);
    const startedAt = new Date();
    const backend = this.opts.backend || 'qemu';
    let logs: PodLogs | undefined;
    try {
      logs = new PodLogs(
        config,
        { id: podId, namespace, backend, shimPid: process.pid, startedAt: startedAt.toISOString(), stateDir },
        log,
      );
    } catch (err) {
      // The pod runs without kept logs (the admin endpoint and metrics still work).
      log.warn('cannot keep pod logs', { logRoot: config.logRoot, error: err });
    }
    const admin = createAdminServer(
      {
        identity: () => ({ id: podId, namespace, backend, startedAt, logDir: logs?.dir ?? '' }),
        view: () => {
          const v = this.view();
          return v && (v.id === podId || v.state === 'booting') ? v : undefined;
        },
        allowUvmExec: config.allowUvmExec,
      },
      log,
      this.registry,
    );
    const adminReady = serveAdmin(admin, stateDir, join(stateDir, ADMIN_SOCKET)).catch((err: unknown) =>
      log.warn('admin endpoint unavailable', { error: err }),
    );
    const unobserve = [
      this.registry.gauge(POD_METRICS.pods, 'Pods this shim runs', '{pod}', () => [
        {
          attributes: { backend: this.view()?.sandbox?.backend ?? backend },
          value: this.view()?.state === 'running' ? 1 : 0,
        },
      ]),
      this.registry.gauge(POD_METRICS.containers, 'Containers whose init process runs', '{container}', () => [
        {
          value: (this.view()?.containers ?? []).filter(
            (c) => c.processes[0]?.state === 'running' || c.processes[0]?.state === 'paused',
          ).length,
        },
      ]),
    ];
    this.current = { id: podId, backend, startedAt, logs, admin, adminReady, unobserve };
    return { guestLog: logs };
  }

  async podReady(pod: { id: string; sandbox: { backend: string }; agent: AgentClient }): Promise<void> {
    const cur = this.current;
    if (cur?.id === pod.id) cur.logs?.update({ backend: pod.sandbox.backend });
    if (!tracingEnabled()) return;
    // The guest traces while we read its spans; the Create that booted the pod waits until it does.
    try {
      // A span of its own: loading the tracing SDK in the guest is a cost only tracing pays (~1 s under TCG).
      await withSpan('guest tracing start', {}, () =>
        relayGuestSpans(pod.agent.streamSpans({ maxBatch: 256 }), {
          pod: pod.id,
          log: this.opts.logger.with({ pod: pod.id }),
        }),
      );
    } catch (err) {
      this.opts.logger.warn('no spans from the guest', { pod: pod.id, error: err });
    }
  }

  sandboxExited(podId: string, reason: SandboxExitReason): void {
    const cur = this.current;
    if (cur?.id !== podId) return;
    cur.logs?.update({
      exit:
        reason.kind === 'crashed' ? { kind: 'crashed', code: reason.code, signal: reason.signal } : { kind: 'stopped' },
    });
  }

  podStopped(podId: string): void {
    const cur = this.current;
    if (cur?.id !== podId) return;
    this.current = undefined;
    cur.logs?.update({ stoppedAt: new Date().toISOString() });
    cur.logs?.close();
    for (const u of cur.unobserve) u();
    // Fire-and-forget on purpose: podStopped is a synchronous hook of the Task service; close() awaits it again.
    void cur.adminReady
      .then(() => cur.admin.close())
      .catch((err: unknown) =>
        this.opts.logger.with({ pod: cur.id }).warn('closing the admin endpoint failed', { error: err }),
      );
  }

  /** Shim exit: whatever is still open. */
  async close(): Promise<void> {
    const cur = this.current;
    if (!cur) return;
    this.podStopped(cur.id);
    await cur.adminReady;
    await cur.admin
      .close()
      .catch((err: unknown) =>
        this.opts.logger.with({ pod: cur.id }).warn('closing the admin endpoint failed', { error: err }),
      );
  }
}
