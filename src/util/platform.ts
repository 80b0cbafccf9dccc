// Small portability facts shared by layers that must not import each other (task, shim, sandbox).

/** Every Windows named pipe path starts with this (\\.\pipe\). */
export const PIPE_PREFIX = '\\\\.\\pipe\\';

export function isPipePath(p: string): boolean {
  return p.startsWith(PIPE_PREFIX) && p.length > PIPE_PREFIX.length && p.length <= 256 && !p.includes('\0');
}
