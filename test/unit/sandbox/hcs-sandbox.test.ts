// The `hcs` sandbox backend end to end on Linux, with only the Win32 boundary faked: FAKE computecore.dll and
// FAKE ws2_32.dll (test/fakes). The "guest" is this test playing the UVM the way the real guest does: it reads
// the kernel command line from the document HCS received, fetches the secret from the hand-out port, dials the
// control port (the transports' mutual handshake, control purpose) and serves the real agent ttrpc service on
// it; for AddShare it dials the 9P port running the handshake the agent's own dial code builds for the share
// (shareDialAuth: the aname as share id, the token as binding) and then speaks 9P (instead of mount -t 9p) to the
// shim's real P9Server. Hostile guest processes (a wrong secret, a wrong share id or token, a replayed session)
// are refused and the real agent still gets through.
// Not covered here (needs Windows): real HCS, real hvsock, the guest kernel's hv_sock.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { Agent } from '../../../src/agent/agent.js';
import { shareDialAuth, type P9MountRequest } from '../../../src/agent/uvm.js';
import type { ScsiMountRequest } from '../../../src/agent/scsi.js';
import { createAgentServer } from '../../../src/agent/server.js';
import { createClient } from '../../../src/ttrpc/index.js';
import { Agent as AgentDesc } from '../../../src/gen/agent/v1/agent_pb.js';
import { loadComputeCore } from '../../../src/sandbox/hcs/computecore.js';
import { HcsSandbox, cleanupHcsSandbox } from '../../../src/sandbox/hcs/hcs.js';
import { SCSI_CONTROLLER_GUIDS } from '../../../src/sandbox/hcs/schema.js';
import { releaseContainerFs, shareBindMounts } from '../../../src/task/uvm-fs.js';
import {
  SandboxUnavailableError,
  createSandbox,
  type BootedSandbox,
  type SandboxExitReason,
} from '../../../src/sandbox/index.js';
import {
  CHALLENGE_LENGTH,
  HandshakeIncompleteError,
  PeerProofError,
  dialHvsock,
  dialerHandshake,
  fixedSecret,
  readExactly,
  streamIo,
  vsockServiceId,
  type Conn,
  type Purpose,
} from '../../../src/transport/index.js';
import { sockaddrHv } from '../../../src/transport/hvsock.js';
import { SocketStream, loadWinsock, pollerFor, type Winsock } from '../../../src/transport/winsock.js';
import { silentLogger } from '../../../src/util/log.js';
import { P9Client } from '../../helpers/p9client.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { fakeComputeCore, fakeWinsock, fakesUnavailable, type FakeHcsControl } from '../../helpers/win32-fakes.js';

interface Guest {
  vmId: string;
  secret: Buffer;
  control: Conn;
  agent: Agent;
  /** What the guest read through each share's 9P connection. */
  reads: Map<string, string>;
  p9: P9Client[];
  /** SCSI disks the agent was asked to mount. */
  scsi: ScsiMountRequest[];
  /** The bytes the guest sent in each share's handshake (HELLO + PROOF), by share id. */
  transcripts: Map<string, Buffer>;
}

type Addr = { vmId: string; serviceId: string };

interface GuestHooks {
  /** Runs after the secret was fetched, before the agent dials the control port (a racing guest process). */
  beforeControl?: (secret: Buffer, ports: { control: Addr; p9: Addr }) => Promise<void>;
  /** Runs when AddShare reached the agent, before it dials the 9P port for that share. */
  beforeMount?: (req: P9MountRequest, secret: Buffer, p9: Addr, transcripts: Map<string, Buffer>) => Promise<void>;
}

/** The kernel command line HCS was given for `id`: the contract between the backend and the guest init. */
function cmdline(fake: FakeHcsControl, id: string): Map<string, string> {
  const doc = JSON.parse(fake.read(id, 'document')!) as {
    VirtualMachine: { Chipset: { LinuxKernelDirect: { KernelCmdLine: string } } };
  };
  const words = doc.VirtualMachine.Chipset.LinuxKernelDirect.KernelCmdLine.split(' ');
  return new Map(words.map((w) => [w.split('=')[0]!, w.slice(w.indexOf('=') + 1)]));
}

const portOf = (url: string): number => {
  const m = /^vsock:\/\/2:(\d+)$/.exec(url);
  assert.ok(m, `the guest dials the host (CID 2): ${url}`);
  return Number(m[1]);
};

