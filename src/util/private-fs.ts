// Files, directories and unix sockets the shim creates with modes set explicitly, never taken from the umask it
// inherits (containerd's, or a shell's: under `umask 000` every default would be world-writable). State dirs 0700,
// secrets and records 0600, the shim's ttrpc socket 0600 (as containerd's own shims make theirs).
import {
  chmodSync,
  closeSync,
  fchmodSync,
  lstatSync,
  mkdirSync,
  openSync,
  renameSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, basename, join } from 'node:path';
import type { Server } from 'node:net';

export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_SOCKET_MODE = 0o600;

/**
 * mkdir -p with `mode` on every directory it creates (chmod after mkdir, so the umask plays no part). Directories
 * that already existed keep theirs (e.g. containerd's own socket directory).
 */
export function mkdirWithMode(path: string, mode: number): void {
  const first = mkdirSync(path, { recursive: true, mode });
  if (first === undefined) return;
  // Every component from the first one created down to the leaf is ours.
  for (let p = path; ; p = dirname(p)) {
    chmodSync(p, mode);
    if (p === first || dirname(p) === p) break;
  }
}

/**
 * A state directory only we can enter: created 0700 (mkdirWithMode), and the leaf set to 0700 even if it existed.
 * It must be a real directory owned by us: a symlink or a directory someone else made there is refused.
 */
export function mkdirPrivate(path: string): void {
  mkdirWithMode(path, PRIVATE_DIR_MODE);
  const st = lstatSync(path);
  if (!st.isDirectory()) throw new Error(`${path} is not a directory`);
  const uid = process.geteuid?.();
  if (uid !== undefined && st.uid !== uid) throw new Error(`${path} belongs to uid ${st.uid}, not to us (${uid})`);
  chmodSync(path, PRIVATE_DIR_MODE);
}

/**
 * Writes `data` to `path` atomically with exactly `mode`: a fresh temp file next to it (O_EXCL, so nothing stale
 * or planted is reused), fchmod, write, rename over the target.
 */
export function writeFileWithMode(path: string, data: string | Uint8Array, mode: number): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode);
  try {
    fchmodSync(fd, mode);
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  try {
    renameSync(tmp, path);
  } catch (err) {
    unlinkSync(tmp);
    throw err;
  }
}

/** A secret or a record only we can read (0600). */
export function writePrivateFile(path: string, data: string | Uint8Array): void {
  writeFileWithMode(path, data, PRIVATE_FILE_MODE);
}

/**
 * server.listen(path) for a unix socket that is 0600 from its first instant: bind(2) runs synchronously inside
 * listen() (Node's net module), so a umask of 0177 held just around the call gives the socket file 0600 with no
 * window where it is connectable by others; chmod afterwards makes it explicit. Resolves once listening.
 */
export function listenPrivate(server: Server, path: string, mode = PRIVATE_SOCKET_MODE): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    const old = process.umask(0o777 & ~mode);
    try {
      server.listen(path, () => {
        server.off('error', onError);
        try {
          chmodSync(path, mode);
          resolve();
        } catch (err) {
          server.close();
          reject(err as Error);
        }
      });
    } finally {
      process.umask(old);
    }
  });
}
