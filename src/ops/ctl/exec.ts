// `lcowctl exec POD [--timeout S] -- CMD [ARGS...]`: runs a command in the pod's utility VM itself (not in a
// container) through the shim's admin endpoint; the shim refuses unless the runtime config has
// allow_uvm_exec = true, and logs every call. Exits with the command's status (126 refused, 125 lcowctl failed).
import { CtlError, EXIT, parseArgs, positiveIntFlag, usageError } from './args.js';
import { resolvePod, withAdmin } from './discover.js';
import type { Output } from './main.js';

export async function execCommand(argv: string[], out: Output): Promise<number> {
  try {
    const { common, flags, positional, rest } = parseArgs(argv, ['timeout=']);
    if (positional.length !== 1 || rest.length === 0)
      throw usageError('usage: lcowctl exec POD [--timeout S] -- CMD [ARGS...]');
    const timeoutS = positiveIntFlag(flags, 'timeout') ?? 30;
    if (timeoutS > 600) throw usageError('--timeout is at most 600 seconds');
    const pod = await resolvePod(common, positional[0], { stopped: false });
    const r = await withAdmin(pod, (a) =>
      a.execInUvm({ args: rest, timeoutMs: timeoutS * 1000 }, { timeoutMs: timeoutS * 1000 + 15_000 }),
    );
    if (common.json) {
      out.stdout(
        JSON.stringify({
          exitStatus: r.exitStatus,
          stdout: Buffer.from(r.stdout).toString('utf8'),
          stderr: Buffer.from(r.stderr).toString('utf8'),
          truncated: r.truncated,
          timedOut: r.timedOut,
        }) + '\n',
      );
    } else {
      out.stdoutBytes(r.stdout);
      out.stderrBytes(r.stderr);
      if (r.truncated) out.stderr('lcowctl: output cut at 1 MiB per stream\n');
      if (r.timedOut) out.stderr(`lcowctl: killed after ${timeoutS} s\n`);
    }
    return r.exitStatus;
  } catch (err) {
    if (err instanceof CtlError) {
      out.stderr(`lcowctl: ${err.message}\n`);
      if (err.exitCode === EXIT.usage) return EXIT.usage;
      return err.exitCode === EXIT.refused ? EXIT.execRefused : EXIT.execFailed;
    }
    throw err;
  }
}
