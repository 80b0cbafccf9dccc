// The real NtfsVolume: Node's fs on Windows (paths in the \\?\ namespace, so Win32 never rewrites a name), named
// streams as "path:stream", and win32.ts for what Node cannot do. Never run: no Windows host in this project's CI
// (docs/windows.md); the NTFS layer above it is tested over a fake volume (test/fakes/ntfs-volume-fake.ts).

import fs from 'node:fs';
import path from 'node:path';
import type { HostStatFs } from '../hostfs.js';
import type { NtfsStat, NtfsVolume } from './volume.js';
import { isCaseSensitiveDir, setCaseSensitiveDir, volumeHasNamedStreams } from './win32.js';

function toStat(s: fs.BigIntStats): NtfsStat {
  return {
    // libuv reports symlinks and junctions (mount points) as symbolic links: both are reparse points here.
    kind: s.isSymbolicLink() ? 'reparse' : s.isDirectory() ? 'dir' : 'file',
    dev: s.dev,
    ino: s.ino,
    size: s.size,
    nlink: Number(s.nlink),
    atimeNs: s.atimeNs,
    mtimeNs: s.mtimeNs,
    ctimeNs: s.ctimeNs,
    birthtimeNs: s.birthtimeNs,
  };
}

export function nodeNtfsVolume(): NtfsVolume {
  const w = path.win32;
  return {
    name: 'ntfs',
    rootPath: (p) => w.toNamespacedPath(w.resolve(p)),
    join: (dir, name) => (dir.endsWith('\\') ? dir + name : `${dir}\\${name}`),
    dirname: (p) => w.dirname(p),
    lstat: (p) => toStat(fs.lstatSync(p, { bigint: true })),
    fstat: (fd) => toStat(fs.fstatSync(fd, { bigint: true })),
    readdir: (p) => fs.readdirSync(p),
    open: (p, flags, mode) => fs.openSync(p, flags, mode),
    close: (fd) => fs.closeSync(fd),
    mkdir: (p) => fs.mkdirSync(p),
    rmdir: (p) => fs.rmdirSync(p),
    unlink: (p) => {
      try {
        fs.unlinkSync(p);
      } catch (err) {
        // A directory symlink or junction is removed as a directory (its target is untouched).
        if (!fs.lstatSync(p).isSymbolicLink()) throw err;
        fs.rmdirSync(p);
      }
    },
    rename: (from, to) => fs.renameSync(from, to),
    link: (existing, newPath) => fs.linkSync(existing, newPath),
    readlink: (p) => fs.readlinkSync(p),
    utimes: (p, atime, mtime, nofollow) =>
      nofollow ? fs.lutimesSync(p, atime, mtime) : fs.utimesSync(p, atime, mtime),
    statfs: (p): HostStatFs => fs.statfsSync(p, { bigint: true }),
    supportsStreams: (p) => volumeHasNamedStreams(p),
    readStream: (p, stream, max) => {
      let fd: number;
      try {
        fd = fs.openSync(`${p}:${stream}`, 'r');
      } catch (err) {
        if ((err as { code?: string }).code === 'ENOENT') return undefined;
        throw err;
      }
      try {
        const buf = Buffer.alloc(max + 1);
        const n = fs.readSync(fd, buf, 0, buf.length, 0);
        return n > max ? undefined : buf.subarray(0, n);
      } finally {
        fs.closeSync(fd);
      }
    },
    writeStream: (p, stream, data) => fs.writeFileSync(`${p}:${stream}`, data),
    removeStream: (p, stream) => {
      try {
        fs.unlinkSync(`${p}:${stream}`);
      } catch (err) {
        if ((err as { code?: string }).code !== 'ENOENT') throw err;
      }
    },
    isCaseSensitiveDir: (p) => isCaseSensitiveDir(p),
    setCaseSensitiveDir: (p) => setCaseSensitiveDir(p),
  };
}
