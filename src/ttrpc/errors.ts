// The error type every ttrpc failure surfaces as: a gRPC code plus message, convertible to and from the
// google.rpc.Status carried in Response.status. A remote error arrives with the same code and message
// the peer sent, so callers can switch on `err.code` regardless of which side produced it.
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Any } from '@bufbuild/protobuf/wkt';
import { StatusSchema, type Status } from '../gen/google/rpc/status_pb.js';
import { Code, codeName, isKnownCode } from './codes.js';

export class TtrpcError extends Error {
  override readonly name = 'TtrpcError';

  constructor(
    readonly code: Code,
    message: string,
    /** google.rpc.Status details, passed through untouched. */
    readonly details: Any[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  toStatus(): Status {
    return create(StatusSchema, { code: this.code, message: this.message, details: this.details });
  }

  /** A Status from the wire. A code outside 0..16 becomes UNKNOWN (gRPC does the same). */
  static fromStatus(status: Pick<Status, 'code' | 'message'> & { details?: Any[] }): TtrpcError {
    const code = isKnownCode(status.code) ? status.code : Code.UNKNOWN;
    return new TtrpcError(code, status.message, status.details ?? []);
  }

  /** Any thrown value as a TtrpcError: TtrpcErrors keep their code, other errors become UNKNOWN. */
  static from(err: unknown): TtrpcError {
    if (err instanceof TtrpcError) return err;
    if (err instanceof Error) return new TtrpcError(Code.UNKNOWN, err.message, [], { cause: err });
    return new TtrpcError(Code.UNKNOWN, String(err));
  }

  override toString(): string {
    return `TtrpcError: ${codeName(this.code)}: ${this.message}`;
  }
}

export function isTtrpcError(err: unknown, code?: Code): err is TtrpcError {
  return err instanceof TtrpcError && (code === undefined || err.code === code);
}

/** The error pending and later calls get once a connection is gone (Go ttrpc's ErrClosed). */
export function closedError(cause?: unknown): TtrpcError {
  return new TtrpcError(Code.UNAVAILABLE, 'ttrpc: closed', [], cause === undefined ? undefined : { cause });
}

export function encodeStatus(status: Status): Uint8Array {
  return toBinary(StatusSchema, status);
}

/** Decodes Response.status bytes; throws on malformed bytes (the caller maps that to a protocol error). */
export function decodeStatus(bytes: Uint8Array): Status {
  return fromBinary(StatusSchema, bytes);
}
