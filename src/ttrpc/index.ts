// Public API of the ttrpc stack. Knows nothing of containerd beyond the metadata key names.
export { Code, codeName, isKnownCode } from './codes.js';
export { TtrpcError, isTtrpcError, closedError } from './errors.js';
export { Metadata, type MetadataInit, type TraceContext } from './metadata.js';
export {
  NAMESPACE_KEY,
  TRACEPARENT_KEY,
  TRACESTATE_KEY,
  getNamespace,
  setNamespace,
  getTraceContext,
  setTraceContext,
  propagateTraceContext,
} from './metadata.js';
export type { CallContext } from './context.js';
export type { UnaryHandler, StreamHandler, StreamKind } from './registry.js';
export { TtrpcServer, type TtrpcServerOptions } from './server.js';
export { TtrpcClient, ClientStream, type CallOptions, type StreamOptions, type TtrpcClientOptions } from './client.js';
export { TtrpcStream, RECEIVE_QUEUE_HIGH_WATER } from './stream.js';
export {
  registerService,
  createClient,
  TypedStream,
  TypedClientStream,
  type ServiceImpl,
  type MethodImpl,
  type ServiceClient,
  type ClientMethod,
} from './service.js';
export { FrameType, Flags, HEADER_LENGTH, MAX_DATA_LENGTH } from './frame.js';
