// Agent process entry: flags, logging, ttrpc server, signals.
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Agent, runCmd } from './agent.js';
import { PodNetwork } from './network.js';
import { fetchSecret, isSecretUrl } from './hv-secret.js';
import { mountScsi } from './scsi.js';
import { createAgentServer } from './server.js';
import { shutdownTelemetry } from '../telemetry/index.js';
import { stderrLogger } from '../util/log.js';
import { P9Acceptor, acceptControl, dialControl, mount9p, vsockSelfTest } from './uvm.js';
import { VMADDR_CID_HOST, fixedSecret, parseVsockPorts, secretFromFile } from '../transport/index.js';
import { CloneState } from './clone.js';

export interface AgentArgs {
  stateDir: string;
  listen: string;
  readyFd?: number;
  /** Process backend: exit when the shim that started us is gone and no container runs here. */
  exitWithParent?: boolean;
  /** UVM mode: dial the host's control port instead of listening (with --p9 and --token-file). */
  dial?: string;
  p9?: string;
  tokenFile?: string;
  /** UVM mode, hostfwd direction: listen for the shim's control connection (with --p9-accept and --token-file). */
  accept?: string;
  p9Accept?: string;
  /**
   * UVM mode, QEMU virtio-vsock: the file naming the host's vsock ports (fw_cfg opt/lcow/vsock); the agent dials
   * vsock://2:<control> and mounts shares from vsock://2:<p9> (with --token-file).
   */
  vsockPorts?: string;
  /** UVM mode: the OCI runtime binary containers run with (`runc` or `crun`; default runc). */
  ociRuntime?: string;
}

/** The OCI runtimes the agent drives (their CLIs are alike; see runc.ts for where they differ). */
const OCI_RUNTIMES = ['runc', 'crun'];

export function parseAgentArgs(argv: string[]): AgentArgs {
  const out: Partial<AgentArgs> = {};
  for (let i = 0; i < argv.length; i++) {
    const [flag, inline] = argv[i]!.split('=', 2) as [string, string | undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--state-dir':
        out.stateDir = value();
        break;
      case '--listen':
        out.listen = value();
        break;
      case '--ready-fd':
        out.readyFd = Number(value());
        break;
      case '--exit-with-parent':
        out.exitWithParent = true;
        break;
      case '--dial':
        out.dial = value();
        break;
      case '--p9':
        out.p9 = value();
        break;
      case '--accept':
        out.accept = value();
        break;
      case '--p9-accept':
        out.p9Accept = value();
        break;
      case '--token-file':
        out.tokenFile = value();
        break;
      case '--vsock-ports':
        out.vsockPorts = value();
        break;
      case '--oci-runtime':
        out.ociRuntime = value();
        if (!OCI_RUNTIMES.includes(out.ociRuntime))
          throw new Error(`--oci-runtime must be one of ${OCI_RUNTIMES.join(', ')}, not ${out.ociRuntime}`);
        break;
      default:
        throw new Error(`unknown flag ${flag}`);
    }
  }
  if (!out.stateDir || !(out.listen || ((out.dial || out.accept || out.vsockPorts) && out.tokenFile)))
    throw new Error(
      'usage: lcow-agent --state-dir DIR (--listen SOCKET [--ready-fd N] | --dial URL --p9 URL --token-file FILE |' +
        ' --vsock-ports FILE --token-file FILE | --accept URL --p9-accept URL --token-file FILE)',
    );
  return out as AgentArgs;
}

