// Host ports for QEMU's hostfwd rules.
import { createServer } from 'node:net';

/** A free TCP port on 127.0.0.1 right now (QEMU binds it next; boot() handles losing the race). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr !== 'string' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
