// UVM templates (Kata's VM factory, hcsshim's UVM clone): boot one UVM to agent-ready, quiesce it, save its
// device state with guest RAM in a file, and start each pod's UVM by restoring from that snapshot with the
// RAM file mapped private: a clone starts in a fraction of a second and shares the template's pages with
// every other clone (copy-on-write).
//
// On disk, under the template root (default /run/lcow/.templates when /run is tmpfs, else
// /dev/shm/lcow-templates): one directory per key = hash(guest image identity, kernel, memory, cpus,
// accelerator, QEMU binary, the command line's shape). Inside: `mem` (guest RAM, the template's
// memory-backend-file, share=on while it was built), `state` (QEMU's migration stream without RAM:
// x-ignore-shared), `meta.json` (written last: what was built from what, and checksums). A template whose
// meta does not match (damaged: state checksum, RAM file size or mtime; stale: another key) is rebuilt,
// never used. Concurrent shims build a template once: `<key>.lock` (flock). When the guest image changes,
// the key changes; older templates of the same size are removed (running clones keep their mapping).
//
// Quiescing: PrepareTemplate makes the agent unload the balloon driver (QEMU 7.2 discards reported pages by
// punching holes in the RAM *file*, which a clone must never do to the template) and, after the shim closes
// the control connection, listen again; the snapshot holds no open connection (slirp keeps no TCP state in
// the migration stream anyway). A clone is then a new machine: a fresh secret (fw_cfg is not migrated: the
// agent reads it at every handshake), its own hostfwd ports (its own slirp), a new vmgenid (the kernel
// reseeds), and AdoptClone sets the clock and reseeds again with the host's entropy.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, statfsSync, statSync, type Stats } from 'node:fs';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Agent as AgentDesc } from '../../gen/agent/v1/agent_pb.js';
import { dialTcpToken, fixedSecret, newSecret } from '../../transport/index.js';
import { TtrpcClient, createClient, type ServiceClient } from '../../ttrpc/index.js';
import type { Logger } from '../../util/log.js';
import { entryScript } from '../../util/install.js';
import { PRIVATE_FILE_MODE, mkdirPrivate, writePrivateFile } from '../../util/private-fs.js';
import { tryLockExclusive } from '../../util/syscalls.js';
import { qemuArgs, type Accel, type CommandLineInputs, type QemuConfig } from './config.js';
import { freePort } from './ports.js';
import { QmpClient } from './qmp.js';

/** Bumped whenever the layout or the build procedure changes: older templates are then stale. */
export const TEMPLATE_FORMAT = 1;
const TMPFS_MAGIC = 0x01021994;
const BUILD_TIMEOUT_MS = 240_000;

export interface TemplateSpec {
  cfg: QemuConfig;
  accel: Accel;
  cpus: number;
}

export interface Template {
  key: string;
  dir: string;
  memFile: string;
  stateFile: string;
  meta: TemplateMeta;
}

export interface TemplateMeta {
  format: number;
  key: string;
  /**
   * Templates of one guest image location and VM size share a family: a new key in the family (the image at that
   * place was rebuilt) replaces the old one; another install's templates are left alone.
   */
  family: string;
  inputs: Record<string, unknown>;
  memBytes: number;
  memMtimeMs: number;
  stateSha256: string;
  builtAt: string;
  buildMs: number;
}

/** Default root: the shim's state dir when it is tmpfs (guest RAM must not go to disk), else /dev/shm. */
export function templateRoot(cfg: QemuConfig): string {
  if (cfg.templateDir) return cfg.templateDir;
  try {
    // A dot name: never a containerd namespace (the shim's state is /run/lcow/<namespace>/<pod>).
    if (statfsSync('/run').type === TMPFS_MAGIC) return '/run/lcow/.templates';
  } catch {
    // no /run
  }
  return '/dev/shm/lcow-templates';
}

function fileIdentity(path: string): Record<string, unknown> {
  const s: Stats = statSync(path);
  return { path, dev: s.dev, ino: s.ino, size: s.size, mtimeMs: s.mtimeMs };
}

/** The guest image build's own input hash (hack/guest/build-image.sh), when the image came from there. */
function imageStamp(cfg: QemuConfig): string | undefined {
  try {
    return readFileSync(join(cfg.initrd, '..', '.image-stamp'), 'utf8').trim();
  } catch {
    return undefined;
  }
}

const PLACEHOLDER_INPUTS = { name: 'N', qmpSocket: 'Q', tokenFile: 'T', controlPort: 1, p9Port: 2 };

