// Transports: listen / dial mutually authenticated byte streams. See transport.ts and handshake.ts.
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dialTcpToken } from './tcp-token.js';
import { dialVsock } from './vsock.js';
import { Direction, SECRET_LENGTH, checkSecret, type Purpose, type SecretSource } from './handshake.js';
import { parseTransportUrl, type Conn } from './transport.js';

export * from './transport.js';
export * from './handshake.js';
export { TcpTokenListener, dialTcpToken, type DialOptions } from './tcp-token.js';
export { controlOnly, type ListenOptions } from './authenticator.js';
export { formatVsockPorts, parseVsockPorts, type VsockPorts } from './vsock-ports.js';
export {
  VsockListener,
  VsockAdmission,
  dialVsock,
  parseSockaddrVm,
  vsockBindProbe,
  FdStream,
  VHOST_VSOCK_DEVICE,
  VMADDR_CID_ANY,
  VMADDR_CID_HOST,
  VMADDR_CID_LOCAL,
  VMADDR_PORT_ANY,
  type VsockAddress,
  type VsockListenOptions,
} from './vsock.js';

export function newSecret(): Buffer {
  return randomBytes(SECRET_LENGTH);
}

/**
 * The secret as a file holds it, READ AGAIN AT EVERY CALL (the SecretSource contract): the guest's fw_cfg token
 * file changes under a running agent when a UVM clone is restored from a template and handed a fresh secret.
 */
export function secretFromFile(path: string): SecretSource {
  return async () => {
    const s = await readFile(path);
    try {
      checkSecret(s);
    } catch {
      throw new Error(`${path}: the secret must be ${SECRET_LENGTH} bytes, not ${s.length}`);
    }
    return s;
  };
}

export interface DialUrlOptions {
  secret: SecretSource;
  purpose?: Purpose;
  binding?: Buffer;
  /** Default per scheme as deployed: tcp+token host dials guest (hostfwd), vsock guest dials host. */
  direction?: Direction;
  timeoutMs?: number;
}

/** Dials a transport URL (tcp+token://HOST:PORT or vsock://CID:PORT) and authenticates (one attempt for vsock). */
export function dial(url: string, opts: DialUrlOptions): Promise<Conn> {
  const u = parseTransportUrl(url);
  const purpose = opts.purpose ?? { kind: 'control' };
  if (u.scheme === 'vsock')
    return dialVsock(
      Number(u.host),
      u.port,
      { ...opts, purpose, direction: opts.direction ?? Direction.guestToHost },
      opts.timeoutMs,
    );
  return dialTcpToken(u.host, u.port, { ...opts, purpose, timeoutMs: opts.timeoutMs ?? 10_000 });
}
export {
  HvsockListener,
  OneShotHvsockListener,
  dialHvsock,
  vsockServiceId,
  vsockPortOf,
  normalizeGuid,
  type HvsockAddress,
  type HvsockOptions,
  type HvsockListenOptions,
} from './hvsock.js';
