// Stream transports between the shim (host) and the guest. Every connection starts with the per-UVM secret
// (SECRET_LENGTH random bytes) that only the shim and the guest know, sent by the dialer. The listener hands out
// a connection only after the secret matched (constant-time compare); a wrong or missing secret, or silence
// past the deadline, closes it. Direction: under vsock the host listens and the guest dials; under tcp+token
// (QEMU user networking + hostfwd) the guest listens and the host dials in, and the listener answers ACK only
// after the secret (see tcp-token.ts).
//
// URLs: tcp+token://HOST:PORT and vsock://CID:PORT.
import type { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

export const SECRET_LENGTH = 32;
/** How long a fresh connection may take to present the secret. */
export const AUTH_TIMEOUT_MS = 5000;

export interface Conn {
  /** The byte stream. */
  readonly stream: Duplex;
  /**
   * What to hand a child process so that it inherits the connection (child_process.spawn stdio entry): a
   * net.Socket for TCP, the raw fd for vsock. Used to mount 9P with trans=fd.
   */
  readonly childHandle: Socket | number;
  close(): void;
}

export interface Listener {
  /** The URL a peer dials to reach this listener (the backend may translate it, e.g. QEMU hostfwd). */
  readonly url: string;
  /** Called with every authenticated connection. */
  onConnection(cb: (conn: Conn) => void): void;
  close(): Promise<void>;
}

export interface ParsedUrl {
  scheme: 'tcp+token' | 'vsock';
  host: string;
  port: number;
}

export function parseTransportUrl(url: string): ParsedUrl {
  const m = /^(tcp\+token|vsock):\/\/([^/:]+):(\d+)$/.exec(url);
  if (!m)
    throw new Error(`invalid transport URL ${JSON.stringify(url)} (want tcp+token://HOST:PORT or vsock://CID:PORT)`);
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port <= 0 || port > 0xffffffff) throw new Error(`invalid port in ${url}`);
  return { scheme: m[1] as ParsedUrl['scheme'], host: m[2]!, port };
}

/**
 * Reads exactly `n` bytes from a stream that is in paused mode, or rejects on end/error/timeout. Bytes past `n`
 * are put back (unshift) so that the next consumer sees them.
 */
export function readExactly(stream: Duplex, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const cleanup = (): void => {
      clearTimeout(timer);
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      stream.off('error', onError);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while (got < n && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        got += chunk.length;
      }
      if (got >= n) {
        cleanup();
        const all = Buffer.concat(chunks);
        if (all.length > n) stream.unshift(all.subarray(n));
        resolve(all.subarray(0, n));
      }
    };
    const onEnd = (): void => {
      cleanup();
      reject(new Error(`connection closed after ${got} of ${n} bytes`));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out waiting for ${n} bytes`));
    }, timeoutMs);
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
    onReadable();
  });
}
