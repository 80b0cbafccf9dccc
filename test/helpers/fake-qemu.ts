// A stand-in for qemu-system-x86_64 in fast tests of the QEMU backend's boot logic (no VM): it reads the hostfwd
// rules and the fw_cfg token file from the command line QemuSandbox builds, binds the forwarded host ports on
// 127.0.0.1 as QEMU's slirp does (and fails the way QEMU does when one is taken: "Could not set up host forwarding
// rule" on stderr, exit 1), then runs the agent's REAL accept-mode control listener (src/agent/uvm.ts
// acceptControl, with the token file re-read at every handshake) and answers GetInfo.
// FAKE_QEMU_CLASH_DELAY_MS: how long it lingers before exiting on a clash (real QEMU exits at once; a delay lets
// the shim reach the squatter on the port first, as it can with a real QEMU that is slow to start).
// It serves QMP on the -qmp socket. Started as a template clone (-incoming defer), it waits for QMP
// migrate-incoming and cont before its agent answers, and its agent answers AdoptClone; how the restore goes is
// set by FAKE_QEMU_RESTORE (ok | fail: query-migrate says failed | exit: QEMU exits on migrate-incoming) and
// FAKE_QEMU_CLONE (ok | silent: the restored agent never answers | adopt-fails: AdoptClone is refused). Every
// QMP command it gets is appended to <qmp socket>.log, one JSON line each. FAKE_QEMU_CONSOLE: lines it prints on
// its console (stdout) first, as a guest would (e.g. the kernel's "Initramfs unpacking failed").
// Started with a vhost-vsock-pci device (the vsock transport), it cannot run a guest on a host without vsock: it
// fails like QEMU when the guest CID is listed in FAKE_QEMU_TAKEN_CIDS (comma-separated, or `all`: "vhost-vsock:
// unable to set guest cid: Address already in use", exit 1), else prints the CID and the vsock ports fw_cfg hands
// the guest ("fake-qemu: vsock guest-cid=N ports=control=P,p9=Q") and exits 3.
import { appendFileSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { acceptControl } from '../../src/agent/uvm.js';
import { Agent as AgentService } from '../../src/gen/agent/v1/agent_pb.js';
import { secretFromFile } from '../../src/transport/index.js';
import { TtrpcServer } from '../../src/ttrpc/index.js';
import { stderrLogger } from '../../src/util/log.js';

const argv = process.argv.slice(2);
const arg = (flag: string): string => {
  const i = argv.indexOf(flag);
  if (i < 0 || i + 1 >= argv.length) throw new Error(`fake-qemu: no ${flag}`);
  return argv[i + 1]!;
};
const vsockDevice = argv.find((a) => a.startsWith('vhost-vsock-pci,'));
const rules = [...(vsockDevice ? '' : arg('-netdev')).matchAll(/hostfwd=tcp:127\.0\.0\.1:(\d+)-:(\d+)/g)].map((m) => ({
  rule: m[0].slice('hostfwd='.length),
  host: Number(m[1]),
  guest: Number(m[2]),
}));
const tokenFile = /file=(.+)$/.exec(arg('-fw_cfg'))![1]!;

/** The vsock transport: a taken CID fails as QEMU does; otherwise say what the guest would get, and stop. */
function fakeVsock(device: string): never {
  const cid = /guest-cid=(\d+)/.exec(device)![1]!;
  const taken = (process.env.FAKE_QEMU_TAKEN_CIDS ?? '').split(',');
  if (taken.includes('all') || taken.includes(cid)) {
    process.stderr.write(
      `qemu-system-x86_64: -device ${device}: vhost-vsock: unable to set guest cid: Address already in use\n`,
    );
    process.exit(1);
  }
  const portsArg = argv.find((a) => a.startsWith('name=opt/lcow/vsock,file='))!;
  const ports = readFileSync(portsArg.slice('name=opt/lcow/vsock,file='.length), 'utf8').trim().split('\n');
  process.stderr.write(`fake-qemu: vsock guest-cid=${cid} ports=${ports.join(',')}\n`);
  process.exit(3);
}
if (vsockDevice) fakeVsock(vsockDevice);
const qmpPath = /^unix:([^,]+)/.exec(arg('-qmp'))![1]!;
const clone = argv.includes('-incoming');
const controlGuestPort = 1024;

/** QMP: greeting, then one answer per command; a clone runs (its agent answers) after `cont`. */
function serveQmp(onCont: () => void): Promise<void> {
  rmSync(qmpPath, { force: true });
  const srv = createServer((s: Socket) => {
    s.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + '\n');
    let buf = '';
    s.on('error', () => undefined);
    s.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { execute: string; id?: string; arguments?: unknown };
        appendFileSync(`${qmpPath}.log`, JSON.stringify({ execute: msg.execute, arguments: msg.arguments }) + '\n');
        const answer = (ret: unknown): void => void s.write(JSON.stringify({ return: ret, id: msg.id }) + '\n');
        const restore = process.env.FAKE_QEMU_RESTORE ?? 'ok';
        if (msg.execute === 'migrate-incoming' && restore === 'exit') {
          process.stderr.write('qemu-system-x86_64: load of migration failed: Invalid argument\n');
          process.exit(1);
        }
        if (msg.execute === 'query-migrate')
          answer(
            restore === 'fail' ? { status: 'failed', 'error-desc': 'fake: bad device state' } : { status: 'completed' },
          );
        else {
          answer({});
          if (msg.execute === 'cont') onCont();
        }
      }
    });
  });
  return new Promise((resolve) => srv.listen(qmpPath, resolve));
}

