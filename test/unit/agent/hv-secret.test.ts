// The guest's secret fetch under Hyper-V (one connection, 32 bytes, EOF), over TCP here: the same raw-fd
// connect and read run over AF_VSOCK in the guest (this host has no vsock to the host side).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { fetchSecret, isSecretUrl } from '../../../src/agent/hv-secret.js';

function serve(onConn: (s: net.Socket) => void): Promise<{ url: string; close: () => void }> {
  return new Promise((resolve) => {
    const srv = net.createServer(onConn).listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      resolve({ url: `tcp+token://127.0.0.1:${port}`, close: () => srv.close() });
    });
  });
}

describe('agent: secret hand-out (Hyper-V)', () => {
  it('recognises the vsock form of --token-file', () => {
    assert.equal(isSecretUrl('vsock://2:1025'), true);
    assert.equal(isSecretUrl('/sys/firmware/qemu_fw_cfg/by_name/opt/lcow/token/raw'), false);
  });

  it('reads exactly the 32-byte secret the host writes', async () => {
    const secret = randomBytes(32);
    const s = await serve((c) => c.end(secret));
    try {
      assert.ok((await fetchSecret(s.url, 5000)).equals(secret));
    } finally {
      s.close();
    }
  });

  it('retries a host that is not ready, and gives up with the reason at the deadline', async () => {
    let calls = 0;
    const secret = randomBytes(32);
    const s = await serve((c) => (++calls < 3 ? c.end(secret.subarray(0, 5)) : c.end(secret)));
    try {
      assert.ok((await fetchSecret(s.url, 5000)).equals(secret));
      assert.equal(calls, 3);
    } finally {
      s.close();
    }
    const short = await serve((c) => c.end(Buffer.alloc(4)));
    try {
      await assert.rejects(fetchSecret(short.url, 300), /closed before the secret/);
    } finally {
      short.close();
    }
  });
});
