// `lcowctl prune [-n NS] [POD...] [--older-than DAYS]`: deletes the kept logs of stopped pods (all of them, the
// named ones, or those stopped more than DAYS ago). A running pod's logs are never touched.
import { rmSync } from 'node:fs';
import { CtlError, EXIT, parseArgs, positiveIntFlag } from './args.js';
import { discoverPods, stoppedAt } from './discover.js';
import type { Output } from './main.js';

export async function pruneCommand(argv: string[], out: Output): Promise<number> {
  const { common, flags, positional } = parseArgs(argv, ['older-than=']);
  const days = positiveIntFlag(flags, 'older-than');
  const pods = await discoverPods(common, { stopped: true });
  const wanted = (ns: string, id: string): boolean =>
    positional.length === 0 || positional.some((r) => r === id || r === `${ns}/${id}`);
  for (const r of positional) {
    const p = pods.find((e) => r === e.id || r === `${e.namespace}/${e.id}`);
    if (!p) throw new CtlError(`no pod ${JSON.stringify(r)}`, EXIT.notFound);
    if (p.status !== 'stopped')
      throw new CtlError(`pod ${p.namespace}/${p.id} is ${p.status}: its logs stay`, EXIT.refused);
  }
  const cutoff = days === undefined ? Infinity : Date.now() - days * 86_400_000;
  const removed: string[] = [];
  for (const p of pods) {
    if (p.status !== 'stopped' || !p.logDir || !wanted(p.namespace, p.id)) continue;
    if ((stoppedAt(p) ?? 0) > cutoff) continue;
    rmSync(p.logDir, { recursive: true, force: true });
    removed.push(`${p.namespace}/${p.id}`);
  }
  if (common.json) out.stdout(JSON.stringify({ removed }) + '\n');
  else out.stdout(removed.length ? removed.map((r) => `removed ${r}\n`).join('') : 'nothing to remove\n');
  return EXIT.ok;
}
