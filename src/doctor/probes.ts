// The real HostProbes of `lcowctl doctor`: the file system, commands with a deadline, $PATH, the KVM guest probe
// the QEMU backend itself uses.
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, lstatSync, openSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { kvmRunsGuest } from '../sandbox/qemu/config.js';
import type { HostProbes } from './doctor.js';

const RUN_TIMEOUT_MS = 10_000;

export function realProbes(): HostProbes {
  return {
    stat(path) {
      try {
        const s = lstatSync(path);
        return {
          isFile: s.isFile(),
          isDirectory: s.isDirectory(),
          isSymlink: s.isSymbolicLink(),
          size: s.size,
          mode: s.mode,
          uid: s.uid,
        };
      } catch {
        return undefined;
      }
    },
    openReadWrite(path) {
      try {
        closeSync(openSync(path, constants.O_RDWR));
        return undefined;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code ?? 'error';
      }
    },
    readFile(path) {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return undefined;
      }
    },
    run(cmd, args) {
      return new Promise((resolve) => {
        const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (d: Buffer) => (output += d.toString()));
        child.stderr.on('data', (d: Buffer) => (output += d.toString()));
        const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
        child.on('error', () => {
          clearTimeout(timer);
          resolve(undefined);
        });
        child.on('close', (code) => {
          clearTimeout(timer);
          resolve({ code, output });
        });
      });
    },
    which(name) {
      for (const dir of (process.env.PATH ?? '').split(delimiter)) {
        if (!dir) continue;
        try {
          accessSync(join(dir, name), constants.X_OK);
          return join(dir, name);
        } catch {
          // not here
        }
      }
      return undefined;
    },
    kvmRunsGuest: (cfg) => kvmRunsGuest(cfg),
    nodeVersion: process.versions.node,
  };
}