export async function main(argv: string[]): Promise<void> {
  if (argv[0] === '--vsock-selftest') {
    const ok = await vsockSelfTest((line) => process.stdout.write(line + '\n'));
    process.exit(ok ? 0 : 1);
  }
  const args = parseAgentArgs(argv);
  if (args.vsockPorts) {
    // QEMU virtio-vsock: the host's listeners took free ports; fw_cfg says which (read once: no templates here).
    const ports = parseVsockPorts(await readFile(args.vsockPorts, 'utf8'));
    args.dial = `vsock://${VMADDR_CID_HOST}:${ports.control}`;
    args.p9 = `vsock://${VMADDR_CID_HOST}:${ports.p9}`;
  }
  const log = stderrLogger({ component: 'agent' });
  // A SecretSource, not a value: the token file is read again at every handshake (fw_cfg gives a clone restored
  // from a template a fresh secret after restore). Read once here only to fail fast on a missing or bad file.
  // Hyper-V has no fw_cfg: there the token "file" is the vsock port the host hands the secret out on (once).
  const tf = args.tokenFile;
  const secret = tf ? (isSecretUrl(tf) ? fixedSecret(await fetchSecret(tf)) : secretFromFile(tf)) : undefined;
  if (secret) await secret();
  const p9 = args.p9;
  const p9Acceptor = args.p9Accept && secret ? await P9Acceptor.listen(args.p9Accept, secret, log) : undefined;
  const agent = new Agent({
    stateDir: args.stateDir,
    runcBinary: args.ociRuntime,
    logger: log,
    mount9p: p9Acceptor ? (req) => p9Acceptor.mount(req) : p9 && secret ? (req) => mount9p(p9, secret, req) : undefined,
    // In a UVM: disks the host hot-adds (Hyper-V SCSI: container layers) are found in sysfs and mounted.
    mountScsi: args.dial || args.accept ? (req) => mountScsi(req) : undefined,
  });
  await agent.init();
  // No OTEL_* here: the guest traces only while the shim reads its spans (Agent.StreamSpans).
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info('agent stopping');
    await agent.shutdown().catch((err: unknown) => log.warn('agent shutdown failed', { error: err }));
    await server.close().catch((err: unknown) => log.warn('closing the agent server failed', { error: err }));
    await shutdownTelemetry();
    process.exit(0);
  };
  const inUvm = !!((args.dial || args.accept) && secret);
  // Templates (hostfwd direction only: the QEMU backend): PrepareTemplate/AdoptClone and the re-listen below.
  const clone = args.accept && secret ? new CloneState() : undefined;
  const server = createAgentServer(agent, log, () => void stop(), {
    network: inUvm ? new PodNetwork(runCmd, log) : undefined,
    clone,
  });
  if (args.accept && secret) {
    // UVM, hostfwd direction: one control connection with the shim; when it ends, the agent (and with it the
    // VM) ends; except in template mode, where it listens again for the next (a clone's) shim. The listener
    // reads the secret at every handshake: a clone has a new one.
    const accept = async (again: boolean): Promise<void> => {
      const conn = await acceptControl(args.accept!, secret, log, () => {
        if (again) process.stdout.write('LCOW template-ready\n');
      });
      conn.stream.once('close', () => {
        if (clone?.relistenOnClose) {
          log.info('control connection closed in template mode: listening again');
          void accept(true);
        } else void stop();
      });
      server.handleConnection(conn.stream);
      log.info('agent connected', { url: args.accept, pid: process.pid });
    };
    await accept(false);
    process.on('SIGTERM', () => void stop());
    return;
  }
  if (args.dial && secret) {
    // UVM, vsock/hvsock: the agent dials the host; one control connection, when it ends the VM ends.
    const conn = await dialControl(args.dial, secret, log);
    conn.stream.once('close', () => void stop());
    server.handleConnection(conn.stream);
    log.info('agent connected', { url: args.dial, pid: process.pid });
    process.on('SIGTERM', () => void stop());
    return;
  }
  await server.serve(args.listen!);
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  log.info('agent listening', { socket: args.listen, pid: process.pid });
  if (args.exitWithParent) {
    // A shim that dies before its first Create leaves an agent nobody recorded: it ends itself. With
    // containers, it stays (the shim's `delete` cleans up from the bundle's record).
    const parent = process.ppid;
    setInterval(() => {
      if (process.ppid !== parent && agent.containerCount === 0) void stop();
    }, 1000).unref();
  }
  if (args.readyFd !== undefined) {
    const w = createWriteStream('', { fd: args.readyFd });
    w.end('ready\n');
  }
}
