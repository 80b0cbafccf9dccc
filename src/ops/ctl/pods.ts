// `lcowctl pods` and `lcowctl ps POD`.
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { toJson } from '@bufbuild/protobuf';
import { PodInfoSchema } from '../../gen/admin/v1/admin_pb.js';
import { parseArgs, usageError, EXIT } from './args.js';
import { discoverPods, resolvePod, stoppedAt, withAdmin } from './discover.js';
import { bytes, duration, table } from './format.js';
import type { Output } from './main.js';

export async function podsCommand(argv: string[], out: Output): Promise<number> {
  const { common, flags, positional } = parseArgs(argv, ['all'], { a: 'all' });
  if (positional.length) throw usageError(`pods takes no arguments (got ${positional.join(' ')})`);
  const pods = await discoverPods(common, { stopped: flags.all === true });
  const now = Date.now();
  if (common.json) {
    out.stdout(
      JSON.stringify(
        pods.map((p) => ({
          namespace: p.namespace,
          id: p.id,
          status: p.status,
          info: p.info ? toJson(PodInfoSchema, p.info) : undefined,
          logDir: p.logDir,
          stoppedAt: p.status === 'stopped' ? new Date(stoppedAt(p) ?? 0).toISOString() : undefined,
          exit: p.status === 'stopped' ? p.meta?.exit : undefined,
          error: p.error,
        })),
        null,
        2,
      ) + '\n',
    );
    return EXIT.ok;
  }
  const rows = pods.map((p) => {
    const i = p.info;
    if (i) {
      const up = i.startedAt ? duration(now - timestampDate(i.startedAt).getTime()) : '-';
      const running = i.containers.filter((c) => ['running', 'paused'].includes(c.processes[0]?.state ?? '')).length;
      return [
        i.id,
        i.namespace,
        i.backend,
        i.transport || '-',
        i.state,
        up,
        bytes(i.memoryBytes),
        `${running}/${i.containers.length}`,
      ];
    }
    const ended = p.meta?.exit?.kind === 'crashed' ? 'crashed' : p.status;
    const since = stoppedAt(p);
    return [
      p.id,
      p.namespace,
      p.meta?.backend ?? '-',
      '-',
      ended,
      since ? `${duration(now - since)} ago` : '-',
      '-',
      '-',
    ];
  });
  out.stdout(table(['POD', 'NAMESPACE', 'BACKEND', 'TRANSPORT', 'STATE', 'UPTIME', 'MEMORY', 'CONTAINERS'], rows));
  for (const p of pods) if (p.error) out.stderr(`lcowctl: ${p.namespace}/${p.id}: ${p.error}\n`);
  return EXIT.ok;
}

export async function psCommand(argv: string[], out: Output): Promise<number> {
  const { common, positional } = parseArgs(argv);
  if (positional.length !== 1) throw usageError('usage: lcowctl ps POD');
  const pod = await resolvePod(common, positional[0], { stopped: false });
  const info = await withAdmin(pod, (a) => a.info({}, { timeoutMs: 10_000 }));
  if (common.json) {
    const json = toJson(PodInfoSchema, info) as { containers?: unknown[] };
    out.stdout(JSON.stringify(json.containers ?? [], null, 2) + '\n');
    return EXIT.ok;
  }
  const rows: string[][] = [];
  for (const c of info.containers)
    for (const p of c.processes)
      rows.push([
        c.id,
        p.execId || '(init)',
        String(p.pid || '-'),
        p.state,
        p.state === 'exited' ? String(p.exitStatus) : '',
        p.exitedAt ? timestampDate(p.exitedAt).toISOString() : '',
      ]);
  out.stdout(table(['CONTAINER', 'EXEC', 'PID', 'STATE', 'EXIT', 'EXITED AT'], rows));
  return EXIT.ok;
}
