// Typed bindings over protoc-gen-es service descriptors: serve an implementation object, or get a client
// object whose methods take and return messages. The wire names are the proto names
// (`containerd.task.v2.Task` / `Create`); the object keys are protoc-gen-es local names (`create`).
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import type { CallOptions, ClientStream, TtrpcClient } from './client.js';
import { Code } from './codes.js';
import type { CallContext } from './context.js';
import { TtrpcError } from './errors.js';
import type { TtrpcServer } from './server.js';
import type { TtrpcStream } from './stream.js';

/** A stream whose messages are decoded/encoded with the method's schemas. */
export class TypedStream<In extends DescMessage, Out extends DescMessage> implements AsyncIterable<MessageShape<In>> {
  constructor(
    readonly raw: TtrpcStream,
    protected readonly input: In,
    protected readonly output: Out,
  ) {}

  get signal(): AbortSignal {
    return this.raw.signal;
  }

  async recv(): Promise<MessageShape<In> | undefined> {
    const bytes = await this.raw.recv();
    return bytes === undefined ? undefined : decode(this.input, bytes);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<MessageShape<In>> {
    for await (const bytes of this.raw) yield decode(this.input, bytes);
  }

  send(msg: MessageInitShape<Out> | MessageShape<Out>): Promise<void> {
    return this.raw.send(encode(this.output, msg));
  }

  closeSend(): Promise<void> {
    return this.raw.closeSend();
  }
}

type In<M> = M extends { input: infer I extends DescMessage } ? I : never;
type Out<M> = M extends { output: infer O extends DescMessage } ? O : never;
type Reply<M> = Promise<MessageInitShape<Out<M>> | MessageShape<Out<M>>>;

/** The server-side shape of one method, by kind. */
export type MethodImpl<M> = M extends { methodKind: 'unary' }
  ? (req: MessageShape<In<M>>, ctx: CallContext) => Reply<M>
  : M extends { methodKind: 'server_streaming' }
    ? (req: MessageShape<In<M>>, out: TypedStream<In<M>, Out<M>>, ctx: CallContext) => Promise<void>
    : M extends { methodKind: 'client_streaming' }
      ? (requests: TypedStream<In<M>, Out<M>>, ctx: CallContext) => Reply<M>
      : (stream: TypedStream<In<M>, Out<M>>, ctx: CallContext) => Promise<void>;

/** An implementation of a service; methods left out answer UNIMPLEMENTED (`method X`). */
export type ServiceImpl<S extends GenServiceMethods> = { [K in keyof S]?: MethodImpl<S[K]> };

/** The client-side shape of one method, by kind. */
export type ClientMethod<M> = M extends { methodKind: 'unary' }
  ? (req: MessageInitShape<In<M>>, opts?: CallOptions) => Promise<MessageShape<Out<M>>>
  : M extends { methodKind: 'server_streaming' }
    ? (req: MessageInitShape<In<M>>, opts?: CallOptions) => TypedClientStream<Out<M>, In<M>>
    : (opts?: CallOptions) => TypedClientStream<Out<M>, In<M>>;

export type ServiceClient<S extends GenServiceMethods> = { [K in keyof S]: ClientMethod<S[K]> };

/** Client side of a typed stream: receive `Recv` messages, send `Send` messages, plus the final response. */
export class TypedClientStream<Recv extends DescMessage, Send extends DescMessage> extends TypedStream<Recv, Send> {
  constructor(
    readonly clientStream: ClientStream,
    recvSchema: Recv,
    sendSchema: Send,
    /** Server- and bidi-streaming methods end with a stream, not a final message. */
    private readonly serverStreams: boolean,
  ) {
    super(clientStream, recvSchema, sendSchema);
  }

  /** The call's final message for client-streaming methods; undefined for methods whose server streams. */
  async response(): Promise<MessageShape<Recv> | undefined> {
    const bytes = await this.clientStream.response;
    return this.serverStreams ? undefined : decode(this.input, bytes);
  }
}

/** Registers every implemented method of `desc` on the server. */
export function registerService<S extends GenServiceMethods>(
  server: TtrpcServer,
  desc: GenService<S>,
  impl: ServiceImpl<S>,
): void {
  for (const method of desc.methods) {
    const fn = (impl as Record<string, unknown>)[method.localName];
    if (fn === undefined) continue;
    if (typeof fn !== 'function') throw new Error(`ttrpc: ${desc.typeName}.${method.name} is not a function`);
    bindMethod(server, desc.typeName, method, fn.bind(impl) as (...args: unknown[]) => Promise<unknown>);
  }
}

function bindMethod(
  server: TtrpcServer,
  service: string,
  method: DescMethod,
  fn: (...args: unknown[]) => Promise<unknown>,
): void {
  const { input, output } = method;
  switch (method.methodKind) {
    case 'unary':
      server.register(service, method.name, async (payload, ctx) =>
        encode(output, (await fn(decodeRequest(input, payload), ctx)) as MessageInitShape<DescMessage>),
      );
      return;
    case 'server_streaming':
      server.registerStream(
        service,
        method.name,
        async (stream, ctx) => {
          const first = await stream.recv();
          await fn(decodeRequest(input, first ?? new Uint8Array(0)), new TypedStream(stream, input, output), ctx);
        },
        { streamingClient: false, streamingServer: true },
      );
      return;
    case 'client_streaming':
      server.registerStream(
        service,
        method.name,
        async (stream, ctx) =>
          encode(output, (await fn(new TypedStream(stream, input, output), ctx)) as MessageInitShape<DescMessage>),
        { streamingClient: true, streamingServer: false },
      );
      return;
    case 'bidi_streaming':
      server.registerStream(
        service,
        method.name,
        async (stream, ctx) => {
          await fn(new TypedStream(stream, input, output), ctx);
        },
        { streamingClient: true, streamingServer: true },
      );
      return;
  }
}

/** A client object for `desc` over `client`: `await tasks.create({ id })`. */
export function createClient<S extends GenServiceMethods>(desc: GenService<S>, client: TtrpcClient): ServiceClient<S> {
  const out: Record<string, unknown> = {};
  for (const method of desc.methods) {
    const { input, output, name } = method;
    const service = desc.typeName;
    switch (method.methodKind) {
      case 'unary':
        out[method.localName] = async (req: MessageInitShape<DescMessage>, opts?: CallOptions) =>
          decode(output, await client.call(service, name, encode(input, req), opts));
        break;
      case 'server_streaming':
        out[method.localName] = (req: MessageInitShape<DescMessage>, opts?: CallOptions) => {
          const stream = client.stream(service, name, { ...opts, streamingClient: false, request: encode(input, req) });
          return new TypedClientStream(stream, output, input, true);
        };
        break;
      default: {
        const serverStreams = method.methodKind === 'bidi_streaming';
        out[method.localName] = (opts?: CallOptions) =>
          new TypedClientStream(
            client.stream(service, name, { ...opts, streamingClient: true }),
            output,
            input,
            serverStreams,
          );
      }
    }
  }
  return out as ServiceClient<S>;
}

function encode<D extends DescMessage>(schema: D, msg: MessageInitShape<D> | MessageShape<D>): Uint8Array {
  return toBinary(schema, create(schema, msg as MessageInitShape<D>));
}

function decode<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  return fromBinary(schema, bytes);
}

/** Request payloads are untrusted: a parse failure is the caller's fault (INVALID_ARGUMENT), not ours. */
function decodeRequest<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  try {
    return fromBinary(schema, bytes);
  } catch (err) {
    throw new TtrpcError(
      Code.INVALID_ARGUMENT,
      `ttrpc: error unmarshalling payload: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
}
