// Where a UVM's boot time goes, from what the host sees: QEMU spawned, the guest's console lines
// ("LCOW init uptime=S" and "LCOW ready-for-agent uptime=S", printed by hack/guest/uvm-init.sh), the agent's
// control connection and its first answer. The kernel's start is the init line's arrival minus the uptime it
// reports. Each phase becomes a span (children of the active one: `sandbox boot`) and a sample of
// lcow.uvm.boot.duration{phase}.
import { metrics as processMetrics, type MetricsRegistry } from '../../telemetry/metrics.js';
import { recordSpan, withSpan } from '../../telemetry/index.js';

export const BOOT_PHASE_METRIC = 'lcow.uvm.boot.duration';
export const SHARE_SETUP_METRIC = 'lcow.share.setup.duration';

/** Phase names in boot order. */
export const BOOT_PHASES = ['qemu start', 'kernel', 'init', 'agent start', 'agent ready'] as const;

const INIT_RE = /^LCOW init uptime=(\d+(?:\.\d+)?)/;
const READY_FOR_AGENT_RE = /^LCOW ready-for-agent uptime=(\d+(?:\.\d+)?)/;

export class BootPhases {
  private spawnedAt = 0;
  private kernelAt: number | undefined;
  private initAt: number | undefined;
  private readyForAgentAt: number | undefined;
  private connectedAt: number | undefined;
  private readyAt: number | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** QEMU was (re)started: a boot attempt begins. */
  spawned(): void {
    this.spawnedAt = this.now();
    this.kernelAt = this.initAt = this.readyForAgentAt = this.connectedAt = this.readyAt = undefined;
  }

  /** A console line (the guest's clock is read from the uptime it prints, never trusted for more). */
  consoleLine(line: string): void {
    const t = this.now();
    let m = INIT_RE.exec(line);
    if (m && this.initAt === undefined) {
      this.initAt = t;
      const uptimeMs = Number(m[1]) * 1000;
      this.kernelAt = Math.min(t, Math.max(this.spawnedAt, t - uptimeMs));
      return;
    }
    m = READY_FOR_AGENT_RE.exec(line);
    if (m && this.readyForAgentAt === undefined && this.initAt !== undefined) this.readyForAgentAt = t;
  }

  connected(): void {
    this.connectedAt = this.now();
  }

  ready(): void {
    this.readyAt = this.now();
  }

  /** Phases with start and end (ms since the epoch); a phase whose ends were not seen is left out. */
  phases(): Array<{ name: (typeof BOOT_PHASES)[number]; start: number; end: number }> {
    const marks = [this.spawnedAt, this.kernelAt, this.initAt, this.readyForAgentAt, this.connectedAt, this.readyAt];
    const out: Array<{ name: (typeof BOOT_PHASES)[number]; start: number; end: number }> = [];
    BOOT_PHASES.forEach((name, i) => {
      const start = marks[i];
      const end = marks[i + 1];
      if (start !== undefined && end !== undefined && start > 0) out.push({ name, start, end });
    });
    return out;
  }

  /** Spans under the active span, and one sample per phase (and `total`) in the registry. */
  report(attributes: Record<string, string>, registry: MetricsRegistry = processMetrics): void {
    const h = registry.histogram(BOOT_PHASE_METRIC, 'UVM boot time by phase', 's');
    for (const p of this.phases()) {
      h.record((p.end - p.start) / 1000, { ...attributes, phase: p.name });
      recordSpan(`uvm ${p.name}`, p.start, p.end, attributes);
    }
    if (this.readyAt !== undefined && this.spawnedAt > 0)
      h.record((this.readyAt - this.spawnedAt) / 1000, { ...attributes, phase: 'total' });
  }
}

/** A share's setup (host 9P server, the guest's mount) as a span and a sample of lcow.share.setup.duration. */
export async function timedShareSetup<T>(
  attributes: { path: string; readOnly: boolean },
  fn: () => Promise<T>,
  registry: MetricsRegistry = processMetrics,
): Promise<T> {
  const t0 = performance.now();
  const r = await withSpan(
    'share add',
    { 'lcow.share.path': attributes.path, 'lcow.share.read_only': attributes.readOnly },
    fn,
  );
  registry
    .histogram(SHARE_SETUP_METRIC, 'Time to make a host path visible in the guest', 's')
    .record((performance.now() - t0) / 1000, { read_only: String(attributes.readOnly) });
  return r;
}
