// Where a UVM's boot time goes, from what the host sees: QEMU spawned, the guest's console lines
// ("LCOW init uptime=S" and "LCOW ready-for-agent uptime=S", printed by hack/guest/uvm-init.sh), the agent's
// control connection and its first answer. The kernel's start is the init line's arrival minus the uptime it
// reports. Each phase becomes a span (children of the active one: `sandbox boot`) and a sample of
// lcow.uvm.boot.duration{phase}.
// A UVM restored from a template (template.ts) has no kernel boot and no init: its phases are 'qemu start'
// (until the restore begins), 'restore' (the device state loaded and the VM running), then the agent's.
import { metrics as processMetrics, type MetricsRegistry } from '../../telemetry/metrics.js';
import { recordSpan, withSpan } from '../../telemetry/index.js';

export const BOOT_PHASE_METRIC = 'lcow.uvm.boot.duration';
export const SHARE_SETUP_METRIC = 'lcow.share.setup.duration';

/** Phase names in boot order (a cold boot has no 'restore'; a clone has no 'kernel' and 'init'). */
export const BOOT_PHASES = ['qemu start', 'kernel', 'init', 'restore', 'agent start', 'agent ready'] as const;
type PhaseName = (typeof BOOT_PHASES)[number];

const INIT_RE = /^LCOW init uptime=(\d+(?:\.\d+)?)/;
const READY_FOR_AGENT_RE = /^LCOW ready-for-agent uptime=(\d+(?:\.\d+)?)/;

export class BootPhases {
  private spawnedAt = 0;
  private kernelAt: number | undefined;
  private initAt: number | undefined;
  private readyForAgentAt: number | undefined;
  private restoringAt: number | undefined;
  private restoredAt: number | undefined;
  private connectedAt: number | undefined;
  private readyAt: number | undefined;

  constructor(private readonly now: () => number = Date.now) {}

  /** QEMU was (re)started: a boot attempt begins. */
  spawned(): void {
    this.spawnedAt = this.now();
    this.kernelAt = this.initAt = this.readyForAgentAt = this.connectedAt = this.readyAt = undefined;
    this.restoringAt = this.restoredAt = undefined;
  }

  /** A clone: its device state is being loaded (no kernel boots). */
  restoring(): void {
    this.restoringAt = this.now();
  }

  /** A clone runs: its agent was already listening when the template was saved. */
  restored(): void {
    this.restoredAt = this.now();
  }

  /** A console line (the guest's clock is read from the uptime it prints, never trusted for more). */
  consoleLine(line: string): void {
    const t = this.now();
    if (this.restoringAt !== undefined) return; // a clone: its boot happened in the template
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
  phases(): Array<{ name: PhaseName; start: number; end: number }> {
    const marks: Array<[PhaseName, number | undefined]> =
      this.restoringAt !== undefined
        ? [
            ['qemu start', this.spawnedAt],
            ['restore', this.restoringAt],
            ['agent start', this.restoredAt],
            ['agent ready', this.connectedAt],
          ]
        : [
            ['qemu start', this.spawnedAt],
            ['kernel', this.kernelAt],
            ['init', this.initAt],
            ['agent start', this.readyForAgentAt],
            ['agent ready', this.connectedAt],
          ];
    marks.push(['agent ready', this.readyAt]); // the end of the last phase
    const out: Array<{ name: PhaseName; start: number; end: number }> = [];
    for (let i = 0; i + 1 < marks.length; i++) {
      const [name, start] = marks[i]!;
      const end = marks[i + 1]![1];
      if (start !== undefined && end !== undefined && start > 0) out.push({ name, start, end });
    }
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
