// The per-UVM secret under Hyper-V, where there is no fw_cfg: the host (the hcs backend) listens on a vsock port
// for exactly one connection before the VM starts and writes the 32-byte secret to it. Hyper-V lets only this VM
// reach that listener, and when the agent starts nothing but init runs in the VM; the listener is closed after
// the first connection, so a container cannot fetch it later.
import { closeSync } from 'node:fs';
import { SECRET_LENGTH } from '../transport/index.js';
import { connectRawFd, readRawFd } from '../transport/rawfd.js';

/** True for a secret source this module serves (`vsock://CID:PORT`), as opposed to a file path. */
export function isSecretUrl(source: string): boolean {
  return source.startsWith('vsock://');
}

/** Fetches the secret from `url`, retrying until `timeoutMs` (the host listens before the VM starts). */
export async function fetchSecret(url: string, timeoutMs = 30_000): Promise<Buffer> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const fd = await connectRawFd(url);
      try {
        const left = Math.max(1, deadline - Date.now());
        return await readRawFd(fd, SECRET_LENGTH, left, `${url} closed before the secret`);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      if (Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
