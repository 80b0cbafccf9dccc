// The qemu backend's transport choice (src/sandbox/qemu/vsock.ts) and the vsock command line, without vsock: this
// host has no /dev/vhost-vsock, so the probe is fed both answers through injected host calls, the command line is
// compared with golden argv (test/golden/qemu: argv-tcp*.json were written from main before vsock existed, so the
// default tcp+token command line is byte-for-byte what it was; since then only deliberate additions to the kernel
// command line went in, each with its own commit: lcow.runtime=, lcow.jitless=1 in a cold TCG boot), and the boot's CID retry runs against
// test/helpers/fake-qemu.ts (fails like QEMU when a guest CID is taken). Real host listeners are bound
// (VMADDR_PORT_ANY works on a host without vhost-vsock); no guest ever dials them here.
import assert from 'node:assert/strict';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { qemuArgs, qemuConfig, type CommandLineInputs } from '../../../src/sandbox/qemu/config.js';
import { QemuSandbox } from '../../../src/sandbox/qemu/qemu.js';
import {
  GUEST_CID_MAX,
  GUEST_CID_MIN,
  chooseTransport,
  parseTransportSetting,
  probeVsock,
  randomGuestCid,
  type VsockHost,
} from '../../../src/sandbox/qemu/vsock.js';
import { formatVsockPorts, parseVsockPorts } from '../../../src/transport/index.js';
import { Logger } from '../../../src/util/log.js';
import { parseAgentArgs } from '../../../src/agent/main.js';
import { withoutEnv } from '../../helpers/env.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const GOLDEN = resolve(HERE, '../../../../test/golden/qemu');
const FAKE_QEMU = resolve(HERE, '../../helpers/fake-qemu.js');
const golden = (name: string): string[] => JSON.parse(readFileSync(join(GOLDEN, name), 'utf8')) as string[];

function errno(code: string): Error {
  return Object.assign(new Error(`${code}: fake`), { code });
}

describe('sandbox/qemu: transport setting (transport = auto | vsock | tcp)', () => {
  const saved = process.env.LCOW_QEMU_TRANSPORT;
  afterEach(() => {
    if (saved === undefined) delete process.env.LCOW_QEMU_TRANSPORT;
    else process.env.LCOW_QEMU_TRANSPORT = saved;
  });

  it('defaults to auto; the runtime config (top level or [qemu]) and LCOW_QEMU_TRANSPORT set it, the env winning', () => {
    delete process.env.LCOW_QEMU_TRANSPORT;
    assert.equal(qemuConfig({}, {}).transport, 'auto');
    assert.equal(qemuConfig({ transport: 'tcp' }, {}).transport, 'tcp');
    assert.equal(qemuConfig({ qemu: { transport: 'vsock' } }, {}).transport, 'vsock');
    process.env.LCOW_QEMU_TRANSPORT = 'tcp';
    assert.equal(qemuConfig({ transport: 'vsock' }, {}).transport, 'tcp');
  });

  it('anything else is refused, naming where it came from', () => {
    assert.throws(
      () => parseTransportSetting(undefined, 'hvsock'),
      /^Error: transport must be one of auto, vsock, tcp, not "hvsock"$/,
    );
    assert.throws(() => parseTransportSetting(undefined, 3), /transport must be one of/);
    assert.throws(() => parseTransportSetting('tcp+token', undefined), /^Error: LCOW_QEMU_TRANSPORT must be one of/);
    assert.equal(parseTransportSetting('', 'tcp'), 'tcp');
    assert.equal(parseTransportSetting(undefined, undefined), 'auto');
  });
});