/**
 * The key: everything that makes a snapshot unusable for another VM. Files by identity (device, inode,
 * size, mtime: a rebuilt image is a new file) plus the image build's input hash; the command line with the
 * per-VM values replaced, so that any new device or flag gives a new key.
 */
export function templateKey(spec: TemplateSpec): { key: string; family: string; inputs: Record<string, unknown> } {
  const { cfg, accel, cpus } = spec;
  const binary = resolveBinary(cfg.binary);
  const inputs: Record<string, unknown> = {
    format: TEMPLATE_FORMAT,
    kernel: fileIdentity(cfg.kernel),
    initrd: fileIdentity(cfg.initrd),
    rootfs: cfg.rootfs ? fileIdentity(cfg.rootfs) : '',
    imageStamp: imageStamp(cfg),
    qemu: fileIdentity(binary),
    memoryMiB: cfg.memoryMiB,
    cpus,
    accel,
    args: qemuArgs(templateInputs(spec, PLACEHOLDER_INPUTS, { path: 'M', shared: true })),
  };
  const key = createHash('sha256').update(JSON.stringify(inputs)).digest('hex').slice(0, 32);
  const where = createHash('sha256')
    .update(resolve(dirname(cfg.initrd)))
    .digest('hex')
    .slice(0, 8);
  // The guest runtime is part of the family: pods of both runtimes on one host keep one template each.
  const family = `${accel}-${cfg.memoryMiB}m-${cpus}c-${cfg.guestRuntime}-${where}`;
  return { key, family, inputs };
}

function resolveBinary(bin: string): string {
  if (bin.includes('/')) return bin;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    try {
      if (statSync(join(dir, bin)).isFile()) return join(dir, bin);
    } catch {
      // not here
    }
  }
  throw new Error(`${bin} not found on PATH`);
}

type PerVm = Pick<CommandLineInputs, 'name' | 'qmpSocket' | 'tokenFile' | 'controlPort' | 'p9Port'>;

function templateInputs(spec: TemplateSpec, vm: PerVm, ramFile: { path: string; shared: boolean }): CommandLineInputs {
  return { cfg: spec.cfg, accel: spec.accel, cpus: spec.cpus, ...vm, ramFile, vmgenid: true };
}

