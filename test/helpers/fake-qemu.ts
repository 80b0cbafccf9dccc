// A stand-in for qemu-system-x86_64 in fast tests of the QEMU backend's boot logic (no VM): it reads the hostfwd
// rules and the fw_cfg token file from the command line QemuSandbox builds, binds the forwarded host ports on
// 127.0.0.1 as QEMU's slirp does (and fails the way QEMU does when one is taken: "Could not set up host forwarding
// rule" on stderr, exit 1), then runs the agent's REAL accept-mode control listener (src/agent/uvm.ts
// acceptControl, with the token file re-read at every handshake) and answers GetInfo.
// FAKE_QEMU_CLASH_DELAY_MS: how long it lingers before exiting on a clash (real QEMU exits at once; a delay lets
// the shim reach the squatter on the port first, as it can with a real QEMU that is slow to start).
import { createServer } from 'node:net';
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
const rules = [...arg('-netdev').matchAll(/hostfwd=tcp:127\.0\.0\.1:(\d+)-:(\d+)/g)].map((m) => ({
  rule: m[0].slice('hostfwd='.length),
  host: Number(m[1]),
  guest: Number(m[2]),
}));
const tokenFile = /file=(.+)$/.exec(arg('-fw_cfg'))![1]!;
const controlGuestPort = 1024;

async function clash(rule: string): Promise<never> {
  process.stderr.write(`qemu-system-x86_64: -netdev user: Could not set up host forwarding rule '${rule}'\n`);
  await new Promise((r) => setTimeout(r, Number(process.env.FAKE_QEMU_CLASH_DELAY_MS ?? '0')));
  process.exit(1);
}

async function main(): Promise<void> {
  const log = stderrLogger({ component: 'fake-qemu' });
  // The 9P rule: bound and idle (this fake has no 9P in the guest).
  for (const r of rules.filter((x) => x.guest !== controlGuestPort)) {
    const srv = createServer((s) => s.destroy());
    await new Promise<void>((resolve) => {
      srv.once('error', () => void clash(r.rule));
      srv.listen({ host: '127.0.0.1', port: r.host, exclusive: true }, resolve);
    });
  }
  const control = rules.find((x) => x.guest === controlGuestPort)!;
  const conn = await acceptControl(`tcp+token://127.0.0.1:${control.host}`, secretFromFile(tokenFile), log).catch(
    (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? clash(control.rule) : Promise.reject(err)),
  );
  const server = new TtrpcServer({ logger: log });
  server.registerService(AgentService, {
    async getInfo() {
      return { version: 'fake-qemu', pid: process.pid, cgroupVersion: 2, kernel: 'none', runcVersion: '' };
    },
  });
  server.handleConnection(conn.stream);
  conn.stream.once('close', () => process.exit(0));
}

main().catch((err: unknown) => {
  process.stderr.write(`fake-qemu: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(2);
});
