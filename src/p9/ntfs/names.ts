// Which 9P names may reach NTFS. A name from the guest is one Linux path component: anything but '/' and NUL.
// Win32 gives many of those a meaning: ':' opens an alternate data stream ("file:stream"), '\' separates path
// components, a trailing dot or space is stripped, "CON", "NUL", "COM1"... (with any extension) name devices, and
// < > " | ? * are wildcards or reserved. None of them may reach the host as a name: a lookup of such a name finds
// nothing (ENOENT: no such file can be on the export as the guest names it), and a create is refused (EINVAL, as
// Linux's own vfat/ntfs3 drivers answer for a character the filesystem cannot hold).

import { Errno, P9Error } from '../errno.js';

/** NTFS keeps names of at most 255 UTF-16 code units. */
const NTFS_NAME_MAX = 255;
// eslint-disable-next-line no-control-regex
const FORBIDDEN_CHARS = /[\u0000-\u001f<>:"/\\|?*]/;
/** DOS device names, reserved in every directory with or without an extension (superscript digits included). */
const RESERVED = /^(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3]|conin\$|conout\$)(\.|$)/i;

/** Why `name` cannot be an NTFS name, or undefined when it can ('.' and '..' are the caller's business). */
export function ntfsNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name.length > NTFS_NAME_MAX) return 'longer than 255 UTF-16 units';
  if (FORBIDDEN_CHARS.test(name)) return 'character NTFS or Win32 reserves (: \\ < > " | ? * or a control character)';
  const last = name[name.length - 1];
  if (last === '.' || last === ' ') return 'trailing dot or space (Win32 strips it)';
  if (RESERVED.test(name)) return 'reserved DOS device name';
  return undefined;
}

/** A name looked up: ENOENT when NTFS cannot hold it (nothing by that name can exist). */
export function checkLookupName(name: string): void {
  if (name === '.' || name === '..') return;
  if (ntfsNameProblem(name) !== undefined) throw new P9Error(Errno.ENOENT);
}

/** A name to create: EINVAL, with the reason, when NTFS cannot hold it. */
export function checkCreateName(name: string): void {
  const problem = name === '.' || name === '..' ? 'dot name' : ntfsNameProblem(name);
  if (problem !== undefined) throw new P9Error(Errno.EINVAL, `name not allowed on NTFS: ${problem}`);
}