describe('sandbox/qemu: the vsock probe and the choice it drives', () => {
  const host = (device: Error | undefined, bind: Error | undefined, calls: string[] = []): VsockHost => ({
    openDevice: (p) => {
      calls.push(`open ${p}`);
      if (device) throw device;
    },
    bindVsock: () => {
      calls.push('bind');
      if (bind) throw bind;
    },
  });

  it('usable only when the device opens read-write AND an AF_VSOCK socket binds', () => {
    const calls: string[] = [];
    assert.deepEqual(probeVsock(host(undefined, undefined, calls)), { usable: true });
    assert.deepEqual(calls, ['open /dev/vhost-vsock', 'bind']);
    const absent = probeVsock(host(errno('ENOENT'), undefined));
    assert.equal(absent.usable, false);
    assert.match(!absent.usable ? absent.missing : '', /^no \/dev\/vhost-vsock \(load the vhost_vsock module/);
    const denied = probeVsock(host(errno('EACCES'), undefined));
    assert.match(!denied.usable ? denied.missing : '', /\/dev\/vhost-vsock cannot be opened read-write \(EACCES\)/);
    const noBind = probeVsock(host(undefined, new Error('vsock socket(AF_VSOCK) failed (errno 97)')));
    assert.match(
      !noBind.usable ? noBind.missing : '',
      /cannot bind an AF_VSOCK socket \(vsock socket\(AF_VSOCK\) failed/,
    );
  });

  it('the real probe agrees with the host: no /dev/vhost-vsock is named as missing', function () {
    const p = probeVsock();
    if (!existsSync('/dev/vhost-vsock')) {
      assert.equal(p.usable, false);
      assert.match(!p.usable ? p.missing : '', /no \/dev\/vhost-vsock/);
    } else {
      // A host with the device: usable, or refused for another reason (open or bind), never for a missing device.
      assert.doesNotMatch(p.usable ? '' : p.missing, /no \/dev\/vhost-vsock/);
    }
  });

  it('tcp never probes; auto follows the probe; vsock forced on a host without it is an error naming what is missing', () => {
    let probes = 0;
    const yes = (): { usable: true } => (probes++, { usable: true });
    const no = (): { usable: false; missing: string } => (probes++, { usable: false, missing: 'no /dev/vhost-vsock' });
    assert.equal(chooseTransport('tcp', yes), 'tcp');
    assert.equal(probes, 0);
    assert.equal(chooseTransport('auto', yes), 'vsock');
    assert.equal(chooseTransport('auto', no), 'tcp');
    assert.equal(chooseTransport('vsock', yes), 'vsock');
    assert.throws(
      () => chooseTransport('vsock', no),
      /^Error: transport = "vsock" but virtio-vsock is unusable on this host: no \/dev\/vhost-vsock$/,
    );
  });
});

describe('sandbox/qemu: guest CIDs', () => {
  it('random in [0x10000, 0x7fffffff]: never 0, 1, 2 or VMADDR_CID_ANY', () => {
    assert.equal(
      randomGuestCid(() => GUEST_CID_MIN),
      GUEST_CID_MIN,
    );
    assert.equal(
      randomGuestCid((_, max) => max - 1),
      GUEST_CID_MAX,
    );
    assert.throws(() => randomGuestCid(() => 2), /out of range/);
    assert.throws(() => randomGuestCid(() => 0xffffffff), /out of range/);
    const seen = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const c = randomGuestCid();
      assert.ok(c >= GUEST_CID_MIN && c <= GUEST_CID_MAX, String(c));
      seen.add(c);
    }
    assert.ok(seen.size > 990, 'CIDs repeat far too often');
  });
});

describe('sandbox/qemu: command line per transport (golden argv)', () => {
  const base = (extra: Record<string, unknown> = {}): Omit<CommandLineInputs, 'controlPort' | 'p9Port'> => ({
    cfg: qemuConfig({ guest_dir: '/guest', rootfs: '/guest/rootfs.erofs', ...extra }, {}),
    accel: 'tcg',
    cpus: 1,
    name: 'lcow-golden',
    qmpSocket: '/run/lcow/ns/pod/qmp.sock',
    tokenFile: '/run/lcow/ns/pod/token',
  });
  const saved = { tb: process.env.LCOW_TCG_TB_MB, debug: process.env.LCOW_GUEST_DEBUG };
  before(() => {
    delete process.env.LCOW_TCG_TB_MB;
    delete process.env.LCOW_GUEST_DEBUG;
  });
  after(() => {
    if (saved.tb !== undefined) process.env.LCOW_TCG_TB_MB = saved.tb;
    if (saved.debug !== undefined) process.env.LCOW_GUEST_DEBUG = saved.debug;
  });

  it('tcp+token: exactly the command line of before vsock existed (cold boot and template clone)', () => {
    assert.deepEqual(qemuArgs({ ...base(), controlPort: 40001, p9Port: 40002 }), golden('argv-tcp.json'));
    assert.deepEqual(
      qemuArgs({
        ...base(),
        controlPort: 40001,
        p9Port: 40002,
        ramFile: { path: '/tpl/mem', shared: false },
        vmgenid: true,
        incoming: true,
      }),
      golden('argv-tcp-clone.json'),
    );
  });

  it('vsock: vhost-vsock-pci with the guest CID, the ports by fw_cfg, no network device and no TCP port at all', () => {
    const args = qemuArgs({ ...base(), vsock: { cid: 1234567, portsFile: '/run/lcow/ns/pod/vsock-ports' } });
    assert.deepEqual(args, golden('argv-vsock.json'));
    const line = args.join(' ');
    for (const absent of ['-netdev', 'hostfwd', 'guestfwd', 'virtio-net', 'lcow.accept', 'tcp+token', '127.0.0.1'])
      assert.ok(!line.includes(absent), `${absent} in ${line}`);
    assert.deepEqual(
      args.filter((a) => a.startsWith('vhost-vsock-pci')),
      ['vhost-vsock-pci,id=vsock0,guest-cid=1234567'],
    );
    const append = args[args.indexOf('-append') + 1]!;
    assert.ok(append.split(' ').includes('lcow.transport=vsock'));
    // The secret and the ports: both by file, never on the command line.
    assert.deepEqual(
      args.filter((_, i) => args[i - 1] === '-fw_cfg'),
      ['name=opt/lcow/token,file=/run/lcow/ns/pod/token', 'name=opt/lcow/vsock,file=/run/lcow/ns/pod/vsock-ports'],
    );
  });

  it("refuses CIDs that are not a guest's (0, 1, 2, VMADDR_CID_ANY) and a tcp+token line without ports", () => {
    for (const cid of [0, 1, 2, 0xffffffff, 3.5])
      assert.throws(() => qemuArgs({ ...base(), vsock: { cid, portsFile: '/p' } }), /invalid guest CID/);
    assert.throws(() => qemuArgs({ ...base(), vsock: { cid: 70000, portsFile: '/a,b' } }), /must not contain a comma/);
    assert.throws(() => qemuArgs(base()), /tcp\+token needs two host ports/);
  });
});

describe('transport: the vsock ports file (fw_cfg opt/lcow/vsock) and the agent flag that reads it', () => {
  it('round-trips and refuses anything malformed', () => {
    const text = formatVsockPorts({ control: 1025, p9: 4294967294 });
    assert.equal(text, 'control=1025\np9=4294967294\n');
    assert.deepEqual(parseVsockPorts(text), { control: 1025, p9: 4294967294 });
    assert.deepEqual(parseVsockPorts('p9=7\ncontrol=9'), { control: 9, p9: 7 });
    for (const bad of [
      '',
      'control=1',
      'control=1\np9=0',
      'control=1\np9=4294967295',
      'control=1\np9=2\nx=3',
      'control=1\ncontrol=2\np9=3',
      'control=-1\np9=2',
      'control=1 p9=2',
      'a'.repeat(300),
    ])
      assert.throws(() => parseVsockPorts(bad), /vsock ports/, JSON.stringify(bad));
    assert.throws(() => formatVsockPorts({ control: 0xffffffff, p9: 1 }), /invalid control port/);
  });

  it('lcow-agent --vsock-ports FILE --token-file FILE is a UVM mode of its own', () => {
    const a = parseAgentArgs(['--state-dir', '/run/lcow', '--vsock-ports', '/fw/vsock', '--token-file', '/fw/token']);
    assert.equal(a.vsockPorts, '/fw/vsock');
    assert.equal(a.tokenFile, '/fw/token');
    assert.throws(() => parseAgentArgs(['--state-dir', '/run/lcow', '--vsock-ports', '/fw/vsock']), /usage/);
  });
});

/** Sockets this process has open (the vsock listeners of a failed boot must be gone). */
function socketFds(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith('socket:');
    } catch {
      return false;
    }
  }).length;
}

