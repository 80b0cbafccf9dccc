// The shim's contract with containerd on Windows, where everything is a named pipe (Node's net module serves and
// dials \\.\pipe\ names as it does unix sockets):
//  - the Task API address: \\.\pipe\ProtectedPrefix\Administrators\containerd-shim-<ns>-<group>-pipe, as
//    hcsshim's runhcs shim names it (only elevated Administrators and SYSTEM can create pipes under that prefix,
//    so no unprivileged process can squat on a shim's address). One daemon per group (pod), as on Linux.
//  - the log: containerd dials \\.\pipe\containerd-shim-<ns>-<id>-log (core/runtime/v2/shim_windows.go
//    openShimLog) and reads; the shim serves it, drops lines while no reader is attached, and takes the newest
//    reader when containerd reconnects (containerd restarts).
//  - `start` cannot hand the daemon a listening socket (no fd passing): the daemon listens itself and `start`
//    waits until the pipe answers (never a fixed sleep), then writes `address` and prints it.
import net from 'node:net';
import type { LogSink } from '../util/log.js';
import { PIPE_PREFIX } from '../util/platform.js';
import { canConnect } from './address.js';

export { PIPE_PREFIX, isPipePath } from '../util/platform.js';

/** containerd namespaces and ids are [A-Za-z0-9._-]: anything else cannot be part of a pipe name of ours. */
const NAME_PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function part(what: string, v: string): string {
  if (!NAME_PART.test(v)) throw new Error(`invalid ${what} for a pipe name: ${JSON.stringify(v)}`);
  return v;
}

/** The Task API pipe of the shim serving `grouping` (the pod) in `namespace`. */
export function shimPipeAddress(namespace: string, grouping: string): string {
  return `${PIPE_PREFIX}ProtectedPrefix\\Administrators\\containerd-shim-${part('namespace', namespace)}-${part('id', grouping)}-pipe`;
}

/** The log pipe containerd dials for task `id`. */
export function shimLogPipe(namespace: string, id: string): string {
  return `${PIPE_PREFIX}containerd-shim-${part('namespace', namespace)}-${part('id', id)}-log`;
}

/**
 * The log as a pipe server: the newest reader gets the lines, older ones are dropped; with no reader, lines
 * are discarded (logging never blocks or buffers without bound). Writes are bounded per reader (1 MiB queued).
 */
export class PipeLogSink implements LogSink {
  private reader: net.Socket | undefined;
  private constructor(private readonly server: net.Server) {
    server.on('connection', (s) => {
      this.reader?.destroy();
      this.reader = s;
      s.on('error', () => undefined);
      s.on('close', () => {
        if (this.reader === s) this.reader = undefined;
      });
      // containerd only reads; anything it sends is ignored.
      s.resume();
    });
    server.on('error', () => undefined);
  }

  static listen(path: string): Promise<PipeLogSink> {
    const server = net.createServer();
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve(new PipeLogSink(server));
      });
    });
  }

  write(line: string): boolean {
    const r = this.reader;
    if (!r || !r.writable || r.writableLength >= 1 << 20) return false;
    return r.write(line);
  }

  close(): void {
    this.reader?.destroy();
    this.server.close();
  }
}

/**
 * `start` on Windows: polls until the daemon's pipe answers (10 ms steps, as containerd's awaitPipeReady), or
 * fails when the daemon exited first or `timeoutMs` passed.
 */
export async function waitForPipe(
  path: string,
  daemonExited: () => string | undefined,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await canConnect(path, 500)) return;
    const why = daemonExited();
    if (why) throw new Error(`the shim daemon ${why} before serving ${path}`);
    if (Date.now() >= deadline) throw new Error(`the shim daemon did not serve ${path} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
