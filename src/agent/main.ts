// Agent process entry: flags, logging, ttrpc server, signals.
import { createWriteStream } from 'node:fs';
import { Agent } from './agent.js';
import { createAgentServer } from './server.js';
import { stderrLogger } from '../util/log.js';

export interface AgentArgs {
  stateDir: string;
  listen: string;
  readyFd?: number;
}

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
      default:
        throw new Error(`unknown flag ${flag}`);
    }
  }
  if (!out.stateDir || !out.listen) throw new Error('usage: lcow-agent --state-dir DIR --listen SOCKET [--ready-fd N]');
  return out as AgentArgs;
}

export async function main(argv: string[]): Promise<void> {
  const args = parseAgentArgs(argv);
  const log = stderrLogger({ component: 'agent' });
  const agent = new Agent({ stateDir: args.stateDir, logger: log });
  await agent.init();
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info('agent stopping');
    await agent.shutdown().catch(() => undefined);
    await server.close().catch(() => undefined);
    process.exit(0);
  };
  const server = createAgentServer(agent, log, () => void stop());
  await server.serve(args.listen);
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  log.info('agent listening', { socket: args.listen, pid: process.pid });
  if (args.readyFd !== undefined) {
    const w = createWriteStream('', { fd: args.readyFd });
    w.end('ready\n');
  }
}
