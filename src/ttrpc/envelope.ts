// Hand-written protobuf codec for the two ttrpc envelopes (ttrpc.Request, ttrpc.Response; field numbers from
// proto/ttrpc/ttrpc.proto). They wrap every call, so they are encoded straight into the outgoing frame buffer and
// decoded into views of the incoming frame, without the reflection cost of a generic codec. The user payload is
// written as the last field: protobuf parsers accept fields in any order, and this lets a large payload go to
// the socket as its own buffer (writev) instead of being copied into the envelope.
// Input is untrusted: every length is checked against the bytes present; malformed input throws EnvelopeError.
import { FrameType, HEADER_LENGTH, writeFrameHeader } from './frame.js';

export class EnvelopeError extends Error {
  override readonly name = 'EnvelopeError';
}

export interface KeyValuePair {
  key: string;
  value: string;
}

export interface RequestEnvelope {
  service: string;
  method: string;
  payload: Uint8Array;
  /** Whether field 3 was on the wire (Go distinguishes a nil payload for streaming requests). */
  hasPayload: boolean;
  /** Nanoseconds until the caller's deadline; 0 = none, negative = already expired. */
  timeoutNano: number;
  metadata: KeyValuePair[];
}

export interface ResponseEnvelope {
  /** Encoded google.rpc.Status, decoded lazily (only on the error path). */
  status: Uint8Array | undefined;
  payload: Uint8Array;
}

/** Payloads at least this large are written as a separate buffer rather than copied into the frame. */
export const SEPARATE_PAYLOAD_THRESHOLD = 16 * 1024;

/** Frame bytes to write: the head (header + envelope fields), then optionally the payload bytes uncopied. */
export interface EncodedFrame {
  head: Buffer;
  tail: Uint8Array | undefined;
}

const EMPTY = new Uint8Array(0);

// ---- encoding ----

function varintSize(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v & 0x7f) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[pos++] = v;
  return pos;
}

function writeString(buf: Buffer, pos: number, tag: number, s: string, byteLen: number): number {
  buf[pos++] = tag;
  pos = writeVarint(buf, pos, byteLen);
  return pos + buf.write(s, pos, byteLen, 'utf8');
}

function lengthDelimitedSize(len: number): number {
  return 1 + varintSize(len) + len;
}

function assemble(
  streamId: number,
  type: FrameType,
  flags: number,
  fieldsLength: number,
  payloadTag: number,
  payload: Uint8Array,
  writeFields: (buf: Buffer, pos: number) => number,
): EncodedFrame {
  const payloadPrefix = payload.length > 0 ? 1 + varintSize(payload.length) : 0;
  const total = fieldsLength + payloadPrefix + payload.length;
  const separate = payload.length >= SEPARATE_PAYLOAD_THRESHOLD;
  const head = Buffer.allocUnsafe(HEADER_LENGTH + total - (separate ? payload.length : 0));
  writeFrameHeader(head, 0, total, streamId, type, flags);
  let pos = writeFields(head, HEADER_LENGTH);
  if (payload.length > 0) {
    head[pos++] = payloadTag;
    pos = writeVarint(head, pos, payload.length);
    if (!separate) head.set(payload, pos);
  }
  return { head, tail: separate ? payload : undefined };
}

export interface RequestInit {
  service: string;
  method: string;
  payload: Uint8Array;
  timeoutNano?: number;
  metadata?: readonly KeyValuePair[];
}

/**
 * Encoded `service` and `method` fields, per name pair: a client calls a handful of methods over and over,
 * and encoding the names was a visible share of the per-call cost. Bounded so that callers inventing names
 * cannot grow it without limit.
 */
const routeCache = new Map<string, Buffer>();
const ROUTE_CACHE_MAX = 512;

function encodedRoute(service: string, method: string): Buffer {
  const key = service + '\0' + method;
  let route = routeCache.get(key);
  if (route) return route;
  const serviceLen = Buffer.byteLength(service, 'utf8');
  const methodLen = Buffer.byteLength(method, 'utf8');
  route = Buffer.alloc(
    (serviceLen > 0 ? lengthDelimitedSize(serviceLen) : 0) + (methodLen > 0 ? lengthDelimitedSize(methodLen) : 0),
  );
  let pos = 0;
  if (serviceLen > 0) pos = writeString(route, pos, 0x0a, service, serviceLen);
  if (methodLen > 0) writeString(route, pos, 0x12, method, methodLen);
  if (routeCache.size >= ROUTE_CACHE_MAX) routeCache.clear();
  routeCache.set(key, route);
  return route;
}

