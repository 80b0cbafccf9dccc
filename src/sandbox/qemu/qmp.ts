// A small QMP client (QEMU Machine Protocol: JSON lines over a unix socket). Enough for the shim: negotiate
// capabilities, run commands (system_powerdown, quit, query-status), collect events.
import { connect, type Socket } from 'node:net';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpError extends Error {
  override readonly name = 'QmpError';
}

export class QmpClient {
  private buf = '';
  private seq = 0;
  private readonly pending = new Map<string, Pending>();
  readonly events: Array<{ event: string; data?: unknown }> = [];
  private closed = false;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const p of this.pending.values()) p.reject(new QmpError('QMP connection closed'));
      this.pending.clear();
    });
  }

  /** Connects (retrying while QEMU creates the socket) and negotiates capabilities. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let c: QmpClient | undefined;
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        c = new QmpClient(socket);
        await c.greeting();
        await c.execute('qmp_capabilities');
        return c;
      } catch (err) {
        // A failed attempt must not leave its socket open (QEMU accepts one QMP client per chardev).
        c?.close();
        if (Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  private greetingWaiter: ((ok: boolean) => void) | undefined;
  private greeted = false;

  private greeting(): Promise<void> {
    if (this.greeted) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new QmpError('no QMP greeting')), 5000);
      this.greetingWaiter = (ok) => {
        clearTimeout(t);
        if (ok) resolve();
        else reject(new QmpError('bad QMP greeting'));
      };
    });
  }

  private onData(d: string): void {
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted = true;
        this.greetingWaiter?.(true);
      } else if ('event' in msg) {
        if (this.events.length < 256) this.events.push({ event: String(msg.event), data: msg.data });
      } else if (typeof msg.id === 'string') {
        const p = this.pending.get(msg.id);
        if (!p) continue;
        this.pending.delete(msg.id);
        if ('error' in msg) {
          const e = msg.error as { class?: string; desc?: string };
          p.reject(new QmpError(`${e.class ?? 'Error'}: ${e.desc ?? ''}`));
        } else p.resolve(msg.return);
      }
    }
  }

  /**
   * Runs a command with a file descriptor attached (QMP `getfd`/`add-fd` take it from the command's message):
   * `send` is given the command's bytes and must write them with the fd attached (SCM_RIGHTS), returning how
   * many bytes it wrote; the rest goes through the socket as usual. Waits for earlier writes to drain first so
   * that the fd travels with this command's bytes.
   */
  async executeWithFd(
    command: string,
    args: Record<string, unknown>,
    send: (sockFd: number, bytes: Buffer) => number,
    timeoutMs = 5000,
  ): Promise<unknown> {
    if (this.socket.writableLength > 0) await new Promise((r) => this.socket.once('drain', r));
    const fd = (this.socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0) throw new QmpError('QMP socket has no fd');
    return this.execute(command, args, timeoutMs, (line) => {
      const bytes = Buffer.from(line);
      const n = send(fd, bytes);
      if (n < bytes.length) this.socket.write(bytes.subarray(n));
    });
  }

  execute(
    command: string,
    args?: Record<string, unknown>,
    timeoutMs = 5000,
    write: (line: string) => void = (line) => this.socket.write(line),
  ): Promise<unknown> {
    if (this.closed) return Promise.reject(new QmpError('QMP connection closed'));
    const id = `c${++this.seq}`;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new QmpError(`QMP ${command} timed out`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(t);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      try {
        write(JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id }) + '\n');
      } catch (err) {
        this.pending.delete(id);
        clearTimeout(t);
        reject(err instanceof Error ? err : new QmpError(String(err)));
      }
    });
  }

  async status(): Promise<{ status: string; running: boolean }> {
    return (await this.execute('query-status')) as { status: string; running: boolean };
  }

  close(): void {
    this.socket.destroy();
  }
}
