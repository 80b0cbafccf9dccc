// `start`: compute the grouped socket address; reuse a live shim of the same group, else listen, re-exec
// ourselves as the daemon (detached, own session, fd 3 = the listening socket, stdin = runtime options,
// stdout/stderr not inherited), write `address` atomically and print only the address.
import { spawn } from 'node:child_process';
import { unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import type { ShimFlags } from './flags.js';
import { canConnect, groupingOf, socketAddress, socketPath } from './address.js';
import { listenPrivate, mkdirWithMode, writePrivateFile } from '../util/private-fs.js';

export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  if ((stream as { isTTY?: boolean }).isTTY) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function writeAddressFile(bundle: string, address: string): void {
  writePrivateFile(join(bundle, 'address'), address);
}

/** The shim's ttrpc socket: 0600 from the start (containerd runs as root; nobody else may connect). */
async function listen(path: string): Promise<net.Server> {
  const s = net.createServer();
  await listenPrivate(s, path);
  return s;
}

export async function startAction(flags: ShimFlags, selfScript: string): Promise<string> {
  if (!flags.id || !flags.namespace || !flags.address) throw new Error('start needs -id, -namespace and -address');
  const bundle = flags.bundle || process.cwd();
  const options = await readAll(process.stdin);
  const grouping = await groupingOf(bundle, flags.id);
  const address = socketAddress(flags.address, flags.namespace, grouping);
  const path = socketPath(address);
  // containerd's socket directory: 0711 as containerd makes it (only if we create it; its mode is not the umask's).
  mkdirWithMode(dirname(path), 0o711);
  let server: net.Server;
  try {
    server = await listen(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    if (await canConnect(path)) {
      // A shim of the same group serves this container too.
      writeAddressFile(bundle, address);
      return address;
    }
    unlinkSync(path);
    server = await listen(path);
  }
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const args = [selfScript, '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.publishBinary) args.push('-publish-binary', flags.publishBinary);
  args.push('-bundle', bundle, '-socket', path);
  if (flags.debug) args.push('-debug');
  args.push('serve');
  const child = spawn(process.execPath, args, {
    cwd: bundle,
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore', fd],
    // The group tells the daemon which pod its first Create is for (the process backend prespawns its agent).
    env: { ...process.env, LCOW_SHIM_LISTEN_FD: '3', LCOW_SHIM_GROUP: grouping },
  });
  child.stdin!.end(options);
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  child.unref();
  writeAddressFile(bundle, address);
  writePrivateFile(join(bundle, 'shim.pid'), String(child.pid));
  return address;
}
