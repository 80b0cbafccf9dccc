// What a server handler learns about its call. Built lazily: metadata is parsed and the AbortController is
// created only when the handler asks, because most calls never look (and both cost on every call).
import type { KeyValuePair } from './envelope.js';
import { Metadata, NAMESPACE_KEY } from './metadata.js';

export interface CallContext {
  readonly service: string;
  readonly method: string;
  readonly streamId: number;
  readonly metadata: Metadata;
  /** The containerd namespace (`containerd-namespace-ttrpc`), when the caller sent one. */
  readonly namespace: string | undefined;
  /** Deadline in epoch milliseconds, from the request's timeout_nano. */
  readonly deadline: number | undefined;
  /** Aborted when the deadline passes or the connection is lost; the reason is a TtrpcError. */
  readonly signal: AbortSignal;
}

export class ServerCallContext implements CallContext {
  private controller: AbortController | undefined;
  private abortReason: Error | undefined;
  private md: Metadata | undefined;

  constructor(
    readonly service: string,
    readonly method: string,
    readonly streamId: number,
    private readonly kvs: readonly KeyValuePair[],
    readonly deadline: number | undefined,
  ) {}

  get metadata(): Metadata {
    return (this.md ??= new Metadata(this.kvs));
  }

  get namespace(): string | undefined {
    if (this.md) return this.md.getFirst(NAMESPACE_KEY);
    for (const kv of this.kvs) if (kv.key.toLowerCase() === NAMESPACE_KEY) return kv.value;
    return undefined;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortReason) this.controller.abort(this.abortReason);
    }
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.abortReason !== undefined;
  }

  abort(reason: Error): void {
    if (this.abortReason) return;
    this.abortReason = reason;
    this.controller?.abort(reason);
  }
}
