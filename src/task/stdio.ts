// Host side of a process's stdio: containerd's fifos (or binary:// / file:// log URIs) on one end, the
// agent's ReadOutput / WriteStdin ttrpc streams on the other. Never blocks the libuv threadpool: output
// fifos are opened O_RDWR (never blocks, never EPIPE), stdin O_RDONLY|O_NONBLOCK plus a keepalive writer
// that CloseIO drops; fds are wrapped in net.Socket so reads and writes are event-driven.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants, createWriteStream, openSync, closeSync } from 'node:fs';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { OutputStream, type Agent as AgentDesc } from '../gen/agent/v1/agent_pb.js';
import type { ServiceClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { invalidArgument } from './errors.js';

type AgentClient = ServiceClient<(typeof AgentDesc)['method']>;

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export function validateStdioPath(kind: string, p: string): void {
  if (p === '') return;
  if (p.length > 4096 || p.includes('\0')) throw invalidArgument(`invalid ${kind} path`);
  if (p.startsWith('binary://') || p.startsWith('file://')) {
    if (kind === 'stdin') throw invalidArgument('stdin must be a fifo path');
    return;
  }
  if (!p.startsWith('/')) throw invalidArgument(`${kind} must be an absolute fifo path or a binary:// or file:// URI`);
}

function openFifoSocket(path: string, flags: number, readable: boolean): net.Socket {
  const fd = openSync(path, flags);
  return new net.Socket({ fd, readable, writable: !readable });
}

/** A sink for container output. */
interface OutputSink {
  stream: Writable;
  close(): void;
}

export class StdioRelay {
  private stdinSrc: net.Socket | undefined;
  private keepaliveFd = -1;
  private stdoutSink: OutputSink | undefined;
  private stderrSink: OutputSink | undefined;
  private logger: ChildProcess | undefined;
  private readonly pumps: Array<Promise<void>> = [];
  private stdinDone: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    readonly paths: StdioPaths,
    private readonly log: Logger,
  ) {}

  /** Opens the host side. `ids` feed binary:// loggers (CONTAINER_ID / CONTAINER_NAMESPACE). */
  static async open(paths: StdioPaths, ids: { id: string; namespace: string }, log: Logger): Promise<StdioRelay> {
    for (const [k, v] of Object.entries({ stdin: paths.stdin, stdout: paths.stdout, stderr: paths.stderr }))
      validateStdioPath(k, v);
    const r = new StdioRelay(paths, log);
    try {
      if (paths.stdin) {
        r.stdinSrc = openFifoSocket(paths.stdin, constants.O_RDONLY | constants.O_NONBLOCK, true);
        r.stdinSrc.pause();
        try {
          // Keeps the read side from seeing EOF when a client detaches; CloseIO closes it.
          r.keepaliveFd = openSync(paths.stdin, constants.O_WRONLY | constants.O_NONBLOCK);
        } catch {
          r.keepaliveFd = -1;
        }
      }
      const out = paths.stdout;
      if (out.startsWith('binary://')) {
        await r.openBinaryLogger(out, ids);
      } else if (out.startsWith('file://')) {
        const file = fileURLToPath(out);
        const fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640);
        const sock = new FileSink(fd);
        r.stdoutSink = sock;
        r.stderrSink = sock;
      } else {
        if (out) r.stdoutSink = fifoSink(out);
        if (paths.stderr && !paths.terminal) r.stderrSink = fifoSink(paths.stderr);
      }
    } catch (err) {
      r.close();
      throw err;
    }
    return r;
  }

  get wantsStdin(): boolean {
    return this.stdinSrc !== undefined;
  }
  get wantsStdout(): boolean {
    return this.stdoutSink !== undefined;
  }
  get wantsStderr(): boolean {
    return this.stderrSink !== undefined && !this.paths.terminal;
  }

  private async openBinaryLogger(uri: string, ids: { id: string; namespace: string }): Promise<void> {
    // containerd's convention (pkg/process/io.go NewBinaryCmd): path from the URI, each query key (then its
    // first value) as arguments; env CONTAINER_ID and CONTAINER_NAMESPACE; fd 3 = stdout, fd 4 = stderr,
    // fd 5 = a pipe the logger closes (or writes to) once ready.
    const u = new URL(uri);
    const args: string[] = [];
    for (const [k, v] of u.searchParams) {
      args.push(k);
      if (v) args.push(v);
    }
    const child = spawn(decodeURIComponent(u.pathname), args, {
      env: { CONTAINER_ID: ids.id, CONTAINER_NAMESPACE: ids.namespace },
      stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
    });
    this.logger = child;
    const ready = (child.stdio as unknown as Readable[])[5]!;
    await new Promise<void>((resolve, reject) => {
      child.once('error', reject);
      ready.once('data', () => resolve());
      ready.once('end', () => resolve());
      ready.once('close', () => resolve());
      ready.resume();
    });
    const mk = (w: Writable): OutputSink => ({ stream: w, close: () => w.end() });
    this.stdoutSink = mk(child.stdio[3] as Writable);
    this.stderrSink = mk(child.stdio[4] as Writable);
  }

  /** Starts the pumps between the host side and the agent's streams for one process. */
  attach(agent: AgentClient, containerId: string, execId: string): void {
    const pump = async (sink: OutputSink, stream: OutputStream): Promise<void> => {
      const s = agent.readOutput({ containerId, execId, stream });
      try {
        for await (const chunk of s) {
          if (chunk.data.length === 0) continue;
          if (!sink.stream.write(chunk.data)) await new Promise((r) => sink.stream.once('drain', r));
        }
      } catch (err) {
        this.log.debug('output relay ended', { error: err, stream: OutputStream[stream] });
      }
    };
    if (this.stdoutSink) this.pumps.push(pump(this.stdoutSink, OutputStream.STDOUT));
    if (this.stderrSink && !this.paths.terminal) this.pumps.push(pump(this.stderrSink, OutputStream.STDERR));
    if (this.stdinSrc) {
      const src = this.stdinSrc;
      this.stdinDone = (async () => {
        const s = agent.writeStdin();
        try {
          await s.send({ containerId, execId, data: new Uint8Array(0) });
          src.resume();
          for await (const chunk of src) await s.send({ data: chunk as Buffer });
          await s.closeSend();
          await s.response();
          await agent.closeStdin({ containerId, execId });
        } catch (err) {
          this.log.debug('stdin relay ended', { error: err });
        }
      })();
    }
  }

  /** Resolves once the stdin relay finished (EOF forwarded or failed). */
  stdinFinished(): Promise<void> {
    return this.stdinDone;
  }

  /** Resolves once all output reached the host sinks. */
  async outputDone(): Promise<void> {
    await Promise.all(this.pumps);
  }

  /** CloseIO(stdin): drop the keepalive writer; EOF reaches the process once the client closed too. */
  closeStdin(): void {
    if (this.keepaliveFd >= 0) {
      closeSync(this.keepaliveFd);
      this.keepaliveFd = -1;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.closeStdin();
    this.stdinSrc?.destroy();
    this.stdoutSink?.close();
    if (this.stderrSink !== this.stdoutSink) this.stderrSink?.close();
    if (this.logger) {
      const l = this.logger;
      setTimeout(() => l.kill(), 5000).unref();
    }
  }
}

function fifoSink(path: string): OutputSink {
  const s = openFifoSocket(path, constants.O_RDWR, false);
  s.on('error', () => undefined);
  return { stream: s, close: () => s.destroySoon() };
}

/** Regular file output (file://): fs writes are short and bounded, so the threadpool is fine here. */
class FileSink implements OutputSink {
  readonly stream: Writable;
  constructor(fd: number) {
    this.stream = createWriteStream('', { fd });
  }
  close(): void {
    this.stream.end();
  }
}
