// The server's method table: service name -> method name -> handler, as Go ttrpc's serviceSet.
import type { CallContext } from './context.js';
import type { TtrpcStream } from './stream.js';

/** A unary method: request payload in, response payload out. Throw a TtrpcError to choose the status code. */
export type UnaryHandler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

/**
 * A streaming method. The returned bytes end the call: the Response payload for client-streaming methods, or
 * a last message for server-streaming ones (Go ttrpc behaves the same way).
 */
export type StreamHandler = (stream: TtrpcStream, ctx: CallContext) => Promise<Uint8Array | void>;

export interface StreamKind {
  /** The client sends a stream of messages (Request with remote-open, then Data frames). */
  streamingClient: boolean;
  /** The server sends a stream of messages (Data frames, ending with Data remote-closed). */
  streamingServer: boolean;
}

export type MethodEntry =
  { kind: 'unary'; handler: UnaryHandler } | ({ kind: 'stream'; handler: StreamHandler } & StreamKind);

export class ServiceRegistry {
  private readonly services = new Map<string, Map<string, MethodEntry>>();

  add(service: string, method: string, entry: MethodEntry): void {
    if (!service || !method) throw new Error('ttrpc: service and method names must be non-empty');
    let methods = this.services.get(service);
    if (!methods) this.services.set(service, (methods = new Map()));
    if (methods.has(method)) throw new Error(`ttrpc: duplicate method ${service}/${method}`);
    methods.set(method, entry);
  }

  service(name: string): Map<string, MethodEntry> | undefined {
    return this.services.get(name);
  }
}
