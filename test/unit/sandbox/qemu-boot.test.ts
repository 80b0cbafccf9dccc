// The QEMU backend's boot when a local process holds a forwarded host port (issue 9: "a local user squats the
// hostfwd port"), fast and deterministic: QEMU is test/helpers/fake-qemu.ts (binds the hostfwd ports like slirp,
// fails like QEMU on a clash, runs the agent's real accept-mode listener), and the first port the backend picks is
// one a squatter already holds. Whether the squatter answers the handshake (the shim detects the failed proof) or
// stays silent (QEMU cannot bind and exits), boot restarts on new ports with a new secret, logs it, and the
// squatter got nothing but HELLO frames. Run under umask 000: the state dir and the token file keep 0700 / 0600.
// The same attack on a real QEMU guest is in test/e2e/uvm/squat.test.ts.
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { qemuConfig } from '../../../src/sandbox/qemu/config.js';
import { QemuSandbox } from '../../../src/sandbox/qemu/qemu.js';
import { TEMPLATE_FORMAT, templateKey } from '../../../src/sandbox/qemu/template.js';
import { decodeHello, encodeChallenge, newSecret } from '../../../src/transport/index.js';
import { Logger } from '../../../src/util/log.js';

const FAKE_QEMU = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../helpers/fake-qemu.js');

interface Squatter {
  port: number;
  /** Bytes received, per connection. */
  received: Buffer[][];
  server: Server;
  sockets: Socket[];
}

/** Binds a free 127.0.0.1 port first; `answer` decides what it does with each connection. */
async function squat(answer: 'fake-challenge' | 'silent'): Promise<Squatter> {
  const received: Buffer[][] = [];
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    const mine: Buffer[] = [];
    received.push(mine);
    sockets.push(s);
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      mine.push(d);
      if (answer === 'fake-challenge') s.write(encodeChallenge({ nonce: newSecret(), mac: newSecret() }));
    });
  });
  await new Promise<void>((r) => server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, r));
  return { port: (server.address() as { port: number }).port, received, server, sockets };
}

function realFreePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const srv = createServer();
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const p = (srv.address() as { port: number }).port;
      srv.close(() => resolvePort(p));
    });
  });
}

