// The agent's side of UVM templates (src/sandbox/qemu/template.ts on the host). A template is one booted UVM
// saved to disk; every pod's UVM is restored from it, so every clone starts with the same memory: the same
// kernel RNG state, the same clock, the same agent. Before the snapshot the agent prepares (prepareTemplate);
// on each clone, the first RPC makes it a new machine (adoptClone).
import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { copyFile, mkdir, rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { reseedKernelRng, setRealtimeClock } from './sys.js';
import type { Agent } from './agent.js';
import type { Logger } from '../util/log.js';

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
export async function prepareTemplate(
  state: CloneState,
  agent: Pick<Agent, 'containerCount' | 'createContainer' | 'startProcess' | 'waitProcess' | 'deleteContainer'>,
  opts: { warmDir?: string; log?: Logger } = {},
): Promise<void> {
  if (agent.containerCount > 0) throw new Error('a template must be taken before any container runs');
  // Run one throwaway container through the agent's own path, so that what every pod runs first is warm in the
  // template's RAM, shared by every clone: the OCI runtime's binary and libraries in the page cache (else each
  // clone reads them from the root image), the agent's container code compiled to bytecode, the kernel's caches.
  // (TCG's translated code is not part of a snapshot: each clone translates what it runs again.)
  // A failed warm-up costs the clones time, not correctness: the template is taken anyway.
  await warmContainerPath(agent, opts.warmDir ?? '/run/lcow/template-warm').catch((err: unknown) =>
    opts.log?.warn('template warm-up container failed', { error: err }),
  );
  // Page reporting batches every 2 s (PAGE_REPORTING_DELAY); give it two rounds.
  await sleep(4500);
  await run('rmmod', ['virtio_balloon']);
  await run('sync', []);
  state.relistenOnClose = true;
}

export const WARM_CONTAINER_ID = 'lcow-template-warm';

/** The OCI spec of the warm-up container: `true` from busybox, with the namespaces and mounts of a pod. */
export function warmSpec(rootfs: string): Record<string, unknown> {
  return {
    ociVersion: '1.0.2',
    process: {
      args: ['/bin/true'],
      cwd: '/',
      env: ['PATH=/bin'],
      user: { uid: 0, gid: 0 },
      noNewPrivileges: true,
      capabilities: { bounding: ['CAP_KILL'], effective: ['CAP_KILL'], permitted: ['CAP_KILL'] },
    },
    root: { path: rootfs, readonly: true },
    hostname: 'warm',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    ],
    linux: {
      cgroupsPath: `/${WARM_CONTAINER_ID}`,
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      maskedPaths: ['/proc/kcore', '/proc/keys'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/** Creates, starts, waits for and deletes one container whose rootfs is busybox in a tmpfs directory. */
export async function warmContainerPath(
  agent: Pick<Agent, 'createContainer' | 'startProcess' | 'waitProcess' | 'deleteContainer'>,
  dir: string,
  busybox = '/bin/busybox',
): Promise<void> {
  const rootfs = join(dir, 'rootfs');
  await rm(dir, { recursive: true, force: true });
  await mkdir(join(rootfs, 'bin'), { recursive: true });
  try {
    for (const d of ['proc', 'dev', 'sys']) await mkdir(join(rootfs, d));
    await copyFile(busybox, join(rootfs, 'bin', 'busybox'));
    await symlink('busybox', join(rootfs, 'bin', 'true'));
    const spec = Buffer.from(JSON.stringify(warmSpec(rootfs)));
    await agent.createContainer({
      containerId: WARM_CONTAINER_ID,
      specJson: spec,
      rootfs: [],
      stdio: { terminal: false, stdin: false, stdout: false, stderr: false },
      bundle: join(dir, 'bundle'),
    });
    try {
      await agent.startProcess(WARM_CONTAINER_ID, '');
      const exit = await agent.waitProcess(WARM_CONTAINER_ID, '');
      if (exit.status !== 0) throw new Error(`the warm-up container exited with ${exit.status}`);
    } finally {
      await agent.deleteContainer(WARM_CONTAINER_ID);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
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
