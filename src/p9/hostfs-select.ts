// The host filesystem layer a server uses unless told otherwise: by platform. Both layers import cleanly on any
// OS (util/syscalls.ts binds libc on Linux only; the NTFS layer binds kernel32/ntdll on Windows only, on first
// use); only the chosen one is ever called.

import type { HostFs } from './hostfs.js';
import { linuxHostFs } from './hostfs-linux.js';
import { NtfsHostFs } from './ntfs/hostfs-ntfs.js';
import { nodeNtfsVolume } from './ntfs/node-volume.js';

let ntfs: HostFs | undefined;

export function hostFsFor(platform: NodeJS.Platform): HostFs {
  if (platform === 'win32') return (ntfs ??= new NtfsHostFs(nodeNtfsVolume()));
  return linuxHostFs;
}

export function defaultHostFs(): HostFs {
  return hostFsFor(process.platform);
}
