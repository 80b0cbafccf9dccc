// `lcowctl template`: the background template builder the shim starts (build), and admin commands.
//   lcowctl template build            spec (JSON TemplateSpec) on stdin; builds unless built (flock'd)
//   lcowctl template ls [DIR]         templates and their metadata
//   lcowctl template rm [DIR]         removes every template (running clones keep their RAM mapping)
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { stderrLogger } from '../../util/log.js';
import { qemuConfig } from './config.js';
import { ensureTemplate, templateRoot, type TemplateSpec } from './template.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, dirArg] = argv;
  const root = dirArg ?? templateRoot(qemuConfig({}, {}));
  switch (cmd) {
    case 'build': {
      const spec = JSON.parse(await readStdin()) as TemplateSpec;
      const log = stderrLogger({ component: 'template-builder', pid: process.pid });
      const r = await ensureTemplate(spec, log);
      log.info(r.built ? 'built' : 'already built', { key: r.template.key });
      return 0;
    }
    case 'ls':
      for (const name of readdirSync(root).filter((n) => /^[0-9a-f]{32}$/.test(n))) {
        let meta = 'incomplete';
        try {
          const m = JSON.parse(readFileSync(join(root, name, 'meta.json'), 'utf8')) as Record<string, unknown>;
          meta = `${String(m.family)} built ${String(m.builtAt)} in ${String(m.buildMs)} ms`;
        } catch {
          // no meta
        }
        process.stdout.write(`${name} ${meta}\n`);
      }
      return 0;
    case 'rm':
      rmSync(root, { recursive: true, force: true });
      return 0;
    default:
      process.stderr.write('usage: lcowctl template build|ls [DIR]|rm [DIR]\n');
      return 2;
  }
}
