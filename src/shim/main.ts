// containerd-shim-lcow-v1 entry: Go-style flags, then the action.
import { fileURLToPath } from 'node:url';
import { deleteAction } from './delete.js';
import { parseFlags } from './flags.js';
import { serveAction } from './serve.js';
import { startAction } from './start.js';
import { SHIM_VERSION } from '../task/service.js';

export async function main(argv: string[], entryUrl: string): Promise<void> {
  const flags = parseFlags(argv);
  if (flags.version) {
    process.stdout.write(`containerd-shim-lcow-v1\n  Version: ${SHIM_VERSION}\n`);
    return;
  }
  switch (flags.action) {
    case 'start': {
      const address = await startAction(flags, fileURLToPath(entryUrl));
      process.stdout.write(address);
      process.exit(0);
      break;
    }
    case 'delete': {
      const out = await deleteAction(flags);
      process.stdout.write(out, () => process.exit(0));
      break;
    }
    case 'serve':
      await serveAction(flags);
      break;
    default:
      throw new Error(`unknown action ${JSON.stringify(flags.action)}: want start, delete or serve`);
  }
}
