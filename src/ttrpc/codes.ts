// gRPC status codes (google.rpc.Code). ttrpc carries them in Response.status.code, and containerd maps its
// errdefs errors onto them, so the numbers are part of the wire contract.

export enum Code {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** True for the 17 codes gRPC defines; anything else from the wire is treated as UNKNOWN. */
export function isKnownCode(code: number): code is Code {
  return Number.isInteger(code) && code >= Code.OK && code <= Code.UNAUTHENTICATED;
}

/** Name of a code as gRPC prints it (e.g. "NOT_FOUND"), or "CODE(n)" for unknown values. */
export function codeName(code: number): string {
  return isKnownCode(code) ? Code[code] : `CODE(${code})`;
}
