// A FAKE NTFS volume for the NTFS layer's unit tests, written from NTFS's documented behaviour, over a Linux temp
// directory: it is not NTFS and nothing here ran on Windows.
//
// What it emulates, because the layer depends on it:
//  - case-insensitive lookups in every directory without the case-sensitive flag ("FOO" finds "foo"; opening or
//    creating "FOO" there opens "foo"; mkdir/link of "FOO" is EEXIST), case-sensitive ones where the flag is set
//    (set only on an empty directory; inherited by directories made inside a flagged one);
//  - named streams ("file:stream"): kept per file id (device + inode) in a directory outside the export, so they
//    follow renames and hard links and go away with the file's last name;
//  - Win32 path resolution follows reparse points (here: Linux symlinks) in every component, and a stream opened
//    on a symlink is the target's stream: `followedLinks` counts stream accesses that went through a link, which
//    on a real host would have touched a file the link points at;
//  - MoveFileEx(REPLACE_EXISTING) does not replace a directory (EPERM).

import fs from 'node:fs';
import path from 'node:path';
import type { HostStatFs } from '../../src/p9/hostfs.js';
import type { NtfsStat, NtfsVolume } from '../../src/p9/ntfs/volume.js';

function toStat(s: fs.BigIntStats): NtfsStat {
  return {
    kind: s.isSymbolicLink() ? 'reparse' : s.isDirectory() ? 'dir' : 'file',
    dev: s.dev,
    ino: s.ino,
    size: s.isDirectory() ? 0n : s.size,
    nlink: Number(s.nlink),
    atimeNs: s.atimeNs,
    mtimeNs: s.mtimeNs,
    ctimeNs: s.ctimeNs,
    birthtimeNs: s.birthtimeNs,
  };
}

function enoent(p: string): Error {
  return Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
}

function eexist(p: string): Error {
  return Object.assign(new Error(`EEXIST: ${p}`), { code: 'EEXIST' });
}

const same = (a: string, b: string): boolean => a.toUpperCase() === b.toUpperCase();

export class FakeNtfsVolume implements NtfsVolume {
  readonly name = 'fake-ntfs';
  /** File ids (dev:ino) of directories with the case-sensitive flag. */
  private readonly caseSensitive = new Set<string>();
  /** Whether setCaseSensitiveDir succeeds (a host that refuses the flag: false). */
  caseFlagWorks = true;
  /** Whether the volume has named streams (FAT/exFAT: false). */
  streams = true;
  /** Stream accesses that went through a reparse point (each would have touched the link's target). */
  followedLinks = 0;

  constructor(
    /** Where streams are kept: outside the exported tree. */
    readonly streamDir: string,
  ) {
    fs.mkdirSync(streamDir, { recursive: true });
  }

  private idOf(real: string, follow = true): string {
    const s = follow ? fs.statSync(real, { bigint: true }) : fs.lstatSync(real, { bigint: true });
    return `${s.dev}-${s.ino}`;
  }

  private dirIsCaseSensitive(realDir: string): boolean {
    try {
      return this.caseSensitive.has(this.idOf(realDir));
    } catch {
      return false;
    }
  }

  /** The entry of `dir` (a real path) that NTFS would find for `name`, or undefined. */
  private findEntry(realDir: string, name: string): string | undefined {
    if (fs.existsSync(path.join(realDir, name)) || isLink(path.join(realDir, name))) return name;
    if (this.dirIsCaseSensitive(realDir)) return undefined;
    let names: string[];
    try {
      names = fs.readdirSync(realDir);
    } catch {
      return undefined;
    }
    return names.find((n) => same(n, name));
  }

  /** Resolves a path as NTFS would: each component case-insensitively unless its directory is flagged. */
  private real(p: string): string {
    const parts = path.resolve(p).split('/').filter(Boolean);
    let cur = '/';
    for (const part of parts) {
      const hit = this.findEntry(cur, part);
      cur = path.join(cur, hit ?? part);
    }
    return cur;
  }

  /** The parent resolved, and the entry NTFS finds for the last name (undefined: none). */
  private parentAndEntry(p: string): { dir: string; name: string; existing: string | undefined } {
    const dir = this.real(path.dirname(p));
    const name = path.basename(p);
    return { dir, name, existing: this.findEntry(dir, name) };
  }

  rootPath(p: string): string {
    return path.resolve(p);
  }

  join(dir: string, name: string): string {
    return dir.endsWith('/') ? dir + name : `${dir}/${name}`;
  }

  dirname(p: string): string {
    return path.dirname(p);
  }

  lstat(p: string): NtfsStat {
    return toStat(fs.lstatSync(this.real(p), { bigint: true }));
  }

  fstat(fd: number): NtfsStat {
    return toStat(fs.fstatSync(fd, { bigint: true }));
  }

  readdir(p: string): string[] {
    return fs.readdirSync(this.real(p));
  }

