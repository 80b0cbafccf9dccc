// `lcowctl 9p serve`: serves host directories over 9P2000.L on a TCP or unix socket (debugging, benchmarks,
// the kernel-client test harness). Contract:
//   lcowctl 9p serve --listen tcp:127.0.0.1:PORT|unix:PATH --export DIR [--export NAME=DIR ...]
//                    [--read-only] [--security mapped|passthrough-existing] [--max-connections N]
//                    [--max-fids N] [--max-host-fds N] [--msize N]
// Prints exactly one line "listening on tcp:127.0.0.1:PORT" (the real port when 0 was asked) or
// "listening on unix:PATH" to stdout once listening; logs go to stderr; SIGTERM/SIGINT close the listener and
// every connection and exit 0.

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { P9Server } from './server.js';
import { tuneProcessForFileServing } from '../util/io-tuning.js';
import type { ExportConfig } from './export.js';
import { SHARE_SECURITY_MODELS, type ShareSecurity } from './security.js';
import { stderrLogger } from '../util/log.js';

/** A standalone server is reachable by anything that can connect to its socket: keep the default small. */
export const DEFAULT_CLI_MAX_CONNECTIONS = 64;

const USAGE = `usage: lcowctl 9p serve --listen tcp:HOST:PORT|unix:PATH --export DIR [--export NAME=DIR ...]
                        [--read-only] [--security mapped|passthrough-existing] [--max-connections N]
                        [--max-fids N] [--max-host-fds N] [--msize N]

An export given as DIR is attached by its path (or by "" when it is the only export);
NAME=DIR also answers to aname NAME.
--security (default mapped) is the share security model of every export (docs/security.md).
--max-connections (default ${DEFAULT_CLI_MAX_CONNECTIONS}): connections beyond are closed at once.`;

export interface ServeArgs {
  listen: { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };
  exports: ExportConfig[];
  readOnly: boolean;
  security: ShareSecurity;
  maxConnections: number;
  maxFids?: number;
  maxHostFds?: number;
  msize?: number;
}

export class UsageError extends Error {}

function positiveInt(flag: string, value: string | undefined): number {
  if (value === undefined || !/^\d+$/.test(value) || Number(value) <= 0)
    throw new UsageError(`${flag} needs a positive integer`);
  return Number(value);
}

export function parseServeArgs(argv: string[]): ServeArgs {
  let listen: ServeArgs['listen'] | undefined;
  const exportSpecs: string[] = [];
  let readOnly = false;
  let maxFids: number | undefined;
  let maxHostFds: number | undefined;
  let msize: number | undefined;
  let security: ShareSecurity = 'mapped';
  let maxConnections = DEFAULT_CLI_MAX_CONNECTIONS;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const [flag, inline] = a.startsWith('--') && eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--listen': {
        const v = value();
        const tcp = /^tcp:(.+):(\d+)$/.exec(v);
        if (tcp) listen = { kind: 'tcp', host: tcp[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(tcp[2]) };
        else if (v.startsWith('unix:') && v.length > 5) listen = { kind: 'unix', path: v.slice(5) };
        else throw new UsageError(`--listen: expected tcp:HOST:PORT or unix:PATH, got "${v}"`);
        break;
      }
      case '--export':
        exportSpecs.push(value());
        break;
      case '--read-only':
        readOnly = true;
        break;
      case '--max-fids':
        maxFids = positiveInt(flag, value());
        break;
      case '--max-host-fds':
        maxHostFds = positiveInt(flag, value());
        break;
      case '--max-connections':
        maxConnections = positiveInt(flag, value());
        break;
      case '--security': {
        const v = value();
        if (!(SHARE_SECURITY_MODELS as readonly string[]).includes(v)) {
          throw new UsageError(`--security: expected ${SHARE_SECURITY_MODELS.join(' or ')}, got "${v}"`);
        }
        security = v as ShareSecurity;
        break;
      }
      case '--msize':
        msize = positiveInt(flag, value());
        break;
      default:
        throw new UsageError(`unknown argument "${a}"`);
    }
  }
  if (listen === undefined) throw new UsageError('--listen is required');
  if (exportSpecs.length === 0) throw new UsageError('at least one --export is required');
  const exports = exportSpecs.map((spec): ExportConfig => {
    // NAME=DIR when the part before '=' is a plain name; a DIR may itself contain '='.
    const m = /^([^=/]+)=(.+)$/.exec(spec);
    const dir = path.resolve(m ? m[2]! : spec);
    return { name: m ? m[1]! : dir, path: dir, readOnly, security };
  });
  const args: ServeArgs = { listen, exports, readOnly, security, maxConnections };
  if (maxFids !== undefined) args.maxFids = maxFids;
  if (maxHostFds !== undefined) args.maxHostFds = maxHostFds;
  if (msize !== undefined) args.msize = msize;
  return args;
}

async function serve(argv: string[]): Promise<number> {
  const args = parseServeArgs(argv);
  tuneProcessForFileServing();
  const log = stderrLogger({ component: '9p' });
  const server = new P9Server({
    exports: args.exports,
    logger: log,
    maxConnections: args.maxConnections,
    ...(args.maxFids !== undefined ? { maxFids: args.maxFids } : {}),
    ...(args.maxHostFds !== undefined ? { maxHostFds: args.maxHostFds } : {}),
    ...(args.msize !== undefined ? { msize: args.msize } : {}),
  });
  const sockets = new Set<net.Socket>();
  const listener = net.createServer({ noDelay: true }, (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    server.handleConnection(sock);
  });
  const listen = args.listen;
  if (listen.kind === 'unix' && fs.existsSync(listen.path)) {
    // A stale socket from a killed server; refuse anything that is not a socket.
    if (!fs.statSync(listen.path).isSocket()) throw new Error(`${listen.path} exists and is not a socket`);
    fs.unlinkSync(listen.path);
  }
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    if (listen.kind === 'tcp') listener.listen(listen.port, listen.host, resolve);
    else listener.listen(listen.path, resolve);
  });
  const where =
    listen.kind === 'tcp'
      ? `tcp:${listen.host}:${(listener.address() as net.AddressInfo).port}`
      : `unix:${listen.path}`;
  // Handlers go in before the "listening" line: whoever reads it may signal at once, and a signal that arrives
  // before Node installs its handler takes the default action (death by signal, not a clean exit 0).
  const stopped = new Promise<number>((resolve) => {
    const stop = (signal: string): void => {
      log.info('9p server stopping', { signal });
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      listener.close(() => resolve(0));
      server.close();
      for (const s of sockets) s.destroy();
    };
    const onTerm = (): void => stop('SIGTERM');
    const onInt = (): void => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  process.stdout.write(`listening on ${where}\n`);
  log.info('9p server listening', {
    listen: where,
    exports: args.exports.map((e) => e.path),
    readOnly: args.readOnly,
    security: args.security,
    maxConnections: args.maxConnections,
  });
  return stopped;
}

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === '-h' || sub === '--help') {
    process.stdout.write(USAGE + '\n');
    return sub === undefined ? 2 : 0;
  }
  if (sub !== 'serve') {
    process.stderr.write(`lcowctl 9p: unknown subcommand "${sub}"\n${USAGE}\n`);
    return 2;
  }
  try {
    return await serve(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`lcowctl 9p serve: ${err.message}\n${USAGE}\n`);
      return 2;
    }
    process.stderr.write(`lcowctl 9p serve: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}
