// pipe2(2) through koffi: an anonymous pipe as two raw fds. Shared by the shim (the stdio relay's logger pipes)
// and the guest agent (process stdio), so it lives here and not in either side.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const O_CLOEXEC = 0o2000000;

// koffi is loaded on first use so that modules importing this one (and their unit tests) do not pay for it.
let pipe2: ((fds: Int32Array, flags: number) => number) | undefined;

/** An anonymous pipe (a real one: libuv's 'pipe' stdio gives socketpairs, which break `> /dev/stdout`). */
export function pipe(): { read: number; write: number } {
  pipe2 ??= require('koffi').load('libc.so.6').func('int pipe2(_Out_ int *fds, int flags)') as (
    fds: Int32Array,
    flags: number,
  ) => number;
  const fds = new Int32Array(2);
  if (pipe2(fds, O_CLOEXEC) !== 0) throw new Error('pipe2 failed');
  return { read: fds[0]!, write: fds[1]! };
}
