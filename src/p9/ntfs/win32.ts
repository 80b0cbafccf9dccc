// The two NTFS facts Node's fs cannot tell, through koffi on Windows only (nothing is loaded elsewhere): a
// directory's case-sensitivity flag (NtQueryInformationFile / NtSetInformationFile, FileCaseSensitiveInformation)
// and whether a volume has named streams (GetVolumeInformationByHandleW, FILE_NAMED_STREAMS). Never run: this
// project's CI has no Windows host (docs/windows.md).

import koffi from 'koffi';

const FILE_READ_ATTRIBUTES = 0x80;
const FILE_WRITE_ATTRIBUTES = 0x100;
const FILE_SHARE_ALL = 0x1 | 0x2 | 0x4;
const OPEN_EXISTING = 3;
/** Opens a directory, and the reparse point itself rather than its target. */
const FILE_FLAG_BACKUP_SEMANTICS = 0x02000000;
const FILE_FLAG_OPEN_REPARSE_POINT = 0x00200000;
const INVALID_HANDLE_VALUE = -1;
/** FILE_INFORMATION_CLASS FileCaseSensitiveInformation (Windows 10 1803+). */
const FILE_CASE_SENSITIVE_INFORMATION = 71;
const FILE_CS_FLAG_CASE_SENSITIVE_DIR = 0x1;
const FILE_NAMED_STREAMS = 0x00040000;

interface Win32 {
  createFile: (
    name: string,
    access: number,
    share: number,
    sa: null,
    disp: number,
    flags: number,
    tmpl: null,
  ) => number | bigint;
  closeHandle: (h: number | bigint) => boolean;
  queryInfo: (h: number | bigint, iosb: Buffer, info: Buffer, len: number, cls: number) => number;
  setInfo: (h: number | bigint, iosb: Buffer, info: Buffer, len: number, cls: number) => number;
  volumeInfo: (
    h: number | bigint,
    vn: null,
    vns: number,
    serial: null,
    maxc: null,
    flags: Buffer,
    fsn: null,
    fsns: number,
  ) => boolean;
}

let bound: Win32 | undefined;

function win32(): Win32 {
  if (process.platform !== 'win32') throw new Error('win32 calls are only available on Windows');
  if (bound !== undefined) return bound;
  const k32 = koffi.load('kernel32.dll');
  const nt = koffi.load('ntdll.dll');
  bound = {
    createFile: k32.func(
      'intptr_t __stdcall CreateFileW(str16 name, uint32_t access, uint32_t share, void *sa, uint32_t disposition, uint32_t flags, void *tmpl)',
    ),
    closeHandle: k32.func('bool __stdcall CloseHandle(intptr_t h)'),
    queryInfo: nt.func(
      'int32_t __stdcall NtQueryInformationFile(intptr_t h, void *iosb, void *info, uint32_t len, int cls)',
    ),
    setInfo: nt.func(
      'int32_t __stdcall NtSetInformationFile(intptr_t h, void *iosb, void *info, uint32_t len, int cls)',
    ),
    volumeInfo: k32.func(
      'bool __stdcall GetVolumeInformationByHandleW(intptr_t h, void *vn, uint32_t vns, void *serial, void *maxc, void *flags, void *fsn, uint32_t fsns)',
    ),
  } as unknown as Win32;
  return bound;
}

function withHandle<T>(path: string, access: number, fn: (h: number | bigint) => T): T {
  const w = win32();
  const h = w.createFile(
    path,
    access,
    FILE_SHARE_ALL,
    null,
    OPEN_EXISTING,
    FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT,
    null,
  );
  if (Number(h) === INVALID_HANDLE_VALUE) {
    const err = new Error(`CreateFileW ${path} failed`) as Error & { code: string };
    err.code = 'EACCES';
    throw err;
  }
  try {
    return fn(h);
  } finally {
    w.closeHandle(h);
  }
}

/** FILE_CS_FLAG_CASE_SENSITIVE_DIR of a directory; false when it cannot be read (older Windows). */
export function isCaseSensitiveDir(path: string): boolean {
  try {
    return withHandle(path, FILE_READ_ATTRIBUTES, (h) => {
      const iosb = Buffer.alloc(16);
      const info = Buffer.alloc(4);
      const status = win32().queryInfo(h, iosb, info, 4, FILE_CASE_SENSITIVE_INFORMATION);
      return status === 0 && (info.readUInt32LE(0) & FILE_CS_FLAG_CASE_SENSITIVE_DIR) !== 0;
    });
  } catch {
    return false;
  }
}

/**
 * Sets the flag on a directory (it must be empty; Windows 10 1803+, some builds only with the Windows Subsystem
 * for Linux feature present); false when Windows refuses.
 */
export function setCaseSensitiveDir(path: string): boolean {
  try {
    return withHandle(path, FILE_WRITE_ATTRIBUTES, (h) => {
      const iosb = Buffer.alloc(16);
      const info = Buffer.alloc(4);
      info.writeUInt32LE(FILE_CS_FLAG_CASE_SENSITIVE_DIR, 0);
      return win32().setInfo(h, iosb, info, 4, FILE_CASE_SENSITIVE_INFORMATION) === 0;
    });
  } catch {
    return false;
  }
}

/** Whether the volume holding `path` has named streams (NTFS and ReFS 1.2+ do; FAT and exFAT do not). */
export function volumeHasNamedStreams(path: string): boolean {
  return withHandle(path, FILE_READ_ATTRIBUTES, (h) => {
    const flags = Buffer.alloc(4);
    if (!win32().volumeInfo(h, null, 0, null, null, flags, null, 0)) return false;
    return (flags.readUInt32LE(0) & FILE_NAMED_STREAMS) !== 0;
  });
}