describe('hcs sandbox backend (FAKE computecore + FAKE ws2_32)', function () {
  this.timeout(30_000);
  let fake: FakeHcsControl;
  let ws: Winsock;
  let dir: string;
  const saved = process.env.LCOW_FAKE_HVSOCK_DIR;
  let seq = 0;
  let openSockets: () => number;
  let socketsBefore = 0;
  const sandboxes: HcsSandbox[] = [];
  const guestStreams: Duplex[] = [];

  before(function () {
    requirePrerequisite(this, fakesUnavailable());
    fake = fakeComputeCore();
    const w = fakeWinsock();
    ws = loadWinsock(w.path);
    openSockets = w.openSockets;
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `hcs-sb-${process.pid}-`));
    process.env.LCOW_FAKE_HVSOCK_DIR = dir;
    socketsBefore = openSockets();
  });
  afterEach(async () => {
    // Whatever a failed test left: its UVMs and the guest's side of its connections (no-ops after a clean run).
    for (const sb of sandboxes.splice(0)) await sb.stop('force').catch(() => undefined);
    for (const s of guestStreams.splice(0)) s.destroy();
    fake.resetSettings();
    for (let i = 0; i < 100 && fake.count('events') > 0; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 30));
    pollerFor(ws).close();
    assert.equal(fake.count('operations'), 0, 'HCS operations left open');
    assert.equal(fake.count('handles'), 0, 'HCS handles left open');
    assert.equal(fake.count('allocations'), 0, 'result documents not freed');
    assert.equal(fake.count('systems'), 0, 'UVMs left behind');
    assert.equal(openSockets(), socketsBefore, 'sockets left open');
    process.env.LCOW_FAKE_HVSOCK_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  function newSandbox(extra: Record<string, unknown> = {}): HcsSandbox {
    const id = `pod${process.pid}x${++seq}`;
    const sb = new HcsSandbox({
      id,
      stateDir: join(dir, 'state', id),
      logger: silentLogger,
      annotations: { 'io.microsoft.virtualmachine.computetopology.memory.sizeinmb': '768' },
      runtimeConfig: { hcs: { kernel: '/opt/lcow/vmlinuz', initrd: '/opt/lcow/initrd.img', ...extra } },
      platform: { computecore: loadComputeCore({ computecore: fake.path, kernel32: fake.path }), winsock: ws },
    });
    sandboxes.push(sb);
    return sb;
  }

  /** Plays the guest once the UVM runs: secret, control channel with the real agent service, 9P on AddShare. */
  async function playGuest(sb: HcsSandbox, hooks: GuestHooks = {}): Promise<Guest> {
    for (let i = 0; i < 500 && fake.state(sb.systemId) !== 'running'; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(fake.state(sb.systemId), 'running');
    const vmId = fake.read(sb.systemId, 'runtime')!;
    const args = cmdline(fake, sb.systemId);
    assert.equal(args.get('lcow.hv'), '1');
    const at = (url: string): Addr => ({ vmId, serviceId: vsockServiceId(portOf(url)) });
    // The secret hand-out (what the agent's fetchSecret does): connect, read 32 bytes, EOF.
    const s = rawConnect(at(args.get('lcow.token')!));
    const secret = await readExactly(s, 32, 5000);
    s.destroy();
    const p9Addr = at(args.get('lcow.p9')!);
    const controlAddr = at(args.get('lcow.dial')!);
    const reads = new Map<string, string>();
    const p9: P9Client[] = [];
    const scsi: ScsiMountRequest[] = [];
    const transcripts = new Map<string, Buffer>();
    const mount9p = async (req: P9MountRequest): Promise<void> => {
      await hooks.beforeMount?.(req, secret, p9Addr, transcripts);
      // What dialHvsock does, with the handshake the agent's mount9p runs for this share, recording the bytes the
      // guest sent; then 9P from this side instead of mount(8).
      const stream = rawConnect(p9Addr);
      const io = streamIo(stream);
      const sent: Buffer[] = [];
      await dialerHandshake(
        {
          read: (n, t) => io.read(n, t),
          write: (b) => {
            sent.push(Buffer.from(b));
            return io.write(b);
          },
        },
        shareDialAuth(fixedSecret(secret), req),
        5000,
      );
      transcripts.set(req.aname, Buffer.concat(sent));
      const client = new P9Client(stream);
      p9.push(client);
      await client.version(65536);
      const root = await client.attach(req.aname);
      const f = await client.walk(root.fid, ['hello.txt']);
      await client.lopen(f.fid, 0);
      reads.set(req.aname, (await client.read(f.fid, 0, 4096)).toString());
      await client.clunk(f.fid);
    };
    const mountScsi = async (req: ScsiMountRequest): Promise<void> => {
      scsi.push(req);
    };
    const agent = new Agent({ stateDir: join(dir, 'guest'), mount9p, mountScsi, unmount: async () => undefined });
    await hooks.beforeControl?.(secret, { control: controlAddr, p9: p9Addr });
    // What the agent's dialControl does: the control purpose, guest dials host.
    const control = await dialHvsock(
      controlAddr,
      { secret: fixedSecret(secret), purpose: { kind: 'control' } },
      { winsock: ws },
    );
    guestStreams.push(control.stream);
    const server = createAgentServer(agent, silentLogger, () => {
      // The agent exited: the guest init powers the VM off.
      fake.guestExit(sb.systemId, 'GracefulExit');
    });
    server.handleConnection(control.stream);
    return { vmId, secret, control, agent, reads, p9, scsi, transcripts };
  }

  /**
   * Boots `sb` while playing its guest. A guest that fails (an assertion in a hook) stops the UVM, so the test
   * fails at once with the guest's error instead of waiting for the boot deadline.
   */
  async function bootWithGuest(sb: HcsSandbox, hooks: GuestHooks = {}): Promise<{ booted: BootedSandbox; g: Guest }> {
    const guest = playGuest(sb, hooks);
    guest.catch(() => sb.stop('force').catch(() => undefined));
    const [booted, g] = await Promise.all([sb.boot(), guest]);
    return { booted, g };
  }

  /** A connected hvsock with no handshake: what any process in the guest can open. */
  function rawConnect(addr: Addr): SocketStream {
    const raw = ws.socket(34, 1, 1);
    assert.equal(ws.connect(raw, sockaddrHv(addr.vmId, addr.serviceId)), 0);
    const s = new SocketStream(ws, raw);
    s.on('error', () => undefined);
    guestStreams.push(s);
    return s;
  }

  /** Every byte the host sent before it closed `s` (rejects if it stays open). */
  function closedByPeer(s: SocketStream, timeoutMs = 5000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const got: Buffer[] = [];
      const t = setTimeout(() => reject(new Error('the host did not close the connection')), timeoutMs);
      s.on('data', (d: Buffer) => got.push(d));
      s.once('close', () => {
        clearTimeout(t);
        resolve(Buffer.concat(got));
      });
    });
  }

  /** A guest process's dial: rejects as the handshake failed (the connection is closed on success). */
  async function hostileDial(addr: Addr, secret: Buffer, purpose: Purpose, binding?: Buffer): Promise<void> {
    const c = await dialHvsock(addr, { secret: fixedSecret(secret), purpose, binding }, { winsock: ws });
    c.close();
    assert.fail(`the host handed out a connection for ${JSON.stringify(purpose)}`);
  }

  it('boots, connects the agent over hvsock, serves a 9P share, stops gracefully, leaves nothing', async () => {
    const sb = newSandbox();
    const exits: SandboxExitReason[] = [];
    sb.onExit((r) => exits.push(r));
    const { booted, g } = await bootWithGuest(sb);
    assert.deepEqual(booted.pids, [process.pid]);
    assert.equal(sb.runtimeId, g.vmId);
    const info = await createClient(AgentDesc, booted.agent).getInfo({});
    assert.equal(info.pid, process.pid, 'the control channel reaches the agent service');

    // The document HCS got: sizing from the annotation, the three services locked to SYSTEM/Administrators.
    const doc = JSON.parse(fake.read(sb.systemId, 'document')!);
    assert.equal(doc.VirtualMachine.ComputeTopology.Memory.SizeInMB, 768);
    assert.deepEqual(Object.keys(doc.VirtualMachine.Devices.HvSocket.HvSocketConfig.ServiceTable).sort(), [
      vsockServiceId(564),
      vsockServiceId(1024),
      vsockServiceId(1025),
    ]);

    const shared = mkdtempSync(join(dir, 'share-'));
    writeFileSync(join(shared, 'hello.txt'), 'from the host\n');
    const a = await sb.addShare(shared, { readOnly: true });
    const b = await sb.addShare(shared, { readOnly: true });
    assert.equal(a.shareId, b.shareId, 'refcounted per (path, mode)');
    assert.equal(g.reads.get(a.shareId), 'from the host\n');
    const c = await sb.addShare(shared, { readOnly: false });
    assert.notEqual(c.shareId, a.shareId);
    await sb.removeShare(b.shareId);
    await sb.removeShare(a.shareId);
    await sb.removeShare(c.shareId);

    const stats = await sb.stats();
    assert.deepEqual(stats, [{ pid: 0, rssBytes: 123456789 }]);
    assert.deepEqual(sb.record(), {
      backend: 'hcs',
      id: sb.record().id,
      stateDir: sb.record().stateDir,
      pids: [],
      hcsId: sb.systemId,
    });

    await sb.stop('graceful');
    assert.deepEqual(exits, [{ kind: 'stopped' }]);
    assert.equal(existsSync(sb.record().stateDir), false);
    for (const p of g.p9) p.stream.destroy();
    g.control.close();
    await g.agent.shutdown();
  });

  it('attaches windows-lcow layers over SCSI (once per pod), stacks them with overlay, detaches the last use', async () => {
    const sb = newSandbox();
    const { g } = await bootWithGuest(sb);
    const doc = JSON.parse(fake.read(sb.systemId, 'document')!);
    assert.deepEqual(Object.keys(doc.VirtualMachine.Devices.Scsi), [...SCSI_CONTROLLER_GUIDS], 'controllers at boot');
    const lcowMount = (scratch: string, parents: string[]) => [
      {
        type: 'lcow-layer',
        source: scratch,
        target: '',
        options: ['rw', `parentLayerPaths=${JSON.stringify(parents)}`],
      },
    ];
    const grants = fake.count('grants');
    const modifies = fake.count('modifies');
    const a = await sb.prepareRootfs('c1', lcowMount('C:\\snap\\13', ['C:\\snap\\12', 'C:\\snap\\11']));
    assert.ok(a);
    assert.equal(fake.count('grants') - grants, 3, 'HcsGrantVmAccess for each disk');
    assert.equal(fake.count('modifies') - modifies, 3);
    assert.deepEqual(JSON.parse(fake.read(sb.systemId, 'modify')!), {
      ResourcePath: `VirtualMachine/Devices/Scsi/${SCSI_CONTROLLER_GUIDS[2]}/Attachments/0`,
      RequestType: 'Add',
      Settings: { Type: 'VirtualDisk', Path: 'C:\\snap\\13\\sandbox.vhdx' },
    });
    assert.deepEqual(
      g.scsi.map((r) => [r.source, r.readOnly, r.options.fstype]),
      [
        [`${SCSI_CONTROLLER_GUIDS[0]}:0`, true, 'ext4'],
        [`${SCSI_CONTROLLER_GUIDS[1]}:0`, true, 'ext4'],
        [`${SCSI_CONTROLLER_GUIDS[2]}:0`, false, 'ext4'],
      ],
    );
    const [l12, l11, scratch] = g.scsi.map((r) => r.target);
    assert.deepEqual(a.rootfs, [
      {
        type: 'overlay',
        source: 'overlay',
        target: '',
        options: [`lowerdir=${l12}:${l11}`, `upperdir=${scratch}/upper`, `workdir=${scratch}/work`],
      },
    ]);
    // A second container of the same image: only its scratch disk is new.
    const b = await sb.prepareRootfs('c2', lcowMount('C:\\snap\\14', ['C:\\snap\\12', 'C:\\snap\\11']));
    assert.ok(b);
    assert.equal(fake.count('grants') - grants, 4);
    assert.equal(g.scsi.length, 4);
    await a.release();
    // Only c1's scratch went: the shared layers stay for c2.
    assert.deepEqual(JSON.parse(fake.read(sb.systemId, 'modify')!).RequestType, 'Remove');
    assert.equal(fake.count('modifies') - modifies, 5);
    await b.release();
    assert.equal(fake.count('modifies') - modifies, 8, 'every disk hot-removed after its last use');
    // The spec's bind mounts: a directory is shared over 9P and its source rewritten; a single file is refused
    // (sharing its directory would expose its siblings; a single-file export is not there yet).
    const data = mkdtempSync(join(dir, 'data-'));
    writeFileSync(join(data, 'hello.txt'), 'bound\n');
    const spec = { mounts: [{ destination: '/data', type: 'bind', source: data, options: ['rbind', 'ro'] }] };
    const fsState = { shareIds: [] as string[], fileHolders: [] as string[] };
    await shareBindMounts(sb, spec, fsState);
    assert.equal(fsState.shareIds.length, 1);
    assert.equal(spec.mounts[0]!.source, join(dir, 'guest', 'shares', fsState.shareIds[0]!));
    assert.equal(g.reads.get(fsState.shareIds[0]!), 'bound\n');
    const fileSpec = {
      mounts: [{ destination: '/x', type: 'bind', source: join(data, 'hello.txt'), options: ['bind'] }],
    };
    await assert.rejects(shareBindMounts(sb, fileSpec, fsState), /single-file bind mount .* hcs sandbox cannot/);
    await releaseContainerFs(sb, fsState, silentLogger);
    assert.equal(fsState.shareIds.length, 0);
    // Other rootfs kinds are not this backend's.
    assert.equal(
      await sb.prepareRootfs('c3', [{ type: 'overlay', source: 'overlay', target: '', options: [] }]),
      undefined,
    );
    await assert.rejects(sb.prepareRootfs('c4', lcowMount('C:\\s', [])), /without parent layers/);
    await sb.stop('force');
    g.control.close();
  });

  it('control: a racing guest process with a wrong secret or purpose is refused; the agent still connects', async () => {
    const sb = newSandbox();
    const wrong = Buffer.alloc(32, 7);
    const guest = bootWithGuest(sb, {
      beforeControl: async (secret, ports) => {
        // A wrong secret: the host proves first and the dialer sees the proof fail; nothing is handed out.
        await assert.rejects(hostileDial(ports.control, wrong, { kind: 'control' }), PeerProofError);
        // The right secret but not the control purpose: closed without an answer.
        const share: Purpose = { kind: 'p9', shareId: 's1' };
        await assert.rejects(hostileDial(ports.control, secret, share), HandshakeIncompleteError);
        // The 9P port serves no control channel, and no share id that is not registered.
        await assert.rejects(hostileDial(ports.p9, secret, { kind: 'control' }), HandshakeIncompleteError);
        await assert.rejects(hostileDial(ports.p9, secret, share, Buffer.alloc(16)), HandshakeIncompleteError);
        // The old protocol (the raw secret first) gets no answer either.
        const old = rawConnect(ports.control);
        const oldClosed = closedByPeer(old);
        old.write(secret);
        assert.equal((await oldClosed).length, 0);
      },
    });
    const { booted, g } = await guest;
    const info = await createClient(AgentDesc, booted.agent).getInfo({});
    assert.equal(info.pid, process.pid, 'the one control channel went to the agent, not to a racing process');
    const args = cmdline(fake, sb.systemId);
    // One control channel per UVM: the control listener is gone, and so is the secret hand-out.
    for (const key of ['lcow.dial', 'lcow.token'])
      await assert.rejects(
        hostileDial({ vmId: g.vmId, serviceId: vsockServiceId(portOf(args.get(key)!)) }, g.secret, { kind: 'control' }),
        /WSAECONNREFUSED/,
        key,
      );
    await sb.stop('force');
    g.control.close();
  });

  it('9P: a wrong secret, a wrong share id or token, and replays are refused; the agent mounts its shares', async () => {
    const sb = newSandbox();
    const refusals: string[] = [];
    const guest = bootWithGuest(sb, {
      beforeMount: async (req, secret, p9, transcripts) => {
        const me: Purpose = { kind: 'p9', shareId: req.aname };
        const token = Buffer.from(req.token);
        // This share, while AddShare waits for it: a wrong secret or a wrong token fails the host's proof, and
        // takes nothing from the share (the agent's own dial below still gets through).
        await assert.rejects(hostileDial(p9, Buffer.alloc(32, 7), me, token), PeerProofError);
        await assert.rejects(hostileDial(p9, secret, me, Buffer.alloc(16, 1)), PeerProofError);
        // A share id the host never registered, even with this share's token: closed without an answer.
        await assert.rejects(hostileDial(p9, secret, { kind: 'p9', shareId: 'x9' }, token), HandshakeIncompleteError);
        refusals.push(req.aname);
        for (const [id, transcript] of transcripts) {
          // The agent's recorded session of an earlier share, verbatim: that share has its connection, closed
          // without an answer.
          const verbatim = rawConnect(p9);
          const verbatimClosed = closedByPeer(verbatim);
          verbatim.write(transcript);
          assert.equal((await verbatimClosed).length, 0, `replay of ${id}`);
          // Re-addressed to this share (same length id): a fresh CHALLENGE, then closed at the stale PROOF.
          assert.equal(id.length, req.aname.length);
          const readdressed = Buffer.from(transcript);
          readdressed.write(req.aname, 9, 'ascii');
          const s = rawConnect(p9);
          const sClosed = closedByPeer(s);
          s.write(readdressed);
          assert.equal((await sClosed).length, CHALLENGE_LENGTH, `replay of ${id} as ${req.aname}`);
        }
      },
    });
    const { g } = await guest;
    const shared = mkdtempSync(join(dir, 'share-'));
    writeFileSync(join(shared, 'hello.txt'), 'from the host\n');
    const a = await sb.addShare(shared, { readOnly: true });
    const b = await sb.addShare(shared, { readOnly: false });
    assert.deepEqual(refusals, [a.shareId, b.shareId]);
    assert.equal(g.reads.get(a.shareId), 'from the host\n');
    assert.equal(g.reads.get(b.shareId), 'from the host\n');
    // Every share has had its connection: a session with the right secret and token is refused for both now.
    const p9Addr = { vmId: g.vmId, serviceId: vsockServiceId(portOf(cmdline(fake, sb.systemId).get('lcow.p9')!)) };
    for (const id of [a.shareId, b.shareId])
      await assert.rejects(
        hostileDial(p9Addr, g.secret, { kind: 'p9', shareId: id }, Buffer.alloc(16)),
        HandshakeIncompleteError,
      );
    await sb.removeShare(a.shareId);
    await sb.removeShare(b.shareId);
    await sb.stop('force');
    for (const p of g.p9) p.stream.destroy();
    g.control.close();
  });

  it('reports a UVM that dies on its own as crashed, and tears the host side down', async () => {
    const sb = newSandbox();
    const { g } = await bootWithGuest(sb);
    const exited = new Promise<SandboxExitReason>((resolve) => sb.onExit(resolve));
    fake.guestExit(sb.systemId, 'UnexpectedExit');
    assert.deepEqual(await exited, { kind: 'crashed', code: 0, signal: null });
    await sb.stop('graceful'); // idempotent after a crash: closes the handle
    g.control.close();
  });

  it('fails boot when the agent never connects: the VM is terminated and closed', async () => {
    const sb = newSandbox({ boot_timeout_ms: 300 });
    await assert.rejects(sb.boot(), /did not connect within 300 ms/);
    assert.equal(fake.state(sb.systemId), '');
  });

  it('fails boot clearly when HCS cannot start the VM', async () => {
    fake.set('fail_start_hr', 0x80370102);
    const sb = newSandbox();
    await assert.rejects(sb.boot(), /HCS_E_HYPERV_NOT_INSTALLED.*enable the Hyper-V role/s);
  });

  it('delete after a shim crash: ends the recorded VM by its HCS id, removes the state', async () => {
    const sb = newSandbox();
    const { g } = await bootWithGuest(sb);
    const rec = sb.record();
    // The "dead" shim's sandbox is left as is; delete opens the system by id from the record.
    await cleanupHcsSandbox(rec, loadComputeCore({ computecore: fake.path, kernel32: fake.path }));
    assert.equal(fake.state(sb.systemId), 'stopped', 'terminated (the dead shim still holds a handle here)');
    assert.equal(existsSync(rec.stateDir), false);
    await sb.stop('force'); // releases that last handle: the system is forgotten
    assert.equal(fake.state(sb.systemId), '');
    // And when the VM is already gone (HCS ended it with the last handle), delete succeeds too.
    await cleanupHcsSandbox(rec, loadComputeCore({ computecore: fake.path, kernel32: fake.path }));
    g.control.close();
  });

  it('is the default backend on Windows only; elsewhere it is refused by name', async () => {
    const opts = { id: 'x', stateDir: join(dir, 'x'), logger: silentLogger, annotations: {} };
    await assert.rejects(createSandbox('hcs', opts), (e: unknown) => e instanceof SandboxUnavailableError);
    const real = Object.getOwnPropertyDescriptor(process, 'platform')!;
    Object.defineProperty(process, 'platform', { ...real, value: 'win32' });
    try {
      const def = await createSandbox(undefined, opts);
      assert.equal(def.backend, 'hcs');
      assert.equal(def.isolated, true);
      await assert.rejects(createSandbox('qemu', opts), (e: unknown) => e instanceof SandboxUnavailableError);
      await assert.rejects(createSandbox('process', opts), (e: unknown) => e instanceof SandboxUnavailableError);
    } finally {
      Object.defineProperty(process, 'platform', real);
    }
  });
});
