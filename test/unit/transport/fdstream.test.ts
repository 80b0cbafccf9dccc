// FdStream (the vsock byte stream) on a unix socketpair: the same non-blocking read/write/poller code as on an
// AF_VSOCK fd, without needing vsock on the host. Bytes both ways (with backpressure), EOF, destroy.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { FdStream } from '../../../src/transport/index.js';
import { readExactly } from '../../../src/transport/transport.js';

const require = createRequire(import.meta.url);

function socketpair(): [number, number] {
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  const sp = c.func('int socketpair(int domain, int type, int protocol, void *sv)');
  const sv = Buffer.alloc(8);
  // AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC
  if (sp(1, 1 | 0o2000000, 0, sv) !== 0) throw new Error('socketpair failed');
  return [sv.readInt32LE(0), sv.readInt32LE(4)];
}

describe('transport: FdStream (non-blocking fd stream used for vsock)', function () {
  this.timeout(20_000);

  it('bytes flow both ways, 8 MiB with backpressure, then EOF on end()', async () => {
    const [a, b] = socketpair();
    const sa = new FdStream(a);
    const sb = new FdStream(b);
    try {
      const big = Buffer.alloc(8 << 20);
      for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
      const got = readExactly(sb, big.length, 15_000);
      sa.write(big);
      assert.ok((await got).equals(big));
      sb.write('pong');
      assert.equal((await readExactly(sa, 4, 5000)).toString(), 'pong');
      const ended = new Promise<void>((r) => sb.once('end', r));
      sb.resume();
      sa.end();
      await ended;
    } finally {
      sa.destroy();
      sb.destroy();
    }
  });

  it('destroy() closes the fd: the peer sees EOF, and nothing keeps the process alive', async () => {
    const [a, b] = socketpair();
    const sa = new FdStream(a);
    const sb = new FdStream(b);
    const ended = new Promise<void>((r) => sb.once('end', r));
    sb.resume();
    sa.resume(); // a pending read, then destroyed
    await new Promise((r) => setTimeout(r, 50));
    sa.destroy();
    await ended;
    sb.destroy();
  });
});