export function encodeRequestFrame(streamId: number, flags: number, req: RequestInit): EncodedFrame {
  const route = encodedRoute(req.service, req.method);
  const timeout = req.timeoutNano !== undefined && req.timeoutNano > 0 ? Math.floor(req.timeoutNano) : 0;
  const md = req.metadata ?? [];
  let fields = route.length;
  if (timeout > 0) fields += 1 + varintSize(timeout);
  const kvLens: number[] = [];
  for (const kv of md) {
    const k = Buffer.byteLength(kv.key, 'utf8');
    const v = Buffer.byteLength(kv.value, 'utf8');
    const inner = (k > 0 ? lengthDelimitedSize(k) : 0) + (v > 0 ? lengthDelimitedSize(v) : 0);
    kvLens.push(k, v, inner);
    fields += lengthDelimitedSize(inner);
  }
  return assemble(streamId, FrameType.REQUEST, flags, fields, 0x1a, req.payload, (buf, pos) => {
    pos += route.copy(buf, pos);
    if (timeout > 0) {
      buf[pos++] = 0x20;
      pos = writeVarint(buf, pos, timeout);
    }
    for (let i = 0; i < md.length; i++) {
      const kv = md[i]!;
      const [k, v, inner] = [kvLens[3 * i]!, kvLens[3 * i + 1]!, kvLens[3 * i + 2]!];
      buf[pos++] = 0x2a;
      pos = writeVarint(buf, pos, inner);
      if (k > 0) pos = writeString(buf, pos, 0x0a, kv.key, k);
      if (v > 0) pos = writeString(buf, pos, 0x12, kv.value, v);
    }
    return pos;
  });
}

/** A Response frame; `status` is an encoded google.rpc.Status, omitted on success (Go accepts that). */
export function encodeResponseFrame(
  streamId: number,
  status: Uint8Array | undefined,
  payload: Uint8Array,
): EncodedFrame {
  const fields = status !== undefined ? lengthDelimitedSize(status.length) : 0;
  return assemble(streamId, FrameType.RESPONSE, 0, fields, 0x12, payload, (buf, pos) => {
    if (status !== undefined) {
      buf[pos++] = 0x0a;
      pos = writeVarint(buf, pos, status.length);
      buf.set(status, pos);
      pos += status.length;
    }
    return pos;
  });
}

// ---- decoding ----

class Reader {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    readonly end: number = buf.length,
  ) {}

  /** A varint as a JS number; 64-bit values lose precision above 2^53, which no ttrpc field needs. */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new EnvelopeError('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw new EnvelopeError('varint longer than 10 bytes');
  }

  /** An int64 varint (two's complement on the wire) as a number. */
  int64(): number {
    const start = this.pos;
    const v = this.varint();
    if (v < 2 ** 63) return v;
    // Negative: a 10-byte varint whose float value lost the low bits; redo it exactly (rare path).
    let big = 0n;
    for (let i = this.pos - 1; i >= start; i--) big = (big << 7n) | BigInt(this.buf[i]! & 0x7f);
    return Number(BigInt.asIntN(64, big));
  }

  /** Bounds of a length-delimited field's contents. */
  delimited(): [number, number] {
    const len = this.varint();
    if (len > this.end - this.pos) throw new EnvelopeError('length-delimited field overruns message');
    const start = this.pos;
    this.pos += len;
    return [start, this.pos];
  }

  tag(): [field: number, wireType: number] {
    const t = this.varint();
    const field = Math.floor(t / 8);
    if (field === 0 || field > 0x1fffffff) throw new EnvelopeError(`invalid field number ${field}`);
    return [field, t & 7];
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0:
        this.varint();
        return;
      case 1:
        this.advance(8);
        return;
      case 2:
        this.delimited();
        return;
      case 5:
        this.advance(4);
        return;
      default:
        // Groups (3, 4) are proto2 only and never appear in these messages; 6 and 7 do not exist.
        throw new EnvelopeError(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw new EnvelopeError('truncated fixed-width field');
    this.pos += n;
  }
}

function readKeyValue(buf: Buffer, start: number, end: number): KeyValuePair {
  const r = new Reader(buf, end);
  r.pos = start;
  let key = '';
  let value = '';
  while (r.pos < end) {
    const [field, wt] = r.tag();
    if ((field === 1 || field === 2) && wt === 2) {
      const [s, e] = r.delimited();
      const str = buf.toString('utf8', s, e);
      if (field === 1) key = str;
      else value = str;
    } else {
      r.skip(wt);
    }
  }
  return { key, value };
}

export function decodeRequest(buf: Buffer): RequestEnvelope {
  const r = new Reader(buf);
  const req: RequestEnvelope = {
    service: '',
    method: '',
    payload: EMPTY,
    hasPayload: false,
    timeoutNano: 0,
    metadata: [],
  };
  while (r.pos < r.end) {
    const [field, wt] = r.tag();
    // A known field with an unexpected wire type is skipped like an unknown one (as Go's parser does).
    if (wt === 2 && field >= 1 && field <= 5 && field !== 4) {
      const [s, e] = r.delimited();
      switch (field) {
        case 1:
          req.service = buf.toString('utf8', s, e);
          break;
        case 2:
          req.method = buf.toString('utf8', s, e);
          break;
        case 3:
          req.payload = buf.subarray(s, e);
          req.hasPayload = true;
          break;
        case 5:
          req.metadata.push(readKeyValue(buf, s, e));
          break;
      }
    } else if (field === 4 && wt === 0) {
      req.timeoutNano = r.int64();
    } else {
      r.skip(wt);
    }
  }
  return req;
}

export function decodeResponse(buf: Buffer): ResponseEnvelope {
  const r = new Reader(buf);
  const resp: ResponseEnvelope = { status: undefined, payload: EMPTY };
  while (r.pos < r.end) {
    const [field, wt] = r.tag();
    if ((field === 1 || field === 2) && wt === 2) {
      const [s, e] = r.delimited();
      if (field === 1) resp.status = buf.subarray(s, e);
      else resp.payload = buf.subarray(s, e);
    } else {
      r.skip(wt);
    }
  }
  return resp;
}