/** argv of a clone: the template's command line, RAM mapped private, waiting for its device state. */
export function cloneArgs(spec: TemplateSpec, t: Template, vm: PerVm): string[] {
  return qemuArgs({ ...templateInputs(spec, vm, { path: t.memFile, shared: false }), incoming: true });
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** The template at `dir` if it is complete, built for `key` and undamaged; otherwise why not. */
export function checkTemplate(dir: string, key: string): Template | string {
  let meta: TemplateMeta;
  try {
    meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as TemplateMeta;
  } catch {
    return 'no meta.json';
  }
  if (meta.format !== TEMPLATE_FORMAT || meta.key !== key) return 'built for another key';
  const memFile = join(dir, 'mem');
  const stateFile = join(dir, 'state');
  try {
    const m = statSync(memFile);
    if (m.size !== meta.memBytes || m.mtimeMs !== meta.memMtimeMs) return 'RAM file changed since it was built';
    if (sha256File(stateFile) !== meta.stateSha256) return 'device state checksum mismatch';
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
  return { key, dir, memFile, stateFile, meta };
}

/** True when someone holds the build lock of `key` right now (a build is under way). */
function buildUnderWay(root: string, key: string): boolean {
  let fd: number;
  try {
    fd = openSync(join(root, `${key}.lock`), 'r');
  } catch {
    return false;
  }
  try {
    return !tryLockExclusive(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * What a pod's boot should do: restore from `template`; or boot cold while a builder runs in the
 * background (`missing`: none was under way, one is started now, detached, so that it outlives this
 * shim); or wait for the build under way and then restore (`building`).
 */
export function templateState(
  spec: TemplateSpec,
  log: Logger,
): { template: Template } | { building: true } | { started: boolean } {
  const root = templateRoot(spec.cfg);
  // Ours alone (0700, owned by us, no symlink): a template's RAM file is mapped into every clone, so anyone who
  // could write it could write into other pods' guests. A directory someone else made there is refused.
  mkdirPrivate(root);
  const { key } = templateKey(spec);
  const ok = checkTemplate(join(root, key), key);
  if (typeof ok !== 'string') return { template: ok };
  if (buildUnderWay(root, key)) return { building: true };
  return { started: startBackgroundBuild(spec, root, log) };
}

/** Niceness of the background template builder (the lowest priority). */
const BUILDER_NICE = 19;

/** `lcowctl template build` (detached, own session; spec on stdin, log in <root>/build.log). */
function startBackgroundBuild(spec: TemplateSpec, root: string, log: Logger): boolean {
  try {
    const lcowctl = entryScript('lcowctl');
    const logFd = openSync(join(root, 'build.log'), 'a', PRIVATE_FILE_MODE);
    const child = spawn(process.execPath, [lcowctl, 'template', 'build'], {
      detached: true,
      stdio: ['pipe', 'ignore', logFd],
    });
    closeSync(logFd);
    // The pod that found no template boots cold beside the builder: the builder (and the QEMU it starts,
    // which inherits the priority) yields the CPU to it.
    if (child.pid !== undefined) {
      try {
        setPriority(child.pid, BUILDER_NICE);
      } catch (err) {
        log.debug('cannot lower the template builder priority', { error: err });
      }
    }
    child.on('error', (err) => log.warn('cannot start the template builder', { error: err }));
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(JSON.stringify(spec));
    child.unref();
    log.info('UVM template missing: building it in the background; this pod boots cold', { builder: child.pid });
    return true;
  } catch (err) {
    log.warn('cannot start the template builder', { error: err });
    return false;
  }
}

async function withLock<T>(lockPath: string, timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  const fd = openSync(lockPath, 'a', PRIVATE_FILE_MODE);
  try {
    const deadline = Date.now() + timeoutMs;
    while (!tryLockExclusive(fd)) {
      if (Date.now() > deadline) throw new Error(`template lock ${lockPath} still held after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
    return await fn();
  } finally {
    closeSync(fd); // releases the flock
  }
}

/**
 * The template for `spec`, built first if missing, stale or damaged. Concurrent callers (shims of other
 * pods) wait on the lock and then find it built.
 */
export async function ensureTemplate(
  spec: TemplateSpec,
  log: Logger,
  opts: { lockWaitMs?: number } = {},
): Promise<{ template: Template; built: boolean }> {
  const root = templateRoot(spec.cfg);
  if (root.includes(',')) throw new Error(`template dir ${root} must not contain a comma (QEMU option syntax)`);
  mkdirPrivate(root);
  const { key, family, inputs } = templateKey(spec);
  const dir = join(root, key);
  const ok = checkTemplate(dir, key);
  if (typeof ok !== 'string') return { template: ok, built: false };
  return withLock(join(root, `${key}.lock`), opts.lockWaitMs ?? BUILD_TIMEOUT_MS + 30_000, async () => {
    const again = checkTemplate(dir, key);
    if (typeof again !== 'string') return { template: again, built: false };
    log.info('building UVM template', { key, family, why: again, dir });
    const template = await buildTemplate(spec, dir, key, family, inputs, log);
    await removeOtherTemplates(root, family, key, log);
    return { template, built: true };
  });
}

/** Drops templates of the same family built from other inputs (an older guest image). */
async function removeOtherTemplates(root: string, family: string, keep: string, log: Logger): Promise<void> {
  for (const name of await readdir(root).catch(() => [] as string[])) {
    if (name === keep || name.endsWith('.lock') || !/^[0-9a-f]{32}$/.test(name)) continue;
    try {
      const meta = JSON.parse(await readFile(join(root, name, 'meta.json'), 'utf8')) as TemplateMeta;
      if (meta.family !== family) continue;
    } catch {
      continue; // being built by someone else, or not ours
    }
    log.info('removing a stale UVM template', { key: name });
    await rm(join(root, name), { recursive: true, force: true });
    await rm(join(root, `${name}.lock`), { force: true });
  }
}

/** Removes a template that failed to restore (it will be rebuilt by the next pod). */
export async function discardTemplate(t: Template, log: Logger, why: string): Promise<void> {
  log.warn('discarding UVM template', { key: t.key, why });
  await rm(t.dir, { recursive: true, force: true });
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function pollMigration(qmp: QmpClient, deadline: number, what: string): Promise<void> {
  for (;;) {
    const r = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
    if (r.status === 'completed') return;
    if (r.status === 'failed' || r.status === 'cancelled')
      throw new Error(`${what}: migration ${r.status}${r['error-desc'] ? `: ${r['error-desc']}` : ''}`);
    if (Date.now() > deadline) throw new Error(`${what}: migration not done in time (${r.status ?? 'no status'})`);
    await new Promise((r2) => setTimeout(r2, 20));
  }
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function buildTemplate(
  spec: TemplateSpec,
  dir: string,
  key: string,
  family: string,
  inputs: Record<string, unknown>,
  log: Logger,
): Promise<Template> {
  const t0 = Date.now();
  const deadline = t0 + BUILD_TIMEOUT_MS;
  await rm(dir, { recursive: true, force: true });
  mkdirPrivate(dir);
  const tokenFile = join(dir, 'token');
  const qmpSocket = join(dir, 'qmp.sock');
  const memFile = join(dir, 'mem');
  const stateFile = join(dir, 'state');
  const secret = newSecret();
  writePrivateFile(tokenFile, secret);
  const ports = { control: await freePort(), p9: await freePort() };
  const args = qemuArgs(
    templateInputs(
      spec,
      {
        name: `lcow-template-${key.slice(0, 12)}`,
        qmpSocket,
        tokenFile,
        controlPort: ports.control,
        p9Port: ports.p9,
      },
      { path: memFile, shared: true },
    ),
  );
  // --pdeathsig: the template VM dies with its builder (a killed builder leaves no VM running).
  const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', spec.cfg.binary, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const tail: string[] = [];
  let exited = false;
  child.once('exit', () => (exited = true));
  child.once('error', () => (exited = true));
  let templateReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (templateReady = r));
  const onLine = (line: string): void => {
    tail.push(line);
    if (tail.length > 40) tail.shift();
    if (line.includes('LCOW template-ready')) templateReady();
    log.debug('template uvm', { line });
  };
  createInterface({ input: child.stdout! }).on('line', onLine);
  createInterface({ input: child.stderr! }).on('line', onLine);
  let client: TtrpcClient | undefined;
  let qmp: QmpClient | undefined;
  try {
    const conn = await dialTcpToken('127.0.0.1', ports.control, {
      secret: fixedSecret(secret),
      purpose: { kind: 'control' },
      timeoutMs: Math.max(1, deadline - Date.now()),
      attemptTimeoutMs: 3000,
      abort: () => (exited ? `QEMU exited:\n${tail.join('\n')}` : undefined),
    });
    client = new TtrpcClient(conn.stream, { logger: log });
    const agent = createClient(AgentDesc, client);
    await agent.getInfo({}, { timeoutMs: 30_000 });
    const booted = Date.now() - t0;
    await agent.prepareTemplate({}, { timeoutMs: 30_000 });
    client.close();
    client = undefined;
    await Promise.race([
      ready,
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error('the agent did not listen again after PrepareTemplate')), 30_000),
      ),
    ]);
    qmp = await QmpClient.connect(qmpSocket, 10_000);
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('stop');
    await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(stateFile)}` });
    await pollMigration(qmp, deadline, 'template save');
    // QEMU may close QMP before it answers `quit`; the exit (or SIGKILL) below is what counts.
    await qmp.execute('quit').catch((err: unknown) => log.debug('template save: QMP quit', { error: err }));
    if (!(await waitExit(child, 10_000))) child.kill('SIGKILL');
    await rm(tokenFile, { force: true });
    await rm(qmpSocket, { force: true });
    const m = await stat(memFile);
    const meta: TemplateMeta = {
      format: TEMPLATE_FORMAT,
      key,
      family,
      inputs,
      memBytes: m.size,
      memMtimeMs: m.mtimeMs,
      stateSha256: sha256File(stateFile),
      builtAt: new Date().toISOString(),
      buildMs: Date.now() - t0,
    };
    writePrivateFile(join(dir, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
    log.info('UVM template built', {
      key,
      bootMs: booted,
      buildMs: meta.buildMs,
      stateBytes: statSync(stateFile).size,
    });
    return { key, dir, memFile, stateFile, meta };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  } finally {
    client?.close();
    qmp?.close();
    if (!exited) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
  }
}

/**
 * Restores a clone started with cloneArgs(): feeds the template's device state through QMP, then runs it.
 * Returns the QMP connection (QEMU accepts one client; the sandbox keeps it).
 */
export async function restoreClone(qmpSocket: string, t: Template, timeoutMs: number): Promise<QmpClient> {
  const deadline = Date.now() + timeoutMs;
  const qmp = await QmpClient.connect(qmpSocket, Math.min(timeoutMs, 10_000));
  try {
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(t.stateFile)}` });
    await pollMigration(qmp, deadline, 'clone restore');
    // The template was saved paused: the clone stays paused until told to run.
    await qmp.execute('cont');
    return qmp;
  } catch (err) {
    qmp.close();
    throw err;
  }
}

/** The clone's first RPC: the host's clock and fresh entropy (see AdoptClone in the agent API). */
export async function adoptClone(
  agent: ServiceClient<(typeof AgentDesc)['method']>,
): Promise<{ bootId: string; clockStepMs: number }> {
  const r = await agent.adoptClone(
    { now: timestampFromMs(Date.now()), entropy: randomBytes(64) },
    { timeoutMs: 30_000 },
  );
  return { bootId: r.bootId, clockStepMs: Number(r.clockStepMs) };
}
