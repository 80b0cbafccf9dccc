// A size-bounded log file: lines are appended to PATH; when it would grow past maxBytes it becomes PATH.1
// (PATH.1 becomes PATH.2 ... up to `keep` old files; the oldest is dropped), so the total stays below
// (keep + 1) * maxBytes. The file is created by the first line. Writes are synchronous appends on an fd kept open: a line is on disk when write()
// returns (a crash loses nothing), and the bounded rate of console and agent lines makes that cheap. Never
// throws: a full disk loses log lines, not the pod.
import { closeSync, fstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';

export interface RotatingFileOptions {
  /** Largest size of one file (default 1 MiB). */
  maxBytes?: number;
  /** Rotated files kept besides the current one (default 2). */
  keep?: number;
  /** File mode of new files (default 0600). */
  mode?: number;
}

export class RotatingFile {
  private fd: number | undefined;
  private size = 0;
  private readonly maxBytes: number;
  private readonly keep: number;
  private readonly mode: number;
  private failed = false;

  constructor(
    readonly path: string,
    opts: RotatingFileOptions = {},
  ) {
    this.maxBytes = Math.max(4096, opts.maxBytes ?? 1 << 20);
    this.keep = Math.max(0, opts.keep ?? 2);
    this.mode = opts.mode ?? 0o600;
  }

  private open(): void {
    try {
      this.fd = openSync(this.path, 'a', this.mode);
      this.size = fstatSync(this.fd).size;
      this.failed = false;
    } catch {
      this.fd = undefined;
      this.failed = true;
    }
  }

  /** Appends `line` and a newline (a line longer than maxBytes is cut). */
  writeLine(line: string): void {
    if (this.fd === undefined) {
      if (this.failed) return;
      this.open();
      if (this.fd === undefined) return;
    }
    let buf = Buffer.from(line.endsWith('\n') ? line : line + '\n');
    if (buf.length > this.maxBytes) buf = Buffer.concat([buf.subarray(0, this.maxBytes - 1), Buffer.from('\n')]);
    if (this.size > 0 && this.size + buf.length > this.maxBytes) this.rotate();
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, buf);
      this.size += buf.length;
    } catch {
      // disk full, file gone: drop the line
    }
  }

  private rotate(): void {
    this.closeFd();
    try {
      if (this.keep === 0) rmSync(this.path, { force: true });
      else {
        rmSync(`${this.path}.${this.keep}`, { force: true });
        for (let i = this.keep - 1; i >= 1; i--) renameIfExists(`${this.path}.${i}`, `${this.path}.${i + 1}`);
        renameIfExists(this.path, `${this.path}.1`);
      }
    } catch {
      // keep appending to whatever is there
    }
    this.open();
  }

  private closeFd(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
    this.fd = undefined;
  }

  close(): void {
    this.closeFd();
    this.failed = true;
  }
}

function renameIfExists(from: string, to: string): void {
  try {
    renameSync(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** The files of a rotated log, oldest first (PATH.N ... PATH.1, PATH). */
export function rotatedFiles(path: string, keep: number): string[] {
  const out: string[] = [];
  for (let i = keep; i >= 1; i--) out.push(`${path}.${i}`);
  out.push(path);
  return out;
}
