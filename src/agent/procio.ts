// The agent's side of a process's stdio. Consumers (the ttrpc stdio streams) see stable PassThrough
// streams from the moment the process is registered; the real pipes or the pty master are plugged in when
// runc creates the process. PassThrough + pipe() keeps backpressure end to end.
import { closeSync } from 'node:fs';
import net from 'node:net';
import { PassThrough, type Readable, type Writable } from 'node:stream';
import tty from 'node:tty';
import { pipe } from '../util/pipe.js';
import { recvFdNonBlocking, setWinsize } from './sys.js';

export interface StdioWanted {
  terminal: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  width?: number;
  height?: number;
}

/** Output sources end on EOF; a pty master reports EIO once the last slave fd closed: that is EOF too. */
function endOnEio(src: Readable, dst: PassThrough, sources: Readable[]): void {
  sources.push(src);
  src.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EIO') dst.destroy(err);
    else dst.end();
  });
  src.pipe(dst);
}

export class ProcessIO {
  readonly stdout: PassThrough | undefined;
  readonly stderr: PassThrough | undefined;
  /** Everything written here reaches the process's stdin; end() closes it. */
  readonly stdin: PassThrough | undefined;
  private ptyFd = -1;
  private ptySocket: tty.ReadStream | undefined;
  private stdinTarget: Writable | undefined;
  private pendingChildFds: number[] = [];
  private closed = false;
  private readonly sources: Readable[] = [];

  constructor(readonly wanted: StdioWanted) {
    this.stdout = wanted.stdout ? new PassThrough({ highWaterMark: 64 * 1024 }) : undefined;
    // With a terminal, stderr is merged into the pty.
    this.stderr = wanted.stderr && !wanted.terminal ? new PassThrough({ highWaterMark: 64 * 1024 }) : undefined;
    this.stdin = wanted.stdin ? new PassThrough({ highWaterMark: 64 * 1024 }) : undefined;
  }

  /**
   * Pipes for a non-terminal process: returns the child's three stdio entries for spawn(); our ends are
   * wired up. Call childSpawned() after the runc call to close the child's ends here.
   */
  openPipes(): Array<number | 'ignore'> {
    const entries: Array<number | 'ignore'> = ['ignore', 'ignore', 'ignore'];
    if (this.stdin) {
      const p = pipe();
      entries[0] = p.read;
      this.pendingChildFds.push(p.read);
      const w = new net.Socket({ fd: p.write, readable: false, writable: true });
      w.on('error', () => undefined); // EPIPE once the process exits
      this.stdinTarget = w;
      this.stdin.pipe(w);
    }
    const outs: Array<[PassThrough | undefined, 1 | 2]> = [
      [this.stdout, 1],
      [this.stderr, 2],
    ];
    for (const [dst, idx] of outs) {
      if (!dst) continue;
      const p = pipe();
      entries[idx] = p.write;
      this.pendingChildFds.push(p.write);
      const r = new net.Socket({ fd: p.read, readable: true, writable: false });
      endOnEio(r, dst, this.sources);
    }
    return entries;
  }

  /** The runc process that needed the child's pipe ends has exited (or failed): close our copies. */
  childSpawned(): void {
    for (const fd of this.pendingChildFds) {
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.pendingChildFds = [];
  }

  /**
   * Listens on `path` as runc's --console-socket; resolves with the pty master once runc passed it.
   * Must be called before runc runs; `created` rejects if runc fails first.
   */
  async acceptConsole(path: string, created: Promise<unknown>): Promise<void> {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    try {
      const fd = await new Promise<number>((resolve, reject) => {
        created.catch(reject);
        const timer = setTimeout(() => reject(new Error('timed out waiting for the console from runc')), 30_000);
        server.once('connection', (sock: net.Socket) => {
          const handleFd = (sock as unknown as { _handle: { fd: number } })._handle.fd;
          const poll = (): void => {
            try {
              const got = recvFdNonBlocking(handleFd);
              if (got === null) {
                setTimeout(poll, 2);
                return;
              }
              clearTimeout(timer);
              sock.destroy();
              resolve(got);
            } catch (err) {
              clearTimeout(timer);
              sock.destroy();
              reject(err as Error);
            }
          };
          poll();
        });
      });
      this.attachPty(fd);
    } finally {
      server.close();
    }
  }

  private attachPty(fd: number): void {
    this.ptyFd = fd;
    if (this.wanted.width && this.wanted.height) this.resize(this.wanted.width, this.wanted.height);
    const s = new tty.ReadStream(fd);
    this.ptySocket = s;
    if (this.stdout) endOnEio(s, this.stdout, this.sources);
    else s.on('error', () => undefined).resume();
    if (this.stdin) {
      // A pty has no "close stdin": ending our input just stops relaying (as runc's shim does).
      const sink = s as unknown as Writable;
      this.stdin.on('data', (d: Buffer) => {
        if (!sink.destroyed) sink.write(d);
      });
    }
  }

  resize(width: number, height: number): void {
    if (this.ptyFd < 0) throw new Error('process has no terminal');
    setWinsize(this.ptyFd, width, height);
  }

  get hasTerminal(): boolean {
    return this.wanted.terminal;
  }

  closeStdin(): void {
    this.stdin?.end();
  }

  /** Forces the output streams to end (exit happened, but a grandchild still holds the pipe). */
  abortOutput(): void {
    for (const src of this.sources) {
      src.unpipe();
      src.destroy();
    }
    for (const s of [this.stdout, this.stderr]) {
      if (s && !s.writableEnded) s.end();
    }
    this.ptySocket?.destroy();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.childSpawned();
    this.stdin?.destroy();
    this.stdinTarget?.destroy();
    this.ptySocket?.destroy();
    this.abortOutput();
  }
}
