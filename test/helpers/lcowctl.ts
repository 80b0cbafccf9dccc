// Runs the built `bin/lcowctl` and collects its output and exit code.
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const LCOWCTL = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../bin/lcowctl');

export function lcowctl(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const c = spawn(LCOWCTL, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('close', (code) => done({ code, stdout, stderr }));
  });
}