async function clash(rule: string): Promise<never> {
  process.stderr.write(`qemu-system-x86_64: -netdev user: Could not set up host forwarding rule '${rule}'\n`);
  await new Promise((r) => setTimeout(r, Number(process.env.FAKE_QEMU_CLASH_DELAY_MS ?? '0')));
  process.exit(1);
}

async function main(): Promise<void> {
  const log = stderrLogger({ component: 'fake-qemu' });
  for (const line of (process.env.FAKE_QEMU_CONSOLE ?? '').split('\n').filter(Boolean))
    process.stdout.write(`${line}\n`);
  // The 9P rule: bound and idle (this fake has no 9P in the guest).
  for (const r of rules.filter((x) => x.guest !== controlGuestPort)) {
    const srv = createServer((s) => s.destroy());
    await new Promise<void>((resolve) => {
      srv.once('error', () => void clash(r.rule));
      srv.listen({ host: '127.0.0.1', port: r.host, exclusive: true }, resolve);
    });
  }
  const control = rules.find((x) => x.guest === controlGuestPort)!;
  const cloneMode = clone ? (process.env.FAKE_QEMU_CLONE ?? 'ok') : 'cold';
  let running = !clone;
  await serveQmp(() => (running = true));
  if (cloneMode === 'silent') {
    // Bound like slirp's hostfwd, but nothing in the guest ever listens: every connection is dropped.
    const srv = createServer((s) => s.destroy());
    srv.once('error', () => void clash(control.rule));
    srv.listen({ host: '127.0.0.1', port: control.host, exclusive: true });
    return;
  }
  const conn = await acceptControl(`tcp+token://127.0.0.1:${control.host}`, secretFromFile(tokenFile), log).catch(
    (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? clash(control.rule) : Promise.reject(err)),
  );
  if (!running) throw new Error('a clone was dialed before it was restored and running');
  const server = new TtrpcServer({ logger: log });
  server.registerService(AgentService, {
    async getInfo() {
      return { version: 'fake-qemu', pid: process.pid, cgroupVersion: 2, kernel: 'none', runcVersion: '' };
    },
    async adoptClone() {
      if (cloneMode === 'adopt-fails') throw new Error('fake: adoption refused');
      return { bootId: `fake-boot-${process.pid}`, clockStepMs: 0n };
    },
  });
  server.handleConnection(conn.stream);
  conn.stream.once('close', () => process.exit(0));
}

main().catch((err: unknown) => {
  process.stderr.write(`fake-qemu: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(2);
});
