// The agent inside a utility VM. Two modes:
//  - accept (QEMU tcp+token, hostfwd): the agent LISTENS on a control port and a 9P port in the guest; the shim
//    dials in through QEMU's hostfwd and both sides run the mutual handshake (transport/handshake.ts):
//    acceptControl / P9Acceptor. A 9P connection names its share id in the HELLO and binds the share's token
//    (from AddShare) into the MACs; AddShare registers the share and waits (bounded) for its connection; the shim
//    retries its dial until the share is registered. The accepted socket goes to mount(8) as fd 3 (trans=fd).
//  - dial (vsock): the agent dials the host's control port (the shim is the ttrpc client), mounts 9P shares by
//    dialing the host's 9P port and handing the authenticated socket to mount(8) (trans=fd).
// The secret is always a SecretSource (the token file, READ AT EVERY HANDSHAKE): a clone restored from a template
// gets a fresh secret through fw_cfg after restore, and a value captured at startup would be the template's.
// Also the vsock self-test used to exercise the AF_VSOCK transport inside a guest (vsock_loopback).
import { spawn } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { Socket } from 'node:net';
import {
  Direction,
  HandshakeIncompleteError,
  PeerProofError,
  dial,
  fixedSecret,
  newSecret,
  parseTransportUrl,
  TcpTokenListener,
  VsockListener,
  VMADDR_CID_LOCAL,
  type Admission,
  type Conn,
  type DialerAuth,
  type Purpose,
  type SecretSource,
} from '../transport/index.js';
import { dialRawFd, readRawFd } from '../transport/rawfd.js';
import type { Logger } from '../util/log.js';
import { withSpan } from '../telemetry/index.js';

/** Length of the per-share token bound into a 9P connection's handshake. */
export const SHARE_TOKEN_LENGTH = 16;

/** Dials the host's control port, retrying briefly (the host listens before the VM starts, so rarely needed). */
export async function dialControl(url: string, secret: SecretSource, log: Logger): Promise<Conn> {
  let lastErr: unknown;
  for (let i = 0; i < 20; i++) {
    try {
      return await dial(url, { secret });
    } catch (err) {
      // Whoever listens there failed its proof: it is not our shim. Never retry into it.
      if (err instanceof PeerProofError) throw err;
      lastErr = err;
      log.warn('dialing the host failed; retrying', { url, error: err });
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  throw lastErr instanceof Error ? lastErr : new Error(String(lastErr));
}

export interface P9MountRequest {
  target: string;
  aname: string;
  token: Uint8Array;
  readOnly: boolean;
  options: Record<string, string>;
}

const OPTION_RE = /^[a-z0-9_]+$/;
const VALUE_RE = /^[A-Za-z0-9_.-]*$/;

function mountOptions(req: P9MountRequest): string[] {
  if (req.token.length !== SHARE_TOKEN_LENGTH) throw new Error(`share token must be ${SHARE_TOKEN_LENGTH} bytes`);
  if (!VALUE_RE.test(req.aname) || req.aname === '') throw new Error(`invalid aname ${JSON.stringify(req.aname)}`);
  const opts: Record<string, string> = { version: '9p2000.L', msize: '262144', ...req.options };
  const parts = ['trans=fd', 'rfdno=3', 'wfdno=3', `aname=${req.aname}`];
  for (const [k, v] of Object.entries(opts)) {
    if (!OPTION_RE.test(k) || !VALUE_RE.test(v) || ['trans', 'rfdno', 'wfdno', 'aname'].includes(k))
      throw new Error(`invalid 9p mount option ${k}=${v}`);
    parts.push(v === '' ? k : `${k}=${v}`);
  }
  if (req.readOnly) parts.push('ro');
  return parts;
}

/** mount -t 9p -o trans=fd,rfdno=3,wfdno=3,... with `handle` (a connected socket) as the child's fd 3. */
function spawnMount(req: P9MountRequest, parts: string[], handle: number | Socket): Promise<void> {
  return withSpan('mount 9p', { 'lcow.share': req.aname, 'mount.target': req.target }, () =>
    mountChild(req, parts, handle),
  );
}

function mountChild(req: P9MountRequest, parts: string[], handle: number | Socket): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const child = spawn('mount', ['-t', '9p', '-o', parts.join(','), `lcow-${req.aname}`, req.target], {
      stdio: ['ignore', 'ignore', 'pipe', handle],
    });
    const err: Buffer[] = [];
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0 ? resolve() : reject(new Error(`mount 9p ${req.aname}: ${Buffer.concat(err).toString().trim()}`)),
    );
  });
}

