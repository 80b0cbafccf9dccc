// Domain errors of the Task service and the ONE place where they become gRPC codes (at the ttrpc boundary).
// containerd maps the codes back with errdefs.FromGRPC, so the code matters more than the message.
import { Code, TtrpcError } from '../ttrpc/index.js';
import { SandboxUnavailableError } from '../sandbox/sandbox.js';

export type TaskErrorKind =
  | 'NotFound'
  | 'AlreadyExists'
  | 'FailedPrecondition'
  | 'InvalidArgument'
  | 'Unimplemented'
  | 'Unavailable'
  | 'DeadlineExceeded'
  | 'Internal';

export class TaskError extends Error {
  override readonly name = 'TaskError';
  constructor(
    readonly kind: TaskErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export const notFound = (m: string): TaskError => new TaskError('NotFound', m);
export const alreadyExists = (m: string): TaskError => new TaskError('AlreadyExists', m);
export const failedPrecondition = (m: string): TaskError => new TaskError('FailedPrecondition', m);
export const invalidArgument = (m: string): TaskError => new TaskError('InvalidArgument', m);
export const unimplemented = (m: string): TaskError => new TaskError('Unimplemented', m);
export const unavailable = (m: string): TaskError => new TaskError('Unavailable', m);

const kindToCode: Record<TaskErrorKind, Code> = {
  NotFound: Code.NOT_FOUND,
  AlreadyExists: Code.ALREADY_EXISTS,
  FailedPrecondition: Code.FAILED_PRECONDITION,
  InvalidArgument: Code.INVALID_ARGUMENT,
  Unimplemented: Code.UNIMPLEMENTED,
  Unavailable: Code.UNAVAILABLE,
  DeadlineExceeded: Code.DEADLINE_EXCEEDED,
  Internal: Code.INTERNAL,
};

/** Every error leaving a Task RPC goes through here. Agent errors (TtrpcError) keep their code. */
export function toTtrpcError(err: unknown): TtrpcError {
  if (err instanceof TtrpcError) return err;
  if (err instanceof TaskError) return new TtrpcError(kindToCode[err.kind], err.message);
  if (err instanceof SandboxUnavailableError) return new TtrpcError(Code.FAILED_PRECONDITION, err.message);
  return new TtrpcError(Code.UNKNOWN, err instanceof Error ? err.message : String(err));
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,75}$/;

/** containerd identifiers: alphanumerics, '.', '_', '-', at most 76 characters, starting alphanumeric. */
export function validateId(kind: string, id: string): void {
  if (!ID_RE.test(id)) throw invalidArgument(`invalid ${kind} ${JSON.stringify(id)}`);
}