function pidsRunning(script: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(script);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('qemu backend boot: a squatted hostfwd port (fake QEMU, real handshake)', function () {
  this.timeout(60_000);
  let dir: string;
  let wrapper: string;
  let lines: string[];
  let oldUmask: number;
  const squatters: Squatter[] = [];
  const sandboxes: QemuSandbox[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `lcow-qemu-boot-${process.pid}-`));
    wrapper = join(dir, 'fake-qemu');
    writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" "${FAKE_QEMU}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    lines = [];
    oldUmask = process.umask(0o000);
  });
  afterEach(async () => {
    process.umask(oldUmask);
    delete process.env.FAKE_QEMU_CLASH_DELAY_MS;
    for (const s of sandboxes.splice(0)) await s.stop('force');
    for (const q of squatters.splice(0)) {
      for (const s of q.sockets) s.destroy();
      q.server.close();
    }
    assert.deepEqual(pidsRunning(dir), [], 'a fake QEMU was left running');
    rmSync(dir, { recursive: true, force: true });
  });

  const sandbox = (
    ports: () => Promise<number>,
    extra: Record<string, unknown> = { templates: false },
  ): QemuSandbox => {
    const logger = new Logger({ write: (l: string) => lines.push(l) }, 'debug', {});
    const sb = new QemuSandbox({
      id: `squat-${process.pid}`,
      stateDir: join(dir, 'state'),
      logger,
      annotations: {},
      runtimeConfig: {
        qemu_binary: wrapper,
        accel: 'tcg',
        kernel: '/dev/null',
        initrd: '/dev/null',
        rootfs: '',
        boot_timeout_ms: 20_000,
        // hostfwd ports are what this suite is about (on a host with vhost-vsock, auto would pick vsock)
        transport: 'tcp',
        ...extra,
      },
      freePort: ports,
      cloneAnswerMs: 3000,
    });
    sandboxes.push(sb);
    return sb;
  };

  /** The first port handed out is the squatter's; the rest are free. */
  const squattedFirst = (q: Squatter): (() => Promise<number>) => {
    let n = 0;
    return () => (n++ === 0 ? Promise.resolve(q.port) : realFreePort());
  };

  const onlyHellos = (q: Squatter): void => {
    for (const conn of q.received) {
      const got = Buffer.concat(conn);
      if (got.length === 0) continue;
      assert.equal(got.length, 41, `the squatter received ${got.length} bytes, not one HELLO`);
      assert.deepEqual(decodeHello(got).purpose, { kind: 'control' });
    }
  };

  it('the squatter answers the handshake: the failed proof is detected, logged, and boot restarts on new ports', async () => {
    const q = await squat('fake-challenge');
    squatters.push(q);
    process.env.FAKE_QEMU_CLASH_DELAY_MS = '3000'; // QEMU slow to die: the shim reaches the squatter first
    const sb = sandbox(squattedFirst(q));
    const t0 = Date.now();
    await sb.boot();
    assert.ok(Date.now() - t0 < 3000, 'the squatter was detected by its failed proof, not by QEMU exiting');
    const warn = lines.find((l) => l.includes('SECURITY: another local process answered on a forwarded host port'));
    assert.ok(warn, lines.join(''));
    assert.equal(JSON.parse(warn).port, q.port);
    assert.ok(q.received.length >= 1);
    onlyHellos(q);
    assert.equal(statSync(join(dir, 'state')).mode & 0o777, 0o700);
    assert.equal(statSync(join(dir, 'state', 'token')).mode & 0o777, 0o600);
    // the secret the guest now uses never reached the squatter
    const secret = readFileSync(join(dir, 'state', 'token'));
    assert.equal(Buffer.concat(q.received.flat()).indexOf(secret), -1);
  });

  it('the squatter stays silent: QEMU cannot bind the port and exits; boot restarts on new ports', async () => {
    const q = await squat('silent');
    squatters.push(q);
    const sb = sandbox(squattedFirst(q));
    await sb.boot();
    assert.ok(
      lines.some((l) => l.includes('a forwarded host port was taken by another local process before QEMU bound it')),
      lines.join(''),
    );
    onlyHellos(q);
  });

  it('a squatter on every port it is given: boot gives up after 5 attempts with a clear error, nothing left running', async () => {
    const q = await squat('fake-challenge');
    squatters.push(q);
    process.env.FAKE_QEMU_CLASH_DELAY_MS = '3000';
    let n = 0;
    const sb = sandbox(() => (n++ % 2 === 0 ? Promise.resolve(q.port) : realFreePort()));
    await assert.rejects(sb.boot(), /could not get its host ports in 5 attempts/);
    assert.equal(lines.filter((l) => l.includes('SECURITY: another local process')).length, 5);
    onlyHellos(q);
    assert.ok(!existsSync(join(dir, 'state')), 'the state dir is removed after a failed boot');
  });

  it('the console says the guest image does not fit in memory: boot fails at once with the reason, nothing left', async () => {
    process.env.FAKE_QEMU_CONSOLE = '[    1.259767] Initramfs unpacking failed: write error\nLCOW init uptime=2.49';
    try {
      const sb = sandbox(realFreePort);
      const t0 = Date.now();
      await assert.rejects(
        sb.boot(),
        /guest image does not fit in the UVM's 1024 MiB of memory.*Initramfs unpacking failed/,
      );
      assert.ok(Date.now() - t0 < 10_000, 'not left to the boot timeout');
      assert.ok(
        lines.some((l) => l.includes('the UVM cannot boot')),
        lines.join(''),
      );
      assert.ok(!existsSync(join(dir, 'state')), 'the state dir is removed after a failed boot');
    } finally {
      delete process.env.FAKE_QEMU_CONSOLE;
    }
  });

  // ---- templates: the clone path of boot(), and every way it falls back (template.ts has the real build) ----

  /** A template as ensureTemplate leaves it, for this sandbox's spec, in <dir>/templates. */
  const plantTemplate = (): { key: string; tdir: string } => {
    const tplRoot = join(dir, 'templates');
    const runtime = {
      qemu_binary: wrapper,
      accel: 'tcg',
      kernel: '/dev/null',
      initrd: '/dev/null',
      rootfs: '',
      template_dir: tplRoot,
    };
    const { key, family, inputs } = templateKey({ cfg: qemuConfig(runtime, {}), accel: 'tcg', cpus: 1 });
    const tdir = join(tplRoot, key);
    mkdirSync(tdir, { recursive: true, mode: 0o700 });
    chmodSync(tplRoot, 0o700);
    writeFileSync(join(tdir, 'mem'), Buffer.alloc(8192, 1));
    writeFileSync(join(tdir, 'state'), 'device state');
    const m = statSync(join(tdir, 'mem'));
    const meta = {
      format: TEMPLATE_FORMAT,
      key,
      family,
      inputs,
      memBytes: m.size,
      memMtimeMs: m.mtimeMs,
      stateSha256: createHash('sha256').update('device state').digest('hex'),
      builtAt: new Date().toISOString(),
      buildMs: 1,
    };
    writeFileSync(join(tdir, 'meta.json'), JSON.stringify(meta));
    return { key, tdir };
  };
  const withTemplates = (): Record<string, unknown> => ({ templates: true, template_dir: join(dir, 'templates') });
  const qmpLog = (): Array<{ execute: string; arguments?: Record<string, unknown> }> => {
    const f = join(dir, 'state', 'qmp.sock.log');
    return existsSync(f)
      ? readFileSync(f, 'utf8')
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as { execute: string; arguments?: Record<string, unknown> })
      : [];
  };
  const crashes = (sb: QemuSandbox): string[] => {
    const seen: string[] = [];
    sb.onExit((r) => seen.push(r.kind));
    return seen;
  };

  it('a template: QEMU starts as a clone (RAM private, -incoming), is restored over QMP, then AdoptClone', async () => {
    const { key, tdir } = plantTemplate();
    const sb = sandbox(realFreePort, withTemplates());
    const exits = crashes(sb);
    await sb.boot();
    assert.equal(sb.startedFrom.kind, 'template');
    const argv = readFileSync(`/proc/${sb.pid}/cmdline`, 'utf8').split('\0');
    assert.ok(
      argv.some((a) => a.includes(`mem-path=${tdir}/mem,share=off`)),
      argv.join(' '),
    );
    assert.deepEqual(argv.slice(argv.indexOf('-incoming'), argv.indexOf('-incoming') + 2), ['-incoming', 'defer']);
    assert.ok(argv.includes('vmgenid'));
    assert.ok(sb.timings.restored !== undefined && sb.timings.restored <= sb.timings.connected!);
    assert.ok(
      lines.some((l) => l.includes('UVM restored from a template')),
      lines.join(''),
    );
    const cmds = qmpLog().map((c) => c.execute);
    assert.deepEqual(cmds.slice(0, 5), [
      'qmp_capabilities',
      'migrate-set-capabilities',
      'migrate-incoming',
      'query-migrate',
      'cont',
    ]);
    // The restore's QMP connection is the one the sandbox keeps (QEMU takes one client): no second greeting.
    assert.equal(cmds.filter((c) => c === 'qmp_capabilities').length, 1);
    assert.match(String(qmpLog()[2]!.arguments!.uri), new RegExp(`${key}/state`));
    assert.ok(existsSync(join(tdir, 'meta.json')), 'the template is kept');
    assert.deepEqual(exits, []);
  });

  for (const [what, env, why] of [
    ['the restore fails (migration failed)', { FAKE_QEMU_RESTORE: 'fail' }, /fake: bad device state/],
    ['QEMU exits during the restore', { FAKE_QEMU_RESTORE: 'exit' }, /load of migration failed/],
    ['the restored agent never answers', { FAKE_QEMU_CLONE: 'silent' }, /./],
    ['AdoptClone is refused', { FAKE_QEMU_CLONE: 'adopt-fails' }, /adoption refused/],
  ] as const) {
    it(`${what}: the template is discarded and the pod boots cold; the pod is not reported crashed`, async () => {
      Object.assign(process.env, env);
      try {
        const { tdir } = plantTemplate();
        const sb = sandbox(realFreePort, withTemplates());
        const exits = crashes(sb);
        await sb.boot();
        assert.equal(sb.startedFrom.kind, 'cold');
        assert.ok(!existsSync(tdir), 'the template was discarded');
        const warn = lines.find((l) => l.includes('did not come up; discarding the template, booting cold'));
        assert.ok(warn, lines.join(''));
        assert.match(JSON.parse(warn).error as string, why);
        assert.ok(
          lines.some((l) => l.includes('"UVM ready"') && l.includes('"from":"cold"')),
          lines.join(''),
        );
        assert.deepEqual(exits, [], 'an abandoned clone is not a crash of the pod');
        assert.equal(pidsRunning(dir).length, 1, 'only the cold VM runs');
      } finally {
        for (const k of Object.keys(env)) delete process.env[k];
      }
    });
  }

  it('a port lost before the clone bound it: retried with the template on new ports, not discarded', async () => {
    const { tdir } = plantTemplate();
    const q = await squat('silent');
    squatters.push(q);
    const sb = sandbox(squattedFirst(q), withTemplates());
    await sb.boot();
    assert.equal(sb.startedFrom.kind, 'template');
    assert.ok(existsSync(join(tdir, 'meta.json')));
    assert.ok(
      lines.some((l) => l.includes('a forwarded host port was taken by another local process before QEMU bound it')),
      lines.join(''),
    );
    assert.ok(!lines.some((l) => l.includes('discarding the template')), lines.join(''));
  });
});
