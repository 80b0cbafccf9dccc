// Request metadata: ttrpc's repeated KeyValue, seen as a multimap with lower-cased keys (as Go's MD.Set does),
// plus the well-known keys containerd and OpenTelemetry put there.
import type { KeyValuePair } from './envelope.js';

/** containerd's namespace header on ttrpc (namespaces.TTRPCHeader). */
export const NAMESPACE_KEY = 'containerd-namespace-ttrpc';
/** W3C trace context keys, as otelttrpc injects them (containerd 2.x). */
export const TRACEPARENT_KEY = 'traceparent';
export const TRACESTATE_KEY = 'tracestate';

export type MetadataInit = Metadata | Record<string, string | readonly string[]> | Iterable<KeyValuePair>;

export class Metadata {
  private readonly map = new Map<string, string[]>();

  constructor(init?: MetadataInit) {
    if (init === undefined) return;
    if (init instanceof Metadata) {
      for (const [k, v] of init.map) this.map.set(k, [...v]);
    } else if (Symbol.iterator in init) {
      for (const kv of init as Iterable<KeyValuePair>) this.append(kv.key, kv.value);
    } else {
      for (const [k, v] of Object.entries(init as Record<string, string | readonly string[]>)) {
        if (typeof v === 'string') this.append(k, v);
        else for (const one of v) this.append(k, one);
      }
    }
  }

  /** All values of a key, in wire order (empty when absent). */
  get(key: string): readonly string[] {
    return this.map.get(key.toLowerCase()) ?? [];
  }

  /** The first value of a key (what Go's GetMetadataValue returns). */
  getFirst(key: string): string | undefined {
    return this.map.get(key.toLowerCase())?.[0];
  }

  has(key: string): boolean {
    return this.map.has(key.toLowerCase());
  }

  /** Replaces every value of the key. */
  set(key: string, ...values: string[]): this {
    if (values.length === 0) this.map.delete(key.toLowerCase());
    else this.map.set(key.toLowerCase(), values);
    return this;
  }

  append(key: string, value: string): this {
    const k = key.toLowerCase();
    const existing = this.map.get(k);
    if (existing) existing.push(value);
    else this.map.set(k, [value]);
    return this;
  }

  delete(key: string): boolean {
    return this.map.delete(key.toLowerCase());
  }

  get size(): number {
    return this.map.size;
  }

  entries(): IterableIterator<[string, string[]]> {
    return this.map.entries();
  }

  clone(): Metadata {
    return new Metadata(this);
  }

  /** The wire form: one KeyValue per value. */
  toKeyValues(): KeyValuePair[] {
    const out: KeyValuePair[] = [];
    for (const [key, values] of this.map) for (const value of values) out.push({ key, value });
    return out;
  }

  toJSON(): Record<string, string[]> {
    return Object.fromEntries(this.map);
  }
}

/** The containerd namespace a call runs in, if the caller named one. */
export function getNamespace(md: Metadata): string | undefined {
  return md.getFirst(NAMESPACE_KEY);
}

export function setNamespace(md: Metadata, namespace: string): Metadata {
  return md.set(NAMESPACE_KEY, namespace);
}

export interface TraceContext {
  traceparent?: string;
  tracestate?: string;
}

/** The caller's W3C trace context, for continuing its trace in spans and outgoing calls. */
export function getTraceContext(md: Metadata): TraceContext {
  const ctx: TraceContext = {};
  const parent = md.getFirst(TRACEPARENT_KEY);
  if (parent !== undefined) ctx.traceparent = parent;
  const state = md.get(TRACESTATE_KEY);
  // W3C allows tracestate split across several header lines; they join with commas.
  if (state.length > 0) ctx.tracestate = state.join(',');
  return ctx;
}

export function setTraceContext(md: Metadata, ctx: TraceContext): Metadata {
  if (ctx.traceparent !== undefined) md.set(TRACEPARENT_KEY, ctx.traceparent);
  if (ctx.tracestate !== undefined && ctx.tracestate !== '') md.set(TRACESTATE_KEY, ctx.tracestate);
  return md;
}

/** Copies the trace context keys from an incoming call's metadata into an outgoing call's. */
export function propagateTraceContext(from: Metadata, to: Metadata): Metadata {
  return setTraceContext(to, getTraceContext(from));
}
