// HRESULTs from computecore.dll become errors that say what failed, with the common codes by name. Values are
// from the Windows SDK (winerror.h: the HCS_E_* facility 0x037 codes, HRESULT_FROM_WIN32 of the Win32 errors HCS
// passes through) and the 0xC037xxxx forms vmcompute-era builds still return. Pure: tested on any OS.
import type { ResultError } from './schema.js';

const NAMES: Record<number, string> = {
  0x00000000: 'S_OK',
  0x80004001: 'E_NOTIMPL',
  0x80004003: 'E_POINTER',
  0x80004004: 'E_ABORT',
  0x80004005: 'E_FAIL',
  0x8000ffff: 'E_UNEXPECTED',
  0x80070002: 'ERROR_FILE_NOT_FOUND',
  0x80070003: 'ERROR_PATH_NOT_FOUND',
  0x80070005: 'E_ACCESSDENIED',
  0x80070006: 'E_HANDLE',
  0x8007000d: 'ERROR_INVALID_DATA',
  0x8007000e: 'E_OUTOFMEMORY',
  0x80070020: 'ERROR_SHARING_VIOLATION',
  0x80070032: 'ERROR_NOT_SUPPORTED',
  0x80070057: 'E_INVALIDARG',
  0x8007007f: 'ERROR_PROC_NOT_FOUND',
  0x800700b7: 'ERROR_ALREADY_EXISTS',
  0x80070490: 'ERROR_NOT_FOUND',
  0x800705b4: 'ERROR_TIMEOUT',
  0x80370100: 'HCS_E_TERMINATED_DURING_START',
  0x80370101: 'HCS_E_IMAGE_MISMATCH',
  0x80370102: 'HCS_E_HYPERV_NOT_INSTALLED',
  0x80370105: 'HCS_E_INVALID_STATE',
  0x80370106: 'HCS_E_UNEXPECTED_EXIT',
  0x80370107: 'HCS_E_TERMINATED',
  0x80370108: 'HCS_E_CONNECT_FAILED',
  0x80370109: 'HCS_E_CONNECTION_TIMEOUT',
  0x8037010a: 'HCS_E_CONNECTION_CLOSED',
  0x8037010b: 'HCS_E_UNKNOWN_MESSAGE',
  0x8037010c: 'HCS_E_UNSUPPORTED_PROTOCOL_VERSION',
  0x8037010d: 'HCS_E_INVALID_JSON',
  0x8037010e: 'HCS_E_SYSTEM_NOT_FOUND',
  0x8037010f: 'HCS_E_SYSTEM_ALREADY_EXISTS',
  0x80370110: 'HCS_E_SYSTEM_ALREADY_STOPPED',
  0x80370111: 'HCS_E_PROTOCOL_ERROR',
  0x80370112: 'HCS_E_INVALID_LAYER',
  0x80370113: 'HCS_E_WINDOWS_INSIDER_REQUIRED',
  0x80370114: 'HCS_E_SERVICE_NOT_AVAILABLE',
  0x80370115: 'HCS_E_OPERATION_NOT_STARTED',
  0x80370116: 'HCS_E_OPERATION_ALREADY_STARTED',
  0x80370117: 'HCS_E_OPERATION_PENDING',
  0x80370118: 'HCS_E_OPERATION_TIMEOUT',
  0x80370119: 'HCS_E_OPERATION_SYSTEM_CALLBACK_ALREADY_SET',
  0x8037011a: 'HCS_E_OPERATION_RESULT_ALLOCATION_FAILED',
  0x8037011b: 'HCS_E_ACCESS_DENIED',
  0x8037011c: 'HCS_E_GUEST_CRITICAL_ERROR',
  0x8037011d: 'HCS_E_PROCESS_INFO_NOT_AVAILABLE',
  0x8037011e: 'HCS_E_SERVICE_DISCONNECT',
  0x8037011f: 'HCS_E_PROCESS_ALREADY_STOPPED',
  0x80370120: 'HCS_E_SYSTEM_NOT_CONFIGURED_FOR_OPERATION',
  0x80370121: 'HCS_E_OPERATION_ALREADY_CANCELLED',
  // The same conditions as vmcompute.dll reports them (ERROR_VMCOMPUTE_*, severity bits 0xC).
  0xc0370103: 'ERROR_VMCOMPUTE_OPERATION_PENDING',
  0xc0370105: 'ERROR_VMCOMPUTE_INVALID_STATE',
  0xc0370106: 'ERROR_VMCOMPUTE_UNEXPECTED_EXIT',
  0xc037010b: 'ERROR_VMCOMPUTE_UNKNOWN_MESSAGE',
  0xc037010d: 'ERROR_VMCOMPUTE_INVALID_JSON',
  0xc037010e: 'ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND',
  0xc037010f: 'ERROR_VMCOMPUTE_SYSTEM_ALREADY_EXISTS',
  0xc0370110: 'ERROR_VMCOMPUTE_SYSTEM_ALREADY_STOPPED',
};

