// The ttrpc server: a method table plus the connections it serves. Transport-agnostic: hand it a listening
// net.Server, a unix socket path, or individual Duplex streams (vsock, TCP with a token, tests).
import { lstatSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { silentLogger, type Logger } from '../util/log.js';
import { listenPrivate } from '../util/private-fs.js';
import { TtrpcError } from './errors.js';
import { ServiceRegistry, type StreamHandler, type StreamKind, type UnaryHandler } from './registry.js';
import { ServerConnection } from './server-connection.js';
import { registerService, type ServiceImpl } from './service.js';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';

export interface TtrpcServerOptions {
  logger?: Logger;
  /** Unanswered calls per connection before the server stops reading from it (default 1024). */
  maxInFlightPerConnection?: number;
  /**
   * Maps errors thrown by handlers that are not TtrpcErrors (domain errors) to a status. Without it such
   * errors become UNKNOWN with their message.
   */
  errorMapper?: (err: unknown) => TtrpcError;
}

export class TtrpcServer {
  readonly registry = new ServiceRegistry();
  private readonly logger: Logger;
  private readonly maxInFlight: number;
  private readonly mapError: (err: unknown) => TtrpcError;
  private readonly connections = new Set<ServerConnection>();
  private readonly listeners: Array<{ server: net.Server; onConnection: (s: net.Socket) => void; owned: boolean }> = [];
  private shuttingDown = false;
  private allClosed: (() => void) | undefined;

  constructor(opts: TtrpcServerOptions = {}) {
    this.logger = opts.logger ?? silentLogger;
    this.maxInFlight = Math.max(1, opts.maxInFlightPerConnection ?? 1024);
    this.mapError = opts.errorMapper ?? TtrpcError.from;
  }

  register(service: string, method: string, handler: UnaryHandler): this {
    this.registry.add(service, method, { kind: 'unary', handler });
    return this;
  }

  /** Every implemented method of a protoc-gen-es service; see service.ts for the method shapes. */
  registerService<S extends GenServiceMethods>(desc: GenService<S>, impl: ServiceImpl<S>): this {
    registerService(this, desc, impl);
    return this;
  }

  /** A streaming method; `kind` defaults to bidirectional. */
  registerStream(
    service: string,
    method: string,
    handler: StreamHandler,
    kind: StreamKind = { streamingClient: true, streamingServer: true },
  ): this {
    this.registry.add(service, method, { kind: 'stream', handler, ...kind });
    return this;
  }

  /**
   * Serves connections accepted by `target`: a net.Server (already listening or not), or a unix socket path
   * to listen on (a stale socket file there is replaced; the new one is 0600). Resolves once listening.
   */
  async serve(target: net.Server | string): Promise<net.Server> {
    if (this.shuttingDown) throw new Error('ttrpc: server is shut down');
    const owned = typeof target === 'string';
    const server = owned ? net.createServer() : target;
    const onConnection = (socket: net.Socket): void => this.handleConnection(socket);
    server.on('connection', onConnection);
    this.listeners.push({ server, onConnection, owned });
    if (owned) {
      removeStaleSocket(target);
      // Only our own user may connect (0600), whatever the umask we inherited.
      await listenPrivate(server, target);
      server.on('error', (err) => this.logger.error('ttrpc: listener error', { err }));
    }
    return server;
  }

  /** Serves one already-connected byte stream. */
  handleConnection(socket: Duplex): void {
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    const conn = new ServerConnection(socket, {
      registry: this.registry,
      logger: this.logger,
      maxInFlight: this.maxInFlight,
      mapError: this.mapError,
      onClosed: (c) => this.connectionClosed(c),
    });
    if (!conn.closed) this.connections.add(conn);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Graceful stop: stop accepting, answer every call in flight (new requests get UNAVAILABLE), close each
   * connection once it is idle. With `timeoutMs`, connections still busy after it are closed by force.
   * Do not await this from inside a handler: it waits for that handler too.
   */
  async shutdown(opts: { timeoutMs?: number } = {}): Promise<void> {
    const closing = this.stopListening();
    if (this.connections.size > 0) {
      const done = new Promise<void>((resolve) => (this.allClosed = resolve));
      for (const conn of this.connections) conn.drain();
      let timer: NodeJS.Timeout | undefined;
      if (opts.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          for (const conn of [...this.connections]) conn.close();
        }, opts.timeoutMs);
      }
      await done;
      if (timer) clearTimeout(timer);
    }
    await closing;
  }

  /** Immediate stop: close every connection; calls in flight see their signal aborted. */
  async close(): Promise<void> {
    const closing = this.stopListening();
    for (const conn of [...this.connections]) conn.close();
    await closing;
  }

  private stopListening(): Promise<void> {
    this.shuttingDown = true;
    const listeners = this.listeners.splice(0);
    return Promise.all(
      listeners.map(({ server, onConnection, owned }) => {
        server.off('connection', onConnection);
        if (!owned) return undefined;
        return new Promise<void>((resolve) => server.close(() => resolve()));
      }),
    ).then(() => undefined);
  }

  private connectionClosed(conn: ServerConnection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0 && this.allClosed) {
      const resolve = this.allClosed;
      this.allClosed = undefined;
      resolve();
    }
  }
}

/** Removes a leftover unix socket file (never any other kind of file) so listen() can bind the path. */
function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Nothing there.
  }
}