describe('qemu backend boot over vsock (fake QEMU; this host cannot run a vsock guest)', function () {
  this.timeout(60_000);
  withoutEnv('LCOW_QEMU_TRANSPORT');
  let dir: string;
  let wrapper: string;
  let lines: string[];
  const sandboxes: QemuSandbox[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `lcow-qemu-vsock-${process.pid}-`));
    wrapper = join(dir, 'fake-qemu');
    writeFileSync(wrapper, `#!/bin/sh\nexec "${process.execPath}" "${FAKE_QEMU}" "$@"\n`);
    chmodSync(wrapper, 0o755);
    lines = [];
  });
  afterEach(async () => {
    delete process.env.FAKE_QEMU_TAKEN_CIDS;
    for (const s of sandboxes.splice(0)) await s.stop('force');
    rmSync(dir, { recursive: true, force: true });
  });

  const sandbox = (opts: { transport: string; usable: boolean; cids?: number[]; templates?: boolean }): QemuSandbox => {
    const logger = new Logger({ write: (l: string) => lines.push(l) }, 'debug', {});
    let n = 0;
    const sb = new QemuSandbox({
      id: `vsock-${process.pid}`,
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
        templates: opts.templates ?? true,
        transport: opts.transport,
      },
      vsockProbe: () => (opts.usable ? { usable: true } : { usable: false, missing: 'no /dev/vhost-vsock (test)' }),
      guestCid: opts.cids ? () => opts.cids![n++]! : undefined,
    });
    sandboxes.push(sb);
    return sb;
  };
  const logged = (msg: string): Array<Record<string, unknown>> =>
    lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === msg);

  it('a guest CID another VM holds: QEMU fails, the boot retries with the next CID on new listeners', async () => {
    process.env.FAKE_QEMU_TAKEN_CIDS = '70001';
    const sb = sandbox({ transport: 'vsock', usable: true, cids: [70001, 70002] });
    // The second QEMU gets a free CID, but no guest can run here: it reports what the guest would get, and exits.
    await assert.rejects(sb.boot(), (err: Error) => {
      assert.match(err.message, /the UVM exited during boot/);
      assert.match(err.message, /fake-qemu: vsock guest-cid=70002 ports=control=\d+,p9=\d+/);
      return true;
    });
    const retries = logged('the guest CID is taken by another VM on this host; restarting QEMU with another');
    assert.deepEqual(
      retries.map((r) => [r.guestCid, r.attempt]),
      [[70001, 1]],
    );
    assert.equal(sb.transport, 'vsock');
    // No templates over vsock: said once, and no template was looked for or built.
    assert.equal(
      logged('UVM templates are not used with the vsock transport: booting cold (docs/templates.md)').length,
      1,
    );
    assert.ok(!lines.some((l) => l.includes('UVM template missing')), lines.join(''));
  });

  it('every CID taken: gives up after 5 attempts with a clear error; no listener, QEMU or state dir left', async () => {
    process.env.FAKE_QEMU_TAKEN_CIDS = 'all';
    const before = socketFds();
    const sb = sandbox({ transport: 'auto', usable: true, cids: [70011, 70012, 70013, 70014, 70015, 70016] });
    await assert.rejects(sb.boot(), /^Error: the UVM could not get a free guest CID in 5 attempts$/);
    assert.deepEqual(
      logged('the guest CID is taken by another VM on this host; restarting QEMU with another').map((r) => r.guestCid),
      [70011, 70012, 70013, 70014, 70015],
    );
    assert.equal(socketFds(), before, 'a vsock listener was left open');
    assert.ok(!existsSync(join(dir, 'state')), 'the state dir is removed after a failed boot');
  });

  it('vsock forced on a host without it: the boot fails naming what is missing, before any QEMU starts', async () => {
    const sb = sandbox({ transport: 'vsock', usable: false });
    await assert.rejects(
      sb.boot(),
      /^Error: transport = "vsock" but virtio-vsock is unusable on this host: no \/dev\/vhost-vsock \(test\)$/,
    );
    assert.equal(sb.pid, undefined);
    assert.ok(!existsSync(join(dir, 'state')), 'nothing was made');
  });

  it('auto on a host without vsock boots over tcp+token as before', async () => {
    // (no templates: building one needs a real guest)
    const sb = sandbox({ transport: 'auto', usable: false, templates: false });
    await sb.boot();
    assert.equal(sb.transport, 'tcp+token');
    assert.equal(logged('starting UVM')[0]!.transport, 'tcp+token');
  });
});