/** What a caller does about some codes, whatever their facility form. */
const HINTS: Record<string, string> = {
  HCS_E_HYPERV_NOT_INSTALLED:
    'enable the Hyper-V role (Install-WindowsFeature Hyper-V / Enable-WindowsOptionalFeature)',
  HCS_E_SERVICE_NOT_AVAILABLE: 'the Host Compute Service (vmcompute) is not running',
  E_ACCESSDENIED: 'the shim must run as SYSTEM or an elevated Administrator',
  HCS_E_ACCESS_DENIED: 'the shim must run as SYSTEM or an elevated Administrator',
  HCS_E_INVALID_JSON: 'HCS rejected the document (a schema field this Windows build does not know?)',
};

export const S_OK = 0;
export const E_ABORT = 0x80004004;
export const E_INVALIDARG = 0x80070057;
export const ERROR_NOT_FOUND = 0x80070490;
export const HCS_E_SYSTEM_NOT_FOUND = 0x8037010e;
export const HCS_E_SYSTEM_ALREADY_EXISTS = 0x8037010f;
export const HCS_E_SYSTEM_ALREADY_STOPPED = 0x80370110;
export const HCS_E_OPERATION_PENDING = 0x80370117;
export const HCS_E_OPERATION_TIMEOUT = 0x80370118;
export const HCS_E_OPERATION_ALREADY_CANCELLED = 0x80370121;

/** An HRESULT as an unsigned 32-bit number (koffi returns the C `long` signed). */
export function toHresult(hr: number): number {
  return hr >>> 0;
}

export function failed(hr: number): boolean {
  return hr >>> 0 >= 0x80000000;
}

export function hresultName(hr: number): string | undefined {
  return NAMES[hr >>> 0];
}

export function formatHresult(hr: number): string {
  const hex = `0x${(hr >>> 0).toString(16).padStart(8, '0')}`;
  const name = hresultName(hr);
  return name ? `${name} (${hex})` : hex;
}

/** The compute system does not exist (any of the forms HCS uses). */
export function isNotFound(hr: number): boolean {
  const u = hr >>> 0;
  return u === HCS_E_SYSTEM_NOT_FOUND || u === 0xc037010e || u === ERROR_NOT_FOUND;
}

/** Shutdown/terminate of a system that already stopped, or whose stop is in progress. */
export function isAlreadyStopping(hr: number): boolean {
  const u = hr >>> 0;
  return u === HCS_E_SYSTEM_ALREADY_STOPPED || u === 0xc0370110 || u === HCS_E_OPERATION_PENDING || u === 0xc0370103;
}

/** An HCS call that failed: the function, the HRESULT (by name when known), HCS's own error document. */
export class HcsError extends Error {
  override readonly name = 'HcsError';
  readonly hresult: number;
  readonly result: ResultError | undefined;

  constructor(
    readonly operation: string,
    hresult: number,
    resultDocument?: string,
    readonly systemId?: string,
  ) {
    const hr = hresult >>> 0;
    const result = parseResultError(resultDocument);
    const code = hresultName(hr);
    const parts = [`${operation}${systemId ? ` ${systemId}` : ''}: ${formatHresult(hr)}`];
    if (result?.ErrorMessage) parts.push(result.ErrorMessage);
    for (const ev of result?.ErrorEvents ?? [])
      if (ev.Message && ev.Message !== result?.ErrorMessage) parts.push(ev.Message);
    const hint = code ? HINTS[code] : undefined;
    if (hint) parts.push(`(${hint})`);
    super(parts.join(': '));
    this.hresult = hr;
    this.result = result;
  }

  get code(): string | undefined {
    return hresultName(this.hresult);
  }
}

/** HCS result documents are JSON; on failure they may hold a ResultError. Anything else is ignored. */
export function parseResultError(doc: string | undefined): ResultError | undefined {
  if (!doc) return undefined;
  try {
    const v = JSON.parse(doc) as unknown;
    if (typeof v !== 'object' || v === null) return undefined;
    const r = v as ResultError;
    if (r.Error === undefined && r.ErrorMessage === undefined && r.ErrorEvents === undefined) return undefined;
    return {
      Error: typeof r.Error === 'number' ? r.Error : undefined,
      ErrorMessage: typeof r.ErrorMessage === 'string' ? r.ErrorMessage.slice(0, 4096) : undefined,
      ErrorEvents: Array.isArray(r.ErrorEvents) ? r.ErrorEvents.slice(0, 16) : undefined,
    };
  } catch {
    return undefined;
  }
}
