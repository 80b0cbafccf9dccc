// Finding pods: live ones by their shim's admin socket (<state root>/<ns>/<pod>/admin.sock, asked for its
// Info), stopped ones by the logs they left (<log root>/<ns>/<pod>/pod.json).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Admin, type PodInfo } from '../../gen/admin/v1/admin_pb.js';
import { createClient, TtrpcClient, TtrpcError, Code, type ServiceClient } from '../../ttrpc/index.js';
import { ADMIN_SOCKET, isSafeId } from '../config.js';
import { readPodMeta, stoppedTime } from '../pod-logs.js';
import type { PodMeta } from '../config.js';
import { CtlError, EXIT, type CommonOptions } from './args.js';

export type AdminClient = ServiceClient<(typeof Admin)['method']>;

export interface PodEntry {
  namespace: string;
  id: string;
  /** live: its shim answered; unreachable: a socket nobody answers on; stopped: only its logs remain. */
  status: 'live' | 'unreachable' | 'stopped';
  socket?: string;
  info?: PodInfo;
  /** Where its logs are (from Info, or the log root). */
  logDir?: string;
  meta?: PodMeta;
  error?: string;
}

const CONNECT_TIMEOUT_MS = 3000;

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir).filter((n) => isSafeId(n) && statSync(join(dir, n)).isDirectory());
  } catch {
    return [];
  }
}

/** Connects to a pod's admin socket; the caller closes the client. */
export async function connectAdmin(socket: string): Promise<{ client: TtrpcClient; admin: AdminClient }> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const client = await Promise.race([
      TtrpcClient.connect(socket),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('connect timed out')), CONNECT_TIMEOUT_MS);
      }),
    ]);
    return { client, admin: createClient(Admin, client) };
  } finally {
    clearTimeout(timer);
  }
}

async function askInfo(socket: string): Promise<PodInfo> {
  const { client, admin } = await connectAdmin(socket);
  try {
    return await admin.info({}, { timeoutMs: CONNECT_TIMEOUT_MS });
  } finally {
    client.close();
  }
}

/** Every pod under the roots (live first), optionally of one namespace; stopped ones only with `stopped`. */
export async function discoverPods(common: CommonOptions, opts: { stopped: boolean }): Promise<PodEntry[]> {
  const out: PodEntry[] = [];
  const seen = new Set<string>();
  const namespaces = (root: string): string[] =>
    common.namespace !== undefined
      ? existsSync(join(root, common.namespace))
        ? [common.namespace]
        : []
      : subdirs(root);
  const asks: Array<Promise<void>> = [];
  for (const ns of namespaces(common.stateRoot)) {
    for (const id of subdirs(join(common.stateRoot, ns))) {
      const socket = join(common.stateRoot, ns, id, ADMIN_SOCKET);
      if (!existsSync(socket)) continue;
      const e: PodEntry = { namespace: ns, id, status: 'live', socket };
      out.push(e);
      seen.add(`${ns}/${id}`);
      asks.push(
        askInfo(socket).then(
          (info) => {
            e.info = info;
            e.logDir = info.logDir;
          },
          (err: unknown) => {
            e.status = 'unreachable';
            e.error = err instanceof Error ? err.message : String(err);
          },
        ),
      );
    }
  }
  await Promise.all(asks);
  for (const ns of namespaces(common.logRoot)) {
    for (const id of subdirs(join(common.logRoot, ns))) {
      const dir = join(common.logRoot, ns, id);
      const meta = readPodMeta(dir);
      if (!meta) continue;
      const live = out.find((e) => e.namespace === ns && e.id === id);
      if (live) {
        live.meta = meta;
        live.logDir ??= dir;
        continue;
      }
      if (!opts.stopped || seen.has(`${ns}/${id}`)) continue;
      // Logs of a pod whose shim still runs but has no admin socket (just starting, or its state dir is gone).
      if (stoppedTime(dir, meta) === undefined)
        out.push({ namespace: ns, id, status: 'unreachable', logDir: dir, meta, error: 'no admin socket' });
      else out.push({ namespace: ns, id, status: 'stopped', logDir: dir, meta });
    }
  }
  return out;
}

/**
 * The pod named by `ref` (POD or NAMESPACE/POD; a unique prefix of the id will do). `live` pods only, unless
 * stopped ones are acceptable (console).
 */
export async function resolvePod(
  common: CommonOptions,
  ref: string | undefined,
  opts: { stopped: boolean },
): Promise<PodEntry> {
  if (!ref) throw new CtlError('name a pod (lcowctl pods lists them)', EXIT.usage);
  const slash = ref.indexOf('/');
  const scoped = slash > 0 ? { ...common, namespace: ref.slice(0, slash) } : common;
  const id = slash > 0 ? ref.slice(slash + 1) : ref;
  const all = await discoverPods(scoped, { stopped: opts.stopped });
  let matches = all.filter((p) => p.id === id);
  if (matches.length === 0) matches = all.filter((p) => p.id.startsWith(id));
  if (matches.length === 0) {
    const hint = opts.stopped ? '' : ' (running pods only; `lcowctl pods --all` lists stopped ones too)';
    throw new CtlError(`no pod ${JSON.stringify(ref)}${hint}`, EXIT.notFound);
  }
  if (matches.length > 1)
    throw new CtlError(
      `${JSON.stringify(ref)} names ${matches.length} pods: ${matches.map((p) => `${p.namespace}/${p.id}`).join(', ')}`,
      EXIT.usage,
    );
  const pod = matches[0]!;
  if (!opts.stopped && pod.status !== 'live')
    throw new CtlError(
      `pod ${pod.namespace}/${pod.id} is ${pod.status}${pod.error ? `: ${pod.error}` : ''}`,
      EXIT.failed,
    );
  return pod;
}

/** Runs `fn` with a connected admin client of a live pod; maps ttrpc errors to exit codes. */
export async function withAdmin<T>(pod: PodEntry, fn: (admin: AdminClient) => Promise<T>): Promise<T> {
  if (!pod.socket) throw new CtlError(`pod ${pod.namespace}/${pod.id} is not running`, EXIT.failed);
  let conn: { client: TtrpcClient; admin: AdminClient };
  try {
    conn = await connectAdmin(pod.socket);
  } catch (err) {
    throw new CtlError(`cannot reach the shim of pod ${pod.namespace}/${pod.id}: ${(err as Error).message}`);
  }
  try {
    return await fn(conn.admin);
  } catch (err) {
    if (err instanceof TtrpcError) {
      const code =
        err.code === Code.PERMISSION_DENIED ? EXIT.refused : err.code === Code.NOT_FOUND ? EXIT.notFound : EXIT.failed;
      throw new CtlError(err.message, code);
    }
    throw err;
  } finally {
    conn.client.close();
  }
}

/** When a stopped pod's logs stopped (ms since the epoch), for listings. */
export function stoppedAt(p: PodEntry): number | undefined {
  return p.meta && p.logDir ? stoppedTime(p.logDir, p.meta) : undefined;
}
