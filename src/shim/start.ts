// `start`: compute the grouped socket address; reuse a live shim of the same group, else listen, re-exec
// ourselves as the daemon (detached, own session, fd 3 = the listening socket, stdin = runtime options,
// stdout/stderr not inherited), write `address` atomically and print only the address. Windows: named pipes,
// see startPipeDaemon.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import type { ShimFlags } from './flags.js';
import { canConnect, groupingOf, socketAddress, socketPath } from './address.js';
import { listenPrivate, mkdirWithMode, writePrivateFile } from '../util/private-fs.js';
import { shimPipeAddress, waitForPipe } from './npipe.js';

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

/** The daemon's command line: the same flags, the bundle, the socket (or pipe) it serves, `serve`. */
function daemonArgs(flags: ShimFlags, selfScript: string, bundle: string, socket: string): string[] {
  const args = [selfScript, '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address];
  if (flags.publishBinary) args.push('-publish-binary', flags.publishBinary);
  args.push('-bundle', bundle, '-socket', socket);
  if (flags.debug) args.push('-debug');
  args.push('serve');
  return args;
}

export async function startAction(
  flags: ShimFlags,
  selfScript: string,
  platform: NodeJS.Platform = process.platform,
  stdin: NodeJS.ReadableStream = process.stdin,
): Promise<string> {
  if (!flags.id || !flags.namespace || !flags.address) throw new Error('start needs -id, -namespace and -address');
  const bundle = flags.bundle || process.cwd();
  const options = await readAll(stdin);
  const grouping = await groupingOf(bundle, flags.id);
  if (platform === 'win32') return startPipeDaemon(flags, selfScript, bundle, grouping, options);
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
  const child = spawn(process.execPath, daemonArgs(flags, selfScript, bundle, path), {
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

/**
 * `start` on Windows: the grouped pipe address (npipe.ts); a live daemon of the group serves this container
 * too; else the daemon is started detached (no console window), serves the pipe itself, and `start` returns once
 * the pipe answers. The daemon's stderr goes to <bundle>/panic.log, as hcsshim's shim does: before it serves,
 * nothing else could report why it failed.
 */
async function startPipeDaemon(
  flags: ShimFlags,
  selfScript: string,
  bundle: string,
  grouping: string,
  options: Buffer,
): Promise<string> {
  const address = shimPipeAddress(flags.namespace, grouping);
  if (await canConnect(address)) {
    writeAddressFile(bundle, address);
    return address;
  }
  const panicLog = openSync(join(bundle, 'panic.log'), 'w');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, daemonArgs(flags, selfScript, bundle, address), {
      cwd: bundle,
      detached: true,
      windowsHide: true,
      stdio: ['pipe', 'ignore', panicLog],
      // HCS waits (HcsWaitForOperationResult: up to minutes while a VM starts) and the hvsock poller each hold
      // a libuv pool thread; the default 4 would leave file I/O starved. Set before the daemon's first pool use.
      env: { ...process.env, LCOW_SHIM_GROUP: grouping, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE || '16' },
    });
  } finally {
    closeSync(panicLog);
  }
  child.stdin!.end(options);
  let exited: string | undefined;
  child.once('exit', (code, signal) => (exited = `exited (code ${code}, signal ${signal})`));
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  try {
    await waitForPipe(address, () => exited);
  } catch (err) {
    if (!exited) child.kill();
    throw err;
  }
  child.unref();
  writeAddressFile(bundle, address);
  writeFileSync(join(bundle, 'shim.pid'), String(child.pid));
  return address;
}
