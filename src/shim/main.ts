// containerd-shim-lcow-v1 entry: Go-style flags, then the action.
// Each action imports only what it needs: `start` and `delete` run once per container on containerd's
// critical path, so they must not load the Task service, protobuf or the sandbox backends.
import { fileURLToPath } from 'node:url';
import { parseFlags } from './flags.js';
import { SHIM_VERSION, stateRootFor } from '../task/record.js';

export async function main(argv: string[], entryUrl: string): Promise<void> {
  const flags = parseFlags(argv);
  if (flags.version) {
    process.stdout.write(`containerd-shim-lcow-v1\n  Version: ${SHIM_VERSION}\n`);
    return;
  }
  switch (flags.action) {
    case 'start': {
      const { startAction } = await import('./start.js');
      const address = await startAction(flags, fileURLToPath(entryUrl));
      process.stdout.write(address);
      process.exit(0);
      break;
    }
    case 'delete': {
      const { deleteAction } = await import('./delete.js');
      const out = await deleteAction(flags);
      process.stdout.write(out, () => process.exit(0));
      break;
    }
    case 'serve': {
      // Process backend: start the agent now, so its start-up overlaps this daemon's module loading.
      const group = process.env.LCOW_SHIM_GROUP ?? '';
      delete process.env.LCOW_SHIM_GROUP;
      const idRe = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
      if (process.env.LCOW_SANDBOX?.trim() === 'process' && idRe.test(group) && idRe.test(flags.namespace)) {
        const { prespawnAgent } = await import('../sandbox/index.js');
        await prespawnAgent('process', `${stateRootFor(flags.namespace)}/${group}`);
      }
      await (await import('./serve.js')).serveAction(flags);
      break;
    }
    default:
      throw new Error(`unknown action ${JSON.stringify(flags.action)}: want start, delete or serve`);
  }
}
