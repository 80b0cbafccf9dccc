// A second, unprivileged local user for attack tests: created with useradd (a system account with no home and
// no login shell, named after the test process), used through setpriv (real and effective ids, no groups, no
// capabilities), removed with userdel. The point is a real host user that tries to use what a guest made.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export interface HostUser {
  name: string;
  uid: number;
  gid: number;
  /** Runs argv as the user; resolves with stdout, stderr and the exit code (never rejects on a non-zero code). */
  run(argv: string[], opts?: { timeoutMs?: number }): Promise<{ code: number; stdout: string; stderr: string }>;
  remove(): void;
}

/** Why a host user cannot be created here, or undefined. */
export function hostUserUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (creates a local user)';
  for (const bin of ['useradd', 'userdel', 'setpriv']) {
    try {
      execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    } catch {
      return `${bin} is not installed`;
    }
  }
  return undefined;
}

export function createHostUser(tag: string): HostUser {
  const name = `${tag}${process.pid}`.slice(0, 31);
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', '--user-group', name], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
  let removed = false;
  return {
    name,
    uid,
    gid,
    async run(argv, opts = {}) {
      try {
        const { stdout, stderr } = await execFileP(
          'setpriv',
          [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--inh-caps=-all', '--', ...argv],
          { timeout: opts.timeoutMs ?? 10_000 },
        );
        return { code: 0, stdout, stderr };
      } catch (err) {
        const e = err as { code?: number; stdout?: string; stderr?: string };
        return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
      }
    },
    remove() {
      if (removed) return;
      removed = true;
      execFileSync('userdel', [name], { stdio: 'ignore' });
    },
  };
}
