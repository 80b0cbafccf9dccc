// `lcowctl doctor [--json] [--config RUNTIME.toml] [--containerd-config PATH]`: checks the host and says what to
// fix. Human output by default, --json for scripts. Exit codes: 0 healthy, 1 a failure (pods will not start),
// 2 usage error, 3 warnings only (pods run, degraded: e.g. TCG instead of KVM).
import { EXIT, renderHuman, runDoctor, type DoctorOptions, type HostProbes } from './doctor.js';

export const USAGE = `usage: lcowctl doctor [--json] [--config RUNTIME.toml] [--containerd-config PATH]

Checks this host for containerd-shim-lcow: Node, the runtime config, the guest image, QEMU, KVM (or TCG),
vhost-vsock, runc, the shim on PATH, containerd's config and /run/lcow. Says what to fix.
  --json                    one JSON object on stdout (checks, summary, exitCode)
  --config PATH             the lcow runtime TOML (default: the ConfigPath of the lcow runtime in containerd's config)
  --containerd-config PATH  default /etc/containerd/config.toml
Exit codes: 0 healthy, 1 at least one failure, 2 usage error, 3 warnings only.`;

class UsageError extends Error {}

export async function main(
  argv: string[],
  probes?: HostProbes,
  out: (s: string) => void = (s) => process.stdout.write(s),
  err: (s: string) => void = (s) => process.stderr.write(s),
): Promise<number> {
  const opts: DoctorOptions = {};
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (!v) throw new UsageError(`${flag} needs a path`);
      return v;
    };
    try {
      switch (flag) {
        case '--json':
          json = true;
          break;
        case '--config':
          opts.configPath = value();
          break;
        case '--containerd-config':
          opts.containerdConfigPath = value();
          break;
        case '-h':
        case '--help':
          out(USAGE + '\n');
          return EXIT.ok;
        default:
          throw new UsageError(`unknown argument ${JSON.stringify(a)}`);
      }
    } catch (e) {
      if (!(e instanceof UsageError)) throw e;
      err(`lcowctl doctor: ${e.message}\n${USAGE}\n`);
      return EXIT.usage;
    }
  }
  const report = await runDoctor(probes ?? (await import('./probes.js')).realProbes(), opts);
  out(json ? JSON.stringify(report, null, 2) + '\n' : renderHuman(report));
  return report.exitCode;
}
