// The host filesystem layer a server uses unless told otherwise: by platform.

import type { HostFs } from './hostfs.js';
import { linuxHostFs } from './hostfs-linux.js';

export function hostFsFor(platform: NodeJS.Platform): HostFs {
  if (platform === 'win32') throw new Error('the NTFS host filesystem layer is not built yet');
  return linuxHostFs;
}

export function defaultHostFs(): HostFs {
  return hostFsFor(process.platform);
}
