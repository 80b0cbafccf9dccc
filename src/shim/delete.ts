// `delete`: runs on every ttrpc client close and when containerd gives up on a shim. Idempotent, per id.
// When the serving shim is alive it only makes sure this container is gone; when it is dead it tears the
// whole sandbox down from the record in the bundle. Prints only a marshalled DeleteResponse.
import { spawn } from 'node:child_process';
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { DeleteResponseSchema } from '../gen/containerd/task/v2/shim_pb.js';
import { cleanupSandboxRecord, type SandboxRecord } from '../sandbox/index.js';
import { SANDBOX_RECORD_FILE } from '../task/service.js';
import type { ShimFlags } from './flags.js';

interface BundleRecord {
  shimPid: number;
  namespace: string;
  pod: string;
  owner: boolean;
  sandbox: SandboxRecord;
}

async function shimAlive(pid: number): Promise<boolean> {
  if (!pid || pid === process.pid) return false;
  try {
    const cmd = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('containerd-shim-lcow');
  } catch {
    return false;
  }
}

function runcDelete(root: string, id: string): Promise<void> {
  return new Promise((resolve) => {
    const c = spawn('runc', ['--root', root, 'delete', '--force', id], { stdio: 'ignore' });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
}

export async function deleteAction(flags: ShimFlags): Promise<Uint8Array> {
  const bundle = flags.bundle || process.cwd();
  let status = 255;
  let rec: BundleRecord | undefined;
  try {
    rec = JSON.parse(await readFile(join(bundle, SANDBOX_RECORD_FILE), 'utf8')) as BundleRecord;
  } catch {
    rec = undefined;
  }
  if (rec) {
    status = 137;
    if (await shimAlive(rec.shimPid)) {
      if (rec.sandbox.backend === 'process') await runcDelete(join(rec.sandbox.stateDir, 'runc'), flags.id);
    } else {
      // The serving shim is dead: its socket file stays behind unless we remove it.
      try {
        const address = (await readFile(join(bundle, 'address'), 'utf8')).trim();
        if (address.startsWith('unix:///run/containerd/s/')) await unlink(address.slice('unix://'.length));
      } catch {
        // no address or already gone
      }
      await cleanupSandboxRecord(rec.sandbox).catch((err: unknown) => {
        process.stderr.write(`sandbox cleanup: ${String(err)}\n`);
      });
    }
  }
  return toBinary(
    DeleteResponseSchema,
    create(DeleteResponseSchema, { pid: 0, exitStatus: status, exitedAt: timestampNow() }),
  );
}
