// The agent's side of UVM templates (src/sandbox/qemu/template.ts on the host). A template is one booted UVM
// saved to disk; every pod's UVM is restored from it, so every clone starts with the same memory: the same
// kernel RNG state, the same clock, the same agent. Before the snapshot the agent prepares (prepareTemplate);
// on each clone, the first RPC makes it a new machine (adoptClone).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { reseedKernelRng, setRealtimeClock } from './sys.js';

export const BOOT_ID_PATH = '/proc/sys/kernel/random/boot_id';
const MIN_ENTROPY = 32;
const MAX_ENTROPY = 512;

/** Template mode: the control connection's close means "snapshot taken, wait for the clone's shim", not "exit". */
export class CloneState {
  relistenOnClose = false;
  adopted = false;
}

function run(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: 'ignore' });
    c.on('error', () => resolve(-1));
    c.on('close', (code) => resolve(code ?? -1));
  });
}

/**
 * Before the snapshot: let the balloon report what the boot freed (QEMU drops those pages from the template's
 * RAM file), then unload the balloon driver. A clone maps the template's RAM file privately, but QEMU 7.2
 * discards reported pages with fallocate(PUNCH_HOLE) on the file itself: a clone's report would punch holes
 * in the template under every other clone. Without the driver, clones never report.
 */
export async function prepareTemplate(state: CloneState, hasContainers: boolean): Promise<void> {
  if (hasContainers) throw new Error('a template must be taken before any container runs');
  // Warm the guest page cache with what every pod runs first (runc and its libraries): pages cached here are
  // in the template's RAM, shared by every clone, instead of read from the root image by each one.
  await run('runc', ['--version']);
  // Page reporting batches every 2 s (PAGE_REPORTING_DELAY); give it two rounds.
  await sleep(4500);
  await run('rmmod', ['virtio_balloon']);
  await run('sync', []);
  state.relistenOnClose = true;
}

export interface AdoptResult {
  bootId: string;
  clockStepMs: number;
}

/**
 * On a clone: set the wall clock to the host's, mix the host's entropy into the kernel's input pool and reseed
 * the CRNG now (vmgenid already made the kernel reseed at restore; this does not rely on it), end template
 * mode. boot_id is read here for the first time in this machine's life (the kernel makes it lazily, after
 * the reseed), so it differs between clones.
 */
export function adoptClone(state: CloneState, nowMs: number, entropy: Uint8Array): AdoptResult {
  if (entropy.length < MIN_ENTROPY || entropy.length > MAX_ENTROPY)
    throw new Error(`entropy must be ${MIN_ENTROPY}..${MAX_ENTROPY} bytes`);
  if (!Number.isFinite(nowMs) || nowMs <= 0) throw new Error('invalid time');
  const step = nowMs - Date.now();
  setRealtimeClock(nowMs);
  const fd = openSync('/dev/urandom', 'w');
  try {
    writeSync(fd, entropy);
    reseedKernelRng(fd);
  } finally {
    closeSync(fd);
  }
  state.relistenOnClose = false;
  state.adopted = true;
  return { bootId: readFileSync(BOOT_ID_PATH, 'utf8').trim(), clockStepMs: Math.round(step) };
}