  open(p: string, flags: number, mode: number): number {
    const { dir, name, existing } = this.parentAndEntry(p);
    if (existing !== undefined && flags & fs.constants.O_CREAT && flags & fs.constants.O_EXCL) throw eexist(p);
    // Opening follows a reparse point, as CreateFileW without FILE_FLAG_OPEN_REPARSE_POINT does.
    return fs.openSync(path.join(dir, existing ?? name), flags, mode);
  }

  close(fd: number): void {
    fs.closeSync(fd);
  }

  mkdir(p: string): void {
    const { dir, name, existing } = this.parentAndEntry(p);
    if (existing !== undefined) throw eexist(p);
    const made = path.join(dir, name);
    fs.mkdirSync(made);
    if (this.dirIsCaseSensitive(dir)) this.caseSensitive.add(this.idOf(made));
  }

  rmdir(p: string): void {
    const real = this.real(p);
    const id = this.idOf(real, false);
    fs.rmdirSync(real);
    this.caseSensitive.delete(id);
    this.dropStreams(id);
  }

  unlink(p: string): void {
    const real = this.real(p);
    const st = fs.lstatSync(real, { bigint: true });
    if (st.isDirectory()) throw Object.assign(new Error(`EPERM: ${p}`), { code: 'EPERM' });
    fs.unlinkSync(real);
    if (st.nlink === 1n && !st.isSymbolicLink()) this.dropStreams(`${st.dev}-${st.ino}`);
  }

  rename(from: string, to: string): void {
    const src = this.real(from);
    const { dir, name, existing } = this.parentAndEntry(to);
    const srcId = this.idOf(src, false);
    if (existing !== undefined) {
      const dst = path.join(dir, existing);
      const st = fs.lstatSync(dst, { bigint: true });
      if (`${st.dev}-${st.ino}` !== srcId) {
        // MoveFileEx replaces a file, never a directory.
        if (st.isDirectory()) throw Object.assign(new Error(`EPERM: ${to}`), { code: 'EPERM' });
        fs.unlinkSync(dst);
        if (st.nlink === 1n) this.dropStreams(`${st.dev}-${st.ino}`);
      }
    }
    fs.renameSync(src, path.join(dir, name));
  }

  link(existing: string, newPath: string): void {
    const { dir, name, existing: taken } = this.parentAndEntry(newPath);
    if (taken !== undefined) throw eexist(newPath);
    fs.linkSync(this.real(existing), path.join(dir, name));
  }

  readlink(p: string): string {
    return fs.readlinkSync(this.real(p));
  }

  utimes(p: string, atime: number, mtime: number, nofollow: boolean): void {
    if (nofollow) fs.lutimesSync(this.real(p), atime, mtime);
    else fs.utimesSync(this.real(p), atime, mtime);
  }

  statfs(p: string): HostStatFs {
    return fs.statfsSync(this.real(p), { bigint: true });
  }

  supportsStreams(): boolean {
    return this.streams;
  }

  private streamPath(p: string, stream: string): string {
    if (!/^[a-z.]+$/.test(stream)) throw new Error(`fake NTFS: unexpected stream name ${stream}`);
    const real = this.real(p);
    if (isLink(real)) this.followedLinks++;
    return path.join(this.streamDir, `${this.idOf(real)}-${stream}`);
  }

  readStream(p: string, stream: string, max: number): Buffer | undefined {
    let data: Buffer;
    try {
      data = fs.readFileSync(this.streamPath(p, stream));
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return undefined;
      throw err;
    }
    return data.length > max ? undefined : data;
  }

  writeStream(p: string, stream: string, data: Buffer): void {
    if (!fs.existsSync(this.real(p))) throw enoent(p);
    fs.writeFileSync(this.streamPath(p, stream), data);
  }

  removeStream(p: string, stream: string): void {
    fs.rmSync(this.streamPath(p, stream), { force: true });
  }

  /** The raw stream of a host path (tests look at what was stored). */
  streamOf(p: string, stream: string): Buffer | undefined {
    const f = path.join(this.streamDir, `${this.idOf(this.real(p))}-${stream}`);
    return fs.existsSync(f) ? fs.readFileSync(f) : undefined;
  }

  /** Every stream kept (leak checks). */
  streamCount(): number {
    return fs.readdirSync(this.streamDir).length;
  }

  isCaseSensitiveDir(p: string): boolean {
    return this.dirIsCaseSensitive(this.real(p));
  }

  setCaseSensitiveDir(p: string): boolean {
    const real = this.real(p);
    if (!this.caseFlagWorks || fs.readdirSync(real).length > 0) return false;
    this.caseSensitive.add(this.idOf(real));
    return true;
  }

  private dropStreams(id: string): void {
    for (const f of fs.readdirSync(this.streamDir)) if (f.startsWith(`${id}-`)) fs.rmSync(path.join(this.streamDir, f));
  }
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
