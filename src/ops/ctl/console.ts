// `lcowctl console POD [--follow] [--agent] [--lines N]`: the guest console (or the agent's log) kept in the
// pod's log dir; works after the pod is gone. --follow waits for new lines (across rotations) until the pod
// stops or the command is interrupted.
import { closeSync, existsSync, fstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_LOG, CONSOLE_LOG } from '../config.js';
import { readPodMeta } from '../pod-logs.js';
import { CtlError, EXIT, parseArgs, positiveIntFlag, usageError } from './args.js';
import { resolvePod } from './discover.js';
import type { Output } from './main.js';

/** A log's files oldest first: NAME.N ... NAME.1, NAME. */
export function logFiles(dir: string, name: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const rotated = names
    .map((n) => ({ n, m: new RegExp(`^${name.replace('.', '\\.')}\\.(\\d+)$`).exec(n) }))
    .filter((e) => e.m)
    .sort((a, b) => Number(b.m![1]) - Number(a.m![1]))
    .map((e) => join(dir, e.n));
  return existsSync(join(dir, name)) ? [...rotated, join(dir, name)] : rotated;
}

function readFrom(path: string, offset: number): { data: Buffer; size: number; ino: number } {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    const start = offset > st.size ? 0 : offset;
    const data = Buffer.alloc(st.size - start);
    let got = 0;
    while (got < data.length) {
      const n = readSync(fd, data, got, data.length - got, start + got);
      if (n === 0) break;
      got += n;
    }
    return { data: data.subarray(0, got), size: start + got, ino: st.ino };
  } finally {
    closeSync(fd);
  }
}

export async function consoleCommand(argv: string[], out: Output, signal?: AbortSignal): Promise<number> {
  const { common, flags, positional } = parseArgs(argv, ['follow', 'agent', 'lines='], { f: 'follow' });
  if (positional.length !== 1) throw usageError('usage: lcowctl console POD [--follow] [--agent] [--lines N]');
  const lines = positiveIntFlag(flags, 'lines');
  const pod = await resolvePod(common, positional[0], { stopped: true });
  const dir = pod.logDir;
  const name = flags.agent ? AGENT_LOG : CONSOLE_LOG;
  if (!dir || !existsSync(dir)) throw new CtlError(`pod ${pod.namespace}/${pod.id} kept no logs`, EXIT.notFound);
  const files = logFiles(dir, name);
  if (files.length === 0) {
    const why =
      name === CONSOLE_LOG && pod.meta?.backend === 'process'
        ? ' (the process backend has no guest console: try --agent)'
        : '';
    throw new CtlError(`no ${name} for pod ${pod.namespace}/${pod.id}${why}`, EXIT.notFound);
  }
  let text = Buffer.concat(files.map((f) => readFrom(f, 0).data)).toString('utf8');
  if (lines !== undefined) {
    const all = text.split('\n');
    if (all.at(-1) === '') all.pop();
    text = all.slice(-lines).join('\n') + (all.length ? '\n' : '');
  }
  out.stdout(text);
  if (!flags.follow) return EXIT.ok;

  const current = join(dir, name);
  let pos = existsSync(current) ? statSync(current).size : 0;
  let ino = existsSync(current) ? statSync(current).ino : 0;
  for (;;) {
    if (signal?.aborted) return EXIT.ok;
    await new Promise<void>((r) => {
      const t = setTimeout(r, 250);
      signal?.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
    });
    if (!existsSync(current)) continue;
    const st = statSync(current);
    if (st.ino !== ino) {
      // Rotated: the rest of the old file is now NAME.1.
      const old = join(dir, `${name}.1`);
      if (existsSync(old) && statSync(old).ino === ino) out.stdout(readFrom(old, pos).data.toString('utf8'));
      ino = st.ino;
      pos = 0;
    }
    if (st.size !== pos) {
      const r = readFrom(current, pos);
      pos = r.size;
      if (r.data.length) out.stdout(r.data.toString('utf8'));
    }
    const meta = readPodMeta(dir);
    if (meta?.stoppedAt && statSync(current).size === pos) {
      out.stderr(`lcowctl: pod ${pod.namespace}/${pod.id} stopped\n`);
      return EXIT.ok;
    }
  }
}
