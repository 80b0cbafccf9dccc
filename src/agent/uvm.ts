// The agent inside a utility VM. Two modes:
//  - accept (QEMU tcp+token, hostfwd): the agent LISTENS on a control port and a 9P port in the guest; the shim
//    dials in through QEMU's hostfwd and presents the secret first (acceptControl / P9Acceptor). For 9P the
//    secret is followed by the share's token; AddShare registers the share and waits (bounded) for its
//    connection; the shim retries its dial until the share is registered. The accepted socket goes to mount(8)
//    as fd 3 (trans=fd).
//  - dial (vsock): the agent dials the host's control port (the shim is the ttrpc client), mounts 9P shares by
//    dialing the host's 9P port and handing the connected socket to mount(8) (trans=fd).
// Also the vsock self-test used to exercise the AF_VSOCK transport inside a guest (vsock_loopback).
import { spawn } from 'node:child_process';
import { timingSafeEqual } from 'node:crypto';
import { closeSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import type { Socket } from 'node:net';
import {
  dial,
  newSecret,
  parseTransportUrl,
  readExactly,
  acceptHandshake,
  TcpTokenListener,
  VsockListener,
  VMADDR_CID_LOCAL,
  SECRET_LENGTH,
  AUTH_TIMEOUT_MS,
  type Conn,
  type SecretSource,
} from '../transport/index.js';
import { dialRawFd } from '../transport/rawfd.js';
import type { Logger } from '../util/log.js';

/** Length of the per-share token the guest sends after the transport secret on the 9P port. */
export const SHARE_TOKEN_LENGTH = 16;
export const P9_ACK = 0x01;

export function readSecret(path: string): Buffer {
  const secret = readFileSync(path);
  if (secret.length !== SECRET_LENGTH) throw new Error(`${path}: the secret must be ${SECRET_LENGTH} bytes`);
  return secret;
}

/** Dials the host's control port, retrying briefly (the host listens before the VM starts, so rarely needed). */
export async function dialControl(url: string, secret: Buffer, log: Logger): Promise<Conn> {
  let lastErr: unknown;
  for (let i = 0; i < 20; i++) {
    try {
      return await dial(url, secret);
    } catch (err) {
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

/** Dial mode: dial, secret + share token, wait for the host's ack, mount -t 9p -o trans=fd. */
export async function mount9p(p9Url: string, secret: Buffer, req: P9MountRequest): Promise<void> {
  const parts = mountOptions(req);
  await mkdir(req.target, { recursive: true });
  const fd = await dialRawFd(p9Url, Buffer.concat([secret, Buffer.from(req.token)]), 1);
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
 * Accept mode, control channel: listens on URL; the first committed connection is the shim's ttrpc client.
 * `secret` is read at every handshake when it is a function (a UVM restored from a template has a new one).
 * `onListening` runs once the port listens.
 */
export async function acceptControl(
  url: string,
  secret: SecretSource,
  log: Logger,
  onListening?: () => void,
): Promise<Conn> {
  const u = parseTransportUrl(url);
  if (u.scheme !== 'tcp+token') throw new Error(`accept mode needs tcp+token, not ${u.scheme}`);
  const listener = await TcpTokenListener.listen(secret, { host: u.host, port: u.port, ack: true });
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
  reject: (e: Error) => void;
  claimed: boolean;
}

/**
 * Accept mode, 9P: listens on URL. Each connection: secret (listener), share token, then the share must be
 * pending (registered by mount()); if so ACK, the shim's COMMIT, and mount() gets the socket. An unknown token
 * is closed (the shim retries until AddShare registered the share). mount() waits at most `waitMs`.
 */
export class P9Acceptor {
  private readonly pending = new Set<PendingShare>();

  private constructor(
    private readonly listener: TcpTokenListener,
    private readonly log: Logger,
    private readonly waitMs: number,
  ) {
    listener.onConnection((c) => this.onConnection(c.stream as Socket));
  }

  static async listen(url: string, secret: SecretSource, log: Logger, waitMs = 30_000): Promise<P9Acceptor> {
    const u = parseTransportUrl(url);
    if (u.scheme !== 'tcp+token') throw new Error(`accept mode needs tcp+token, not ${u.scheme}`);
    const listener = await TcpTokenListener.listen(secret, { host: u.host, port: u.port });
    log.info('agent listening for 9P', { url: listener.url });
    return new P9Acceptor(listener, log, waitMs);
  }

  private onConnection(socket: Socket): void {
    readExactly(socket, SHARE_TOKEN_LENGTH, AUTH_TIMEOUT_MS)
      .then(async (token) => {
        let match: PendingShare | undefined;
        for (const p of this.pending) if (timingSafeEqual(p.token, token) && !p.claimed) match = p;
        if (!match) throw new Error('unknown share token');
        match.claimed = true;
        try {
          await acceptHandshake(socket);
        } catch (err) {
          match.claimed = false;
          throw err;
        }
        stopReading(socket);
        if (!this.pending.delete(match)) throw new Error('share no longer pending');
        match.resolve(socket);
      })
      .catch((err: unknown) => {
        this.log.debug('9P connection refused', { error: err });
        socket.destroy();
      });
  }

  /** AddShare: registers the share, waits for its connection, mounts it. */
  async mount(req: P9MountRequest): Promise<void> {
    const parts = mountOptions(req);
    await mkdir(req.target, { recursive: true });
    let timer: NodeJS.Timeout | undefined;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const p: PendingShare = { token: Buffer.from(req.token), resolve, reject, claimed: false };
      this.pending.add(p);
      timer = setTimeout(() => {
        if (this.pending.delete(p)) reject(new Error(`no 9P connection for share ${req.aname} in ${this.waitMs} ms`));
      }, this.waitMs);
    }).finally(() => clearTimeout(timer));
    try {
      await spawnMount(req, parts, socket);
    } finally {
      socket.destroy();
    }
  }

  async close(): Promise<void> {
    await this.listener.close();
  }
}

/**
 * Guest self-test of the vsock transport over vsock_loopback: listen on a port, dial CID 1 through dialVsock,
 * exchange the secret and a payload both ways. Prints "LCOW vsocktest ok ..." or "LCOW vsocktest fail ...".
 */
export async function vsockSelfTest(out: (line: string) => void): Promise<boolean> {
  const port = 5000 + Math.floor(Math.random() * 1000);
  const secret = newSecret();
  const listener = VsockListener.listen(port, secret);
  const payload = Buffer.alloc(256 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
  try {
    const accepted = new Promise<Conn>((resolve) => listener.onConnection(resolve));
    const client = await dial(`vsock://${VMADDR_CID_LOCAL}:${port}`, secret);
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
    // A wrong secret must be refused: the listener closes the connection.
    const bad = await dial(`vsock://${VMADDR_CID_LOCAL}:${port}`, newSecret());
    const refused = await new Promise<boolean>((resolve) => {
      bad.stream.on('data', () => resolve(false));
      bad.stream.on('close', () => resolve(true));
      bad.stream.on('end', () => resolve(true));
      setTimeout(() => resolve(false), 10_000);
    });
    client.close();
    server.close();
    bad.close();
    const ok = same && refused;
    out(`LCOW vsocktest ${ok ? 'ok' : 'fail'} echo=${same} bytes=${got} wrong-secret-refused=${refused}`);
    return ok;
  } catch (err) {
    out(`LCOW vsocktest fail ${(err as Error).message}`);
    return false;
  } finally {
    await listener.close();
  }
}
