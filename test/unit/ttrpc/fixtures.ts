// Shared setup for ttrpc tests: a server on a unix socket in a fresh temp dir, clients to it, and teardown
// that checks nothing was left behind.
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TtrpcClient, TtrpcServer, type TtrpcServerOptions } from '../../../src/ttrpc/index.js';

export interface Fixture {
  dir: string;
  path: string;
  server: TtrpcServer;
  clients: TtrpcClient[];
  sockets: net.Socket[];
  connect(): Promise<TtrpcClient>;
  /** A raw socket to the server, for writing hand-made bytes. */
  raw(): Promise<net.Socket>;
  teardown(): Promise<void>;
}

export async function startServer(
  setup: (server: TtrpcServer) => void,
  opts: TtrpcServerOptions = {},
): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'ttrpc-test-'));
  const path = join(dir, 'ttrpc.sock');
  const server = new TtrpcServer(opts);
  setup(server);
  await server.serve(path);
  const fx: Fixture = {
    dir,
    path,
    server,
    clients: [],
    sockets: [],
    async connect() {
      const c = await TtrpcClient.connect(path);
      fx.clients.push(c);
      return c;
    },
    raw() {
      return new Promise((resolve, reject) => {
        const s = net.connect(path);
        s.once('error', reject);
        s.once('connect', () => {
          fx.sockets.push(s);
          resolve(s);
        });
      });
    },
    async teardown() {
      for (const c of fx.clients) c.close();
      for (const s of fx.sockets) s.destroy();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fx;
}

export function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Reads frames from a raw socket until `count` arrived (or the socket closed). */
export function collectFrames(
  socket: net.Socket,
  count: number,
  timeoutMs = 2000,
): Promise<Array<{ streamId: number; type: number; flags: number; data: Buffer }>> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const frames: Array<{ streamId: number; type: number; flags: number; data: Buffer }> = [];
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out with ${frames.length}/${count} frames`));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 10) {
        const len = buf.readUInt32BE(0);
        if (buf.length < 10 + len) break;
        frames.push({ streamId: buf.readUInt32BE(4), type: buf[8]!, flags: buf[9]!, data: buf.subarray(10, 10 + len) });
        buf = buf.subarray(10 + len);
      }
      if (frames.length >= count) {
        cleanup();
        resolve(frames);
      }
    };
    const onClose = (): void => {
      cleanup();
      resolve(frames);
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}
