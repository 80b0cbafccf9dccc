// The shim daemon: log to the bundle's `log` fifo (Windows: the log pipe it serves), runtime options from stdin,
// Task service on the socket passed as fd 3 (or -socket: the named pipe on Windows), events to TTRPC_ADDRESS,
// graceful exit on Shutdown / SIGTERM.
import { constants, existsSync, openSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { stateRootFor } from '../task/record.js';
import { createSandbox, discardPrespawnedAgent } from '../sandbox/index.js';
import { TaskService } from '../task/service.js';
import { createTaskServer } from '../task/server.js';
import { Logger, parseLogLevel, type LogSink } from '../util/log.js';
import { setupTelemetry, shutdownTelemetry } from '../telemetry/index.js';
import type { ShimFlags } from './flags.js';
import { PipeLogSink, shimLogPipe } from './npipe.js';
import { decodeStdinOptions, sandboxBackend } from './options.js';
import { TtrpcEventPublisher } from './publisher.js';
import { readAll } from './start.js';
import { mkdirPrivate } from '../util/private-fs.js';
import { opsConfig } from '../ops/config.js';
import { PodOps } from '../ops/pod-ops.js';
import { tuneProcessForFileServing } from '../util/io-tuning.js';

/** containerd holds the fifo open O_RDWR, so a non-blocking O_WRONLY open succeeds at once (ENXIO if not). */
function openLogSink(bundle: string): LogSink {
  try {
    const fd = openSync(join(bundle, 'log'), constants.O_WRONLY | constants.O_NONBLOCK);
    const s = new net.Socket({ fd, readable: false, writable: true });
    s.on('error', () => undefined);
    return { write: (line: string) => (s.writable && s.writableLength < 1 << 20 ? s.write(line) : false) };
  } catch {
    return { write: () => undefined };
  }
}

/** Windows: containerd dials the log pipe; the shim serves it (npipe.ts). No sink when it cannot be served. */
async function openPipeLogSink(flags: ShimFlags): Promise<LogSink & { close?: () => void }> {
  try {
    return await PipeLogSink.listen(shimLogPipe(flags.namespace, flags.id));
  } catch {
    return { write: () => undefined };
  }
}

export async function serveAction(flags: ShimFlags): Promise<void> {
  // The shim serves every share of the pod over 9P (src/p9): malloc and threadpool settings for that.
  tuneProcessForFileServing();
  const bundle = flags.bundle || process.cwd();
  const windows = process.platform === 'win32';
  const sink = windows ? await openPipeLogSink(flags) : openLogSink(bundle);
  const log = new Logger(sink, flags.debug ? 'debug' : parseLogLevel(process.env.LCOW_LOG_LEVEL), {
    shim: 'lcow',
    namespace: flags.namespace,
  });
  process.on('uncaughtException', (err) => log.error('uncaught exception', { error: err.stack }));
  process.on('unhandledRejection', (err) => log.error('unhandled rejection', { error: String(err) }));
  const opts = decodeStdinOptions(await readAll(process.stdin), flags.id);
  const ops = opsConfig(opts.config);
  // containerd's -debug wins; else the runtime config's log_level; else LCOW_LOG_LEVEL.
  if (!flags.debug && ops.logLevel) log.setLevel(ops.logLevel);
  const backend = sandboxBackend(opts.config);
  // startup_ms: from the process's start to here (Node start-up and module loading; containerd waits for it).
  log.info('shim serving', {
    id: flags.id,
    pid: process.pid,
    sandbox: backend ?? 'none',
    startup_ms: Math.round(performance.now()),
  });
  const ttrpcAddress = opts.bootstrap?.containerdTtrpcAddress || process.env.TTRPC_ADDRESS || `${flags.address}.ttrpc`;
  const publisher = new TtrpcEventPublisher(ttrpcAddress, flags.namespace, log);
  let exiting = false;
  const exit = async (why: string): Promise<void> => {
    if (exiting) return;
    exiting = true;
    log.info('shim exiting', { reason: why });
    await svc.close().catch((err: unknown) => log.warn('closing the task service failed', { error: err }));
    await podOps.close().catch((err: unknown) => log.warn('closing the pod operations failed', { error: err }));
    await discardPrespawnedAgent();
    await publisher.flush(3000);
    publisher.close();
    await shutdownTelemetry();
    await server.close().catch((err: unknown) => log.warn('closing the ttrpc server failed', { error: err }));
    (sink as { close?: () => void }).close?.();
    // A named pipe vanishes with its server; a unix socket file stays unless removed.
    if (flags.socket && !windows) {
      try {
        unlinkSync(flags.socket);
      } catch {
        // gone
      }
    }
    process.exit(0);
  };
  // /run/lcow and /run/lcow/<ns>: 0700 whatever the umask (they hold every pod's secret and QMP socket).
  const stateRoot = stateRootFor(flags.namespace);
  mkdirPrivate(dirname(stateRoot));
  mkdirPrivate(stateRoot);
  const podOps = new PodOps({ namespace: flags.namespace, stateRoot, backend, config: ops, logger: log });
  const svc = new TaskService({
    namespace: flags.namespace,
    logger: log,
    publisher,
    createSandbox: (o) => createSandbox(backend, o),
    runtimeConfig: opts.config,
    stateRoot,
    hostCgroupVersion: existsSync('/sys/fs/cgroup/cgroup.controllers') ? 2 : 1,
    onShutdown: () => void exit('shutdown'),
    hooks: podOps,
  });
  podOps.attach(() => svc.podView());
  await setupTelemetry('containerd-shim-lcow').catch((err: unknown) =>
    log.warn('telemetry setup failed; tracing stays off', { error: String(err) }),
  );
  const server = createTaskServer(svc, log);
  const fd = Number(process.env.LCOW_SHIM_LISTEN_FD ?? '');
  delete process.env.LCOW_SHIM_LISTEN_FD;
  if (Number.isInteger(fd) && fd > 2) {
    const listener = net.createServer();
    await new Promise<void>((resolve, reject) => {
      listener.once('error', reject);
      listener.listen({ fd }, () => resolve());
    });
    await server.serve(listener);
  } else if (flags.socket) {
    await server.serve(flags.socket);
  } else throw new Error('serve needs a listening socket (fd 3 or -socket)');
  process.on('SIGTERM', () => void exit('SIGTERM'));
  process.on('SIGINT', () => void exit('SIGINT'));
  // Windows has no SIGTERM; a console's Ctrl+Break (or its closing) is the polite stop there.
  if (windows) process.on('SIGBREAK', () => void exit('SIGBREAK'));
}
