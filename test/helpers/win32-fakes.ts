// The Win32 boundary fakes for Linux unit tests (test/fakes/*.c): FAKE computecore.dll + LocalFree and FAKE
// ws2_32.dll, written from the documented APIs. Compiled once per source version into build/fakes/ (gcc is a
// Makefile dependency), then loaded through the production koffi bindings; their fake_* exports let a test
// steer and inspect them.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
/** dist/test/helpers -> repository root. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Why the fakes cannot be built here, or undefined. */
export function fakesUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'the Win32 fakes are Linux shared objects';
  try {
    execFileSync('gcc', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'needs gcc to build the Win32 fakes (test/fakes)';
  }
}

/** Builds test/fakes/<name>.c into build/fakes/<name>-<hash>.so (atomically; concurrent runs are fine). */
export function buildFake(name: 'computecore-fake' | 'winsock-fake'): string {
  return buildSharedObject(join('test', 'fakes', `${name}.c`));
}

/** Builds a C file of the repository (path relative to its root) into a Linux shared object for koffi. */
export function buildSharedObject(relPath: string): string {
  const src = join(ROOT, relPath);
  const name = relPath.replace(/^.*\//, '').replace(/\.c$/, '');
  const hash = createHash('sha256').update(readFileSync(src)).digest('hex').slice(0, 12);
  const dir = join(ROOT, 'build', 'fakes');
  const out = join(dir, `${name}-${hash}.so`);
  if (existsSync(out)) return out;
  mkdirSync(dir, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  execFileSync('gcc', ['-shared', '-fPIC', '-O1', '-g', '-Wall', '-Wextra', '-Werror', '-o', tmp, src, '-lpthread'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  renameSync(tmp, out);
  return out;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;

/** Steering and inspection of the FAKE computecore (same library instance the binding loaded). */
export interface FakeHcsControl {
  path: string;
  set(name: string, value: number): void;
  resetSettings(): void;
  count(
    what: 'operations' | 'handles' | 'allocations' | 'cancels' | 'grants' | 'modifies' | 'events' | 'systems',
  ): number;
  state(id: string): '' | 'created' | 'running' | 'stopped';
  read(id: string, what: 'document' | 'modify' | 'runtime'): string | undefined;
  guestExit(id: string, exitType: string): boolean;
}

let hcs: FakeHcsControl | undefined;

export function fakeComputeCore(): FakeHcsControl {
  if (hcs) return hcs;
  const path = buildFake('computecore-fake');
  const koffi = require('koffi');
  const lib = koffi.load(path);
  const f = (p: string): Fn => lib.func(p) as Fn;
  const set = f('void fake_hcs_set(const char *name, long long value)');
  const reset = f('void fake_hcs_reset_settings()');
  const count = f('long long fake_hcs_count(const char *what)');
  const state = f('const char *fake_hcs_state(const char *id)');
  const read = f('int fake_hcs_read(const char *id, const char *what, _Out_ uint8_t *buf, int len)');
  const guestExit = f('int fake_hcs_guest_exit(const char *id, const char *exitType)');
  hcs = {
    path,
    set: (n, v) => set(n, v),
    resetSettings: () => reset(),
    count: (w) => Number(count(w)),
    state: (id) => state(id) as ReturnType<FakeHcsControl['state']>,
    read: (id, what) => {
      const buf = Buffer.alloc(64 * 1024);
      const n = read(id, what, buf, buf.length) as number;
      return n < 0 ? undefined : buf.subarray(0, n).toString('utf8');
    },
    guestExit: (id, t) => guestExit(id, t) === 1,
  };
  return hcs;
}

export interface FakeWinsockControl {
  path: string;
  openSockets(): number;
}

let ws: FakeWinsockControl | undefined;

/** The FAKE ws2_32; its AF_HYPERV sockets live as unix sockets in LCOW_FAKE_HVSOCK_DIR (set by the test). */
export function fakeWinsock(): FakeWinsockControl {
  if (ws) return ws;
  const path = buildFake('winsock-fake');
  const koffi = require('koffi');
  const open = koffi.load(path).func('int fake_ws_open_sockets()') as Fn;
  ws = { path, openSockets: () => open() as number };
  return ws;
}
