// Transports: listen (host) / dial (guest) authenticated byte streams. See transport.ts.
import { randomBytes } from 'node:crypto';
import { dialTcpToken } from './tcp-token.js';
import { dialVsock } from './vsock.js';
import { SECRET_LENGTH, parseTransportUrl, type Conn } from './transport.js';

export * from './transport.js';
export {
  ACK,
  COMMIT,
  TcpTokenListener,
  acceptHandshake,
  dialTcpToken,
  dialTcpTokenAck,
  type DialAckOptions,
  type SecretSource,
} from './tcp-token.js';
export { VsockListener, dialVsock, FdStream, VMADDR_CID_ANY, VMADDR_CID_HOST, VMADDR_CID_LOCAL } from './vsock.js';

export function newSecret(): Buffer {
  return randomBytes(SECRET_LENGTH);
}

/** Dials a transport URL (tcp+token://HOST:PORT or vsock://CID:PORT) and presents the secret. */
export function dial(url: string, secret: Buffer): Promise<Conn> {
  const u = parseTransportUrl(url);
  if (u.scheme === 'vsock') return dialVsock(Number(u.host), u.port, secret);
  return dialTcpToken(u.host, u.port, secret);
}
