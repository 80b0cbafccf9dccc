// lcowctl's operator commands: pods, ps, console, stats, exec, prune. Each is `run(name, argv)`: output on
// stdout (tables, or JSON with --json), errors on stderr as "lcowctl: ...", and an exit code (args.ts EXIT).
import { CtlError, EXIT } from './args.js';

export interface Output {
  stdout(s: string): void;
  stderr(s: string): void;
  stdoutBytes(b: Uint8Array): void;
  stderrBytes(b: Uint8Array): void;
}

export const processOutput: Output = {
  stdout: (s) => void process.stdout.write(s),
  stderr: (s) => void process.stderr.write(s),
  stdoutBytes: (b) => void process.stdout.write(b),
  stderrBytes: (b) => void process.stderr.write(b),
};

const COMMON = `Common flags: --json (machine-readable output), -n/--namespace NS (only that containerd namespace),
--state-root DIR (live pods' admin sockets; default /run/lcow, env LCOW_STATE_ROOT), --log-root DIR (kept pod
logs; default /var/log/lcow, env LCOW_LOG_ROOT). POD is a pod (sandbox) id, NAMESPACE/POD, or a unique prefix.
Exit codes: 0 ok, 1 failed, 2 usage, 3 no such pod or log, 4 refused by the shim's configuration.`;

export const HELP: Record<string, { summary: string; usage: string }> = {
  pods: {
    summary: 'every pod on this host: id, namespace, backend, transport, state, uptime, memory, containers',
    usage: `usage: lcowctl pods [--all] [-n NS] [--json]

Lists the pods whose shims answer on their admin socket. MEMORY is the resident memory of the pod's host
processes (the QEMU process, or the agent for the process backend); CONTAINERS is running/total.
--all also lists stopped pods whose logs are still kept (STATE stopped or crashed, UPTIME how long ago).`,
  },
  ps: {
    summary: "a pod's containers and their processes (guest pids, states, exit statuses)",
    usage: `usage: lcowctl ps POD [--json]

One row per process: container, exec id ("(init)" for the container's own process), pid in the guest,
state (created, running, paused, exited), exit status and time once exited.`,
  },
  console: {
    summary: "the UVM's console log (or the agent's log), also after the pod is gone; --follow",
    usage: `usage: lcowctl console POD [--follow|-f] [--agent] [--lines N]

Prints the guest's serial console as the shim kept it (<log root>/<ns>/<pod>/console.log and its rotated
files): kernel and init messages, and the agent's output. --agent prints the agent's own log instead
(agent.log; the process backend has only that). --lines N prints the last N lines. --follow keeps printing
new lines until the pod stops (or Ctrl-C). Works for stopped pods until their logs are pruned.`,
  },
  stats: {
    summary: "a pod's metrics: 9P per operation, fids, boot phases, share setup, agent RPC latency",
    usage: `usage: lcowctl stats POD [--json]

The shim's metrics since it started (the same data OpenTelemetry export sends): UVM boot time by phase,
containers running, share setup time, per 9P share and operation the count, errors, p50/p99/max latency and
bytes in and out, fids held per 9P connection, and the latency of each agent RPC. --json prints the raw
snapshot (histograms with their bucket bounds and counts).`,
  },
  exec: {
    summary: 'run a command in the UVM itself, not in a container (needs allow_uvm_exec; logged)',
    usage: `usage: lcowctl exec POD [--timeout S] -- CMD [ARGS...]

Runs CMD in the pod's utility VM as the agent (root in the guest, outside every container), for debugging:
e.g. lcowctl exec mypod -- dmesg, -- cat /proc/meminfo, -- mount. The shim refuses unless its runtime
config has allow_uvm_exec = true, and logs every call. Output is returned when the command ends (at most
1 MiB per stream); it is killed after --timeout seconds (default 30, at most 600). lcowctl exits with the
command's status; 126 when the shim refused, 125 when lcowctl itself failed.`,
  },
  prune: {
    summary: 'delete the kept logs of stopped pods (all, the named ones, or --older-than DAYS)',
    usage: `usage: lcowctl prune [-n NS] [POD...] [--older-than DAYS] [--json]

Deletes <log root>/<ns>/<pod> of stopped pods. Running pods' logs are never removed. Shims also apply the
retention of the runtime config (log_keep_pods, log_keep_days) when a pod starts.`,
  },
};

const loaders: Record<string, () => Promise<(argv: string[], out: Output) => Promise<number>>> = {
  pods: async () => (await import('./pods.js')).podsCommand,
  ps: async () => (await import('./pods.js')).psCommand,
  console: async () => {
    const { consoleCommand } = await import('./console.js');
    return (argv, out) => {
      const ac = new AbortController();
      const onSig = (): void => ac.abort();
      process.once('SIGINT', onSig);
      process.once('SIGTERM', onSig);
      return consoleCommand(argv, out, ac.signal).finally(() => {
        process.off('SIGINT', onSig);
        process.off('SIGTERM', onSig);
      });
    };
  },
  stats: async () => (await import('./stats.js')).statsCommand,
  exec: async () => (await import('./exec.js')).execCommand,
  prune: async () => (await import('./prune.js')).pruneCommand,
};

/** Runs operator command `name`; returns the exit code. */
export async function run(name: string, argv: string[], out: Output = processOutput): Promise<number> {
  const help = HELP[name];
  const load = loaders[name];
  if (!help || !load) throw new Error(`not an operator command: ${name}`);
  const dashdash = argv.indexOf('--');
  const own = dashdash >= 0 ? argv.slice(0, dashdash) : argv;
  if (own.includes('--help') || own.includes('-h')) {
    out.stdout(`${help.usage}\n\n${COMMON}\n`);
    return EXIT.ok;
  }
  try {
    return await (
      await load()
    )(argv, out);
  } catch (err) {
    if (err instanceof CtlError) {
      out.stderr(`lcowctl ${name}: ${err.message}\n`);
      return err.exitCode;
    }
    out.stderr(`lcowctl ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.failed;
  }
}

export { COMMON as COMMON_HELP };
