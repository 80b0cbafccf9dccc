// Host side of a process's stdio: containerd's fifos (or binary:// / file:// log URIs) on one end, the
// agent's ReadOutput / WriteStdin ttrpc streams on the other. Never blocks the libuv threadpool: output
// fifos are opened O_RDWR (never blocks, never EPIPE), stdin O_RDONLY|O_NONBLOCK plus a keepalive writer
// that CloseIO drops; fds are wrapped in net.Socket so reads and writes are event-driven.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants, createWriteStream, mkdirSync, openSync, closeSync } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { OutputStream, type Agent as AgentDesc } from '../gen/agent/v1/agent_pb.js';
import { pipe } from '../util/pipe.js';
import type { ServiceClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';
import { isPipePath } from '../util/platform.js';
import { invalidArgument } from './errors.js';

type AgentClient = ServiceClient<(typeof AgentDesc)['method']>;

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export function validateStdioPath(kind: string, p: string, platform: NodeJS.Platform = process.platform): void {
  if (p === '') return;
  if (p.length > 4096 || p.includes('\0')) throw invalidArgument(`invalid ${kind} path`);
  if (platform === 'win32') {
    // containerd for Windows names named pipes the shim dials (it serves them).
    if (isPipePath(p)) return;
    if (p.startsWith('file://') && kind !== 'stdin') return;
    throw invalidArgument(`${kind} must be a named pipe (\\\\.\\pipe\\...) or, for output, a file:// URI`);
  }
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
export interface OutputSink {
  stream: Writable;
  close(): void;
}

export class StdioRelay {
  private stdinSrc: Readable | undefined;
  /** Windows: the stdin pipe feeding stdinSrc (CloseIO ends the feed). */
  private stdinPipe: PipeStdin | undefined;
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
    private readonly pipes: boolean,
  ) {}

  /**
   * Opens the host side. `ids` feed binary:// loggers (CONTAINER_ID / CONTAINER_NAMESPACE). On Windows the
   * paths are named pipes containerd serves: the shim dials them.
   */
  static async open(
    paths: StdioPaths,
    ids: { id: string; namespace: string },
    log: Logger,
    opts: { deferStdin?: boolean; platform?: NodeJS.Platform } = {},
  ): Promise<StdioRelay> {
    const platform = opts.platform ?? process.platform;
    for (const [k, v] of Object.entries({ stdin: paths.stdin, stdout: paths.stdout, stderr: paths.stderr }))
      validateStdioPath(k, v, platform);
    const r = new StdioRelay(paths, log, platform === 'win32');
    try {
      if (paths.stdin && !opts.deferStdin) r.openStdin();
      const out = paths.stdout;
      if (out.startsWith('binary://')) {
        await r.openBinaryLogger(out, ids);
      } else if (out.startsWith('file://')) {
        // As containerd: the directory is created (0755), the file opened O_APPEND|O_CREAT|O_WRONLY 0644,
        // stdout and stderr share it.
        const file = fileURLToPath(out);
        mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
        const fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o644);
        const sock = new FileSink(fd);
        r.stdoutSink = sock;
        r.stderrSink = sock;
      } else {
        const sink = r.pipes ? pipeSink : fifoSink;
        if (out) r.stdoutSink = sink(out);
        if (paths.stderr && !paths.terminal) r.stderrSink = sink(paths.stderr);
      }
    } catch (err) {
      r.close();
      throw err;
    }
    return r;
  }

  /**
   * Opens the stdin fifo (reader, then the keepalive writer). Execs do this at Start, as runc's shim does:
   * clients such as ctr only install their CloseIO-on-EOF hook once Exec returned, so a reader present
   * before that lets them hit EOF early and never send CloseIO.
   */
  private openStdin(): void {
    if (this.stdinSrc || !this.paths.stdin || this.closed) return;
    if (this.pipes) {
      this.stdinPipe = new PipeStdin(this.paths.stdin, (err) => this.log.debug('stdin pipe', { error: err }));
      this.stdinSrc = this.stdinPipe.feed;
      this.stdinSrc.pause();
      return;
    }
    this.stdinSrc = openFifoSocket(this.paths.stdin, constants.O_RDONLY | constants.O_NONBLOCK, true);
    this.stdinSrc.pause();
    try {
      // Keeps the read side from seeing EOF when a client detaches; CloseIO closes it.
      this.keepaliveFd = openSync(this.paths.stdin, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch {
      this.keepaliveFd = -1;
    }
  }

  get wantsStdin(): boolean {
    return this.paths.stdin !== '';
  }
  get wantsStdout(): boolean {
    return this.stdoutSink !== undefined;
  }
  get wantsStderr(): boolean {
    return this.stderrSink !== undefined && !this.paths.terminal;
  }

  private async openBinaryLogger(uri: string, ids: { id: string; namespace: string }): Promise<void> {
    // containerd's convention (v1.6.20 pkg/process/io.go NewBinaryIO / NewBinaryCmd): the path from the URI,
    // each query key (then its first value) as arguments; env only CONTAINER_ID and CONTAINER_NAMESPACE;
    // stdio /dev/null; fd 3 and fd 4 = read ends of real pipes carrying stdout and stderr; fd 5 = write end
    // of a pipe the logger closes (or writes one byte to) once ready. On close: the pipes are closed, then
    // SIGTERM, then SIGKILL after 12 s.
    const u = new URL(uri);
    const args: string[] = [];
    for (const [k, v] of u.searchParams) {
      args.push(k);
      if (v) args.push(v);
    }
    const out = pipe();
    const err = pipe();
    const ready = pipe();
    const ours = [out.write, err.write, ready.read];
    const theirs = [out.read, err.read, ready.write];
    let child: ChildProcess;
    try {
      child = spawn(decodeURIComponent(u.pathname), args, {
        env: { CONTAINER_ID: ids.id, CONTAINER_NAMESPACE: ids.namespace },
        stdio: ['ignore', 'ignore', 'ignore', ...theirs],
      });
    } catch (e) {
      for (const fd of [...ours, ...theirs]) closeQuiet(fd);
      throw e;
    } finally {
      for (const fd of theirs) closeQuiet(fd);
    }
    this.logger = child;
    const readySock = new net.Socket({ fd: ready.read, readable: true, writable: false });
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('error', reject);
        child.once('exit', (code, signal) =>
          reject(new Error(`logging binary exited before it was ready (code ${code}, signal ${signal})`)),
        );
        readySock.once('data', () => resolve());
        readySock.once('end', () => resolve());
        readySock.once('error', () => resolve());
      });
    } catch (e) {
      closeQuiet(out.write);
      closeQuiet(err.write);
      throw e;
    } finally {
      readySock.destroy();
    }
    const mk = (fd: number): OutputSink => {
      const s = new net.Socket({ fd, readable: false, writable: true });
      s.on('error', () => undefined);
      return { stream: s, close: () => s.destroySoon() };
    };
    this.stdoutSink = mk(out.write);
    this.stderrSink = mk(err.write);
  }

  /** Starts the pumps between the host side and the agent's streams for one process. */
  attach(agent: AgentClient, containerId: string, execId: string): void {
    // Each sink is closed once every stream writing to it reached EOF (stdout and stderr share a file:// sink):
    // the reader of the fifo (CRI's ExecSync waits for it) then sees EOF, as with runc's shim.
    const writers = new Map<OutputSink, number>();
    const pump = async (sink: OutputSink, stream: OutputStream): Promise<void> => {
      const s = agent.readOutput({ containerId, execId, stream });
      try {
        for await (const chunk of s) {
          if (chunk.data.length === 0) continue;
          if (!sink.stream.write(chunk.data)) await new Promise((r) => sink.stream.once('drain', r));
        }
      } catch (err) {
        this.log.debug('output relay ended', { error: err, stream: OutputStream[stream] });
      } finally {
        const left = (writers.get(sink) ?? 1) - 1;
        writers.set(sink, left);
        if (left === 0) sink.close();
      }
    };
    const outputs: Array<[OutputSink, OutputStream]> = [];
    if (this.stdoutSink) outputs.push([this.stdoutSink, OutputStream.STDOUT]);
    if (this.stderrSink && !this.paths.terminal) outputs.push([this.stderrSink, OutputStream.STDERR]);
    for (const [sink] of outputs) writers.set(sink, (writers.get(sink) ?? 0) + 1);
    for (const [sink, stream] of outputs) this.pumps.push(pump(sink, stream));
    this.openStdin();
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
          // The source ended early (the task is deleted, the client went away): close the send side so the agent
          // answers and the call ends on both sides; else every process would leave an open stream in the shim
          // and in the agent until the pod's connection closed. Closing the send side never closes stdin itself.
          await s.closeSend().catch(() => undefined);
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
    this.stdinPipe?.close();
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
      // The pipes were just closed: the logger sees EOF; SIGTERM lets it flush and exit, SIGKILL after 12 s.
      setImmediate(() => {
        if (l.exitCode !== null || l.signalCode !== null) return;
        l.kill('SIGTERM');
        const t = setTimeout(() => l.kill('SIGKILL'), 12_000);
        t.unref();
        l.once('exit', () => clearTimeout(t));
      });
    }
  }
}

function closeQuiet(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

/**
 * Windows: the stdin pipe containerd serves, dialed by the shim. A pipe has no second writer that could hold it
 * open (the fifo keepalive), so EOF is the client closing its end, or CloseIO: close() ends the feed the relay
 * reads (its bytes so far still go through) and drops the connection.
 */
export class PipeStdin {
  readonly feed = new PassThrough();
  private readonly conn: net.Socket;

  constructor(path: string, onError: (err: Error) => void) {
    this.conn = net.connect(path);
    this.conn.on('error', onError);
    this.conn.pipe(this.feed);
  }

  close(): void {
    if (this.conn.destroyed) return;
    this.conn.unpipe(this.feed);
    this.feed.end();
    this.conn.destroy();
  }
}

/** Windows: an output pipe containerd serves, dialed by the shim. */
export function pipeSink(path: string): OutputSink {
  const s = net.connect(path);
  s.on('error', () => undefined);
  return { stream: s, close: () => s.destroySoon() };
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
    if (!this.stream.writableEnded) this.stream.end();
  }
}