/**
 * Dial mode: the handshake a share's connection runs. The share id is AddShare's aname and the binding its token,
 * both as the host sent them: the host's 9P listener admits exactly that id and binds exactly that token
 * (src/sandbox/shares.ts: the hcs backend, and the qemu backend over vsock).
 */
export function shareDialAuth(secret: SecretSource, req: Pick<P9MountRequest, 'aname' | 'token'>): DialerAuth {
  return {
    secret,
    direction: Direction.guestToHost,
    purpose: { kind: 'p9', shareId: req.aname },
    binding: Buffer.from(req.token),
  };
}

/** Dial mode: dial, the handshake for this share (its token bound in), mount -t 9p -o trans=fd. */
export async function mount9p(p9Url: string, secret: SecretSource, req: P9MountRequest): Promise<void> {
  const parts = mountOptions(req);
  await mkdir(req.target, { recursive: true });
  const fd = await dialRawFd(p9Url, shareDialAuth(secret, req));
  try {
    await spawnMount(req, parts, fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Stops libuv reading a socket that is about to belong to the kernel (9P trans=fd): nothing in this process
 * may take the server's replies. Called right after the handshake, before the peer can send anything more.
 */
function stopReading(socket: Socket): void {
  socket.pause();
  const h = (socket as unknown as { _handle?: { reading?: boolean; readStop?: () => number } })._handle;
  if (h?.readStop) {
    h.reading = false;
    h.readStop();
  }
}

/**
 * Accept mode, control channel: listens on URL; the first authenticated connection is the shim's ttrpc client.
 * `onListening` runs once the port listens (template mode announces it on the console: the host snapshots then).
 */
export async function acceptControl(
  url: string,
  secret: SecretSource,
  log: Logger,
  onListening?: () => void,
): Promise<Conn> {
  const u = parseTransportUrl(url);
  if (u.scheme !== 'tcp+token') throw new Error(`accept mode needs tcp+token, not ${u.scheme}`);
  const listener = await TcpTokenListener.listen({ secret, host: u.host, port: u.port, logger: log });
  log.info('agent listening for the shim', { url: listener.url });
  onListening?.();
  return new Promise<Conn>((resolve) => {
    listener.onConnection((c) => {
      // One control channel per VM: later connections are refused.
      void listener.close();
      resolve(c);
    });
  });
}

interface PendingShare {
  token: Buffer;
  resolve: (s: Socket) => void;
  /** A handshake for this share is in progress (a second one is refused until it fails). */
  claimed: boolean;
}

/**
 * Accept mode, 9P: listens on URL. A HELLO names a share id; it is admitted only while that share is pending
 * (registered by mount()) and not claimed by another handshake, and its token is bound into the MACs; once the
 * shim proved itself, mount() gets the socket. Anything else is closed without an answer (the shim retries until
 * AddShare registered the share). mount() waits at most `waitMs`.
 */
export class P9Acceptor {
  private readonly pending = new Map<string, PendingShare>();

  private constructor(
    private readonly listener: TcpTokenListener,
    private readonly log: Logger,
    private readonly waitMs: number,
  ) {
    listener.onConnection((c, purpose) => this.onConnection(c.stream as Socket, purpose));
  }

  static async listen(url: string, secret: SecretSource, log: Logger, waitMs = 30_000): Promise<P9Acceptor> {
    const u = parseTransportUrl(url);
    if (u.scheme !== 'tcp+token') throw new Error(`accept mode needs tcp+token, not ${u.scheme}`);
    // The listener needs the acceptor's admission rule and the acceptor needs the listener: tie them afterwards.
    const ref: { acceptor?: P9Acceptor } = {};
    const listener = await TcpTokenListener.listen({
      secret,
      host: u.host,
      port: u.port,
      logger: log,
      admit: (p) => ref.acceptor?.admit(p),
    });
    log.info('agent listening for 9P', { url: listener.url });
    ref.acceptor = new P9Acceptor(listener, log, waitMs);
    return ref.acceptor;
  }

  private admit(p: Purpose): Admission | undefined {
    if (p.kind !== 'p9') return undefined;
    const share = this.pending.get(p.shareId);
    if (!share || share.claimed) return undefined;
    share.claimed = true;
    return { binding: share.token, release: () => (share.claimed = false) };
  }

  private onConnection(socket: Socket, purpose: Purpose): void {
    const id = purpose.kind === 'p9' ? purpose.shareId : '';
    const share = this.pending.get(id);
    if (!share) {
      this.log.debug('9P connection for a share no longer pending', { share: id });
      socket.destroy();
      return;
    }
    stopReading(socket);
    this.pending.delete(id);
    share.resolve(socket);
  }

  /** Where the shim dials (through hostfwd). */
  get url(): string {
    return this.listener.url;
  }

  /** AddShare: registers the share, waits for its connection, mounts it. */
  async mount(req: P9MountRequest): Promise<void> {
    const parts = mountOptions(req);
    await mkdir(req.target, { recursive: true });
    const socket = await this.waitForShare(req.aname, Buffer.from(req.token));
    try {
      await spawnMount(req, parts, socket);
    } finally {
      socket.destroy();
    }
  }

  /**
   * Registers share `id` (its token is bound into the handshake) and resolves with its authenticated connection,
   * which nothing in this process reads any more (it goes to the kernel). Rejects after `waitMs`.
   */
  async waitForShare(id: string, token: Buffer): Promise<Socket> {
    if (this.pending.has(id)) throw new Error(`share ${id} is already waiting for its connection`);
    let timer: NodeJS.Timeout | undefined;
    return new Promise<Socket>((resolve, reject) => {
      const p: PendingShare = { token: Buffer.from(token), resolve, claimed: false };
      this.pending.set(id, p);
      timer = setTimeout(() => {
        if (this.pending.get(id) === p) {
          this.pending.delete(id);
          reject(new Error(`no 9P connection for share ${id} in ${this.waitMs} ms`));
        }
      }, this.waitMs);
    }).finally(() => clearTimeout(timer));
  }

  async close(): Promise<void> {
    await this.listener.close();
  }
}

/**
 * The share dial of the self-test: the agent's own 9P dial path (dialRawFd with shareDialAuth, as mount9p on
 * Hyper-V) against a vsock listener that admits the way the hcs backend's 9P listener does (a registered share id,
 * its token as the binding). The right token is handed out with its purpose and the fd carries bytes both ways
 * with none swallowed; a wrong token fails the listener's proof; an unregistered share id is closed unanswered.
 */
async function shareDialSelfTest(secret: SecretSource): Promise<boolean> {
  const port = 6000 + Math.floor(Math.random() * 1000);
  const token = newSecret().subarray(0, SHARE_TOKEN_LENGTH);
  const listener = VsockListener.listen(port, {
    secret,
    admit: (p) => (p.kind === 'p9' && p.shareId === 's1' ? { binding: token } : undefined),
  });
  const url = `vsock://${VMADDR_CID_LOCAL}:${port}`;
  const handed: Array<{ conn: Conn; purpose: Purpose }> = [];
  listener.onConnection((conn, purpose) => handed.push({ conn, purpose }));
  try {
    const fd = await dialRawFd(url, shareDialAuth(secret, { aname: 's1', token }));
    let bytesOk = false;
    try {
      for (let i = 0; i < 100 && handed.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      const server = handed[0]?.conn.stream;
      if (server) {
        const got = new Promise<Buffer>((resolve) => server.once('data', resolve));
        writeSync(fd, Buffer.from('9P?'));
        server.write(Buffer.from('9P!'));
        const [up, down] = await Promise.all([got, readRawFd(fd, 3, 5000)]);
        bytesOk = up.toString() === '9P?' && down.toString() === '9P!';
      }
    } finally {
      closeSync(fd);
    }
    const refused = async (aname: string, t: Buffer, want: new (m: string) => Error): Promise<boolean> =>
      dialRawFd(url, shareDialAuth(secret, { aname, token: t })).then(
        (f) => {
          closeSync(f);
          return false;
        },
        (err: unknown) => err instanceof want,
      );
    const wrongToken = await refused('s1', Buffer.alloc(SHARE_TOKEN_LENGTH, 1), PeerProofError);
    const unknownShare = await refused('s2', token, HandshakeIncompleteError);
    const purposeOk = handed.length === 1 && handed[0]!.purpose.kind === 'p9' && handed[0]!.purpose.shareId === 's1';
    for (const h of handed) h.conn.close();
    return bytesOk && wrongToken && unknownShare && purposeOk;
  } finally {
    await listener.close();
  }
}

/**
 * Guest self-test of the vsock transport over vsock_loopback: listen on a port, dial CID 1 through dialVsock,
 * exchange a payload both ways, check a wrong secret is refused, then the 9P share dial (shareDialSelfTest).
 * Prints "LCOW vsocktest ok ..." or "LCOW vsocktest fail ...".
 */
export async function vsockSelfTest(out: (line: string) => void): Promise<boolean> {
  const port = 5000 + Math.floor(Math.random() * 1000);
  const secret = fixedSecret(newSecret());
  const listener = VsockListener.listen(port, { secret });
  const payload = Buffer.alloc(256 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
  try {
    let handedOut = 0;
    const accepted = new Promise<Conn>((resolve) =>
      listener.onConnection((c) => {
        handedOut++;
        resolve(c);
      }),
    );
    const client = await dial(`vsock://${VMADDR_CID_LOCAL}:${port}`, { secret });
    const server = await accepted;
    // echo server
    server.stream.on('data', (d: Buffer) => server.stream.write(d));
    const echoed: Buffer[] = [];
    let got = 0;
    const done = new Promise<void>((resolve) =>
      client.stream.on('data', (d: Buffer) => {
        echoed.push(d);
        got += d.length;
        if (got >= payload.length) resolve();
      }),
    );
    client.stream.write(payload);
    await Promise.race([done, new Promise((_, rej) => setTimeout(() => rej(new Error('echo timeout')), 20_000))]);
    const same = Buffer.concat(echoed).equals(payload);
    // A wrong secret must be refused: the dialer finds the listener's proof wrong (PeerProofError), and the
    // listener, which never got a proof, hands nothing out.
    const refusedByDialer = await dial(`vsock://${VMADDR_CID_LOCAL}:${port}`, {
      secret: fixedSecret(newSecret()),
    }).then(
      (c) => {
        c.close();
        return false;
      },
      (err: unknown) => err instanceof PeerProofError,
    );
    for (let i = 0; i < 100 && listener.rejected === 0; i++) await new Promise((r) => setTimeout(r, 50));
    const refused = refusedByDialer && listener.rejected === 1 && handedOut === 1;
    client.close();
    server.close();
    const shareDial = await shareDialSelfTest(secret);
    const ok = same && refused && shareDial;
    out(
      `LCOW vsocktest ${ok ? 'ok' : 'fail'} echo=${same} bytes=${got} wrong-secret-refused=${refused} share-dial=${shareDial}`,
    );
    return ok;
  } catch (err) {
    out(`LCOW vsocktest fail ${(err as Error).message}`);
    return false;
  } finally {
    await listener.close();
  }
}
