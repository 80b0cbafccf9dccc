// The AF_VSOCK transport (src/transport/vsock.ts) exercised inside the real guest: this host has no
// /dev/vhost-vsock, so the UVM image boots with lcow.mode=vsocktest; its init loads vsock_loopback with the other
// modules and runs `lcow-agent --vsock-selftest`: listen on a port through VsockListener, dial CID 1
// (VMADDR_CID_LOCAL) through dialVsock, echo 256 KiB both ways, check a wrong secret is refused; then the agent's
// own 9P share dial (dialRawFd + shareDialAuth, what it runs on Hyper-V) against a listener admitting as the hcs
// backend's 9P listener does (right token handed out, wrong token and unknown share refused); close, exit.
// The result goes to the serial console; the agent must also exit (no pool thread stuck in a vsock call) so
// that the VM powers off by itself.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { guestImageArgs } from '../../../src/sandbox/qemu/config.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const KERNEL = join(ROOT, 'build/guest/vmlinuz');
const INITRD = join(ROOT, 'build/guest/initrd.img');
const ROOTFS = existsSync(join(ROOT, 'build/guest/rootfs.erofs')) ? join(ROOT, 'build/guest/rootfs.erofs') : '';

const unavailable = ((): string | undefined => {
  if (!existsSync(INITRD) || !existsSync(KERNEL)) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  return undefined;
})();

/** Boots the UVM image with extra kernel command line words; resolves with the console once QEMU exits. */
export function bootImage(
  append: string[],
  timeoutMs: number,
): Promise<{ console: string; code: number | null; timedOut: boolean; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolvePromise) => {
    const q = spawn(
      'qemu-system-x86_64',
      [
        '-name',
        `lcow-e2e-vsocktest-${process.pid}`,
        '-accel',
        'tcg',
        '-machine',
        'pc',
        '-m',
        '1024',
        '-smp',
        '1',
        ...guestImageArgs(KERNEL, INITRD, ROOTFS),
        '-append',
        ['console=ttyS0', 'quiet', 'loglevel=3', 'panic=-1', 'tsc=reliable', 'no_timer_check', ...append].join(' '),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    q.stdout.on('data', (d: Buffer) => (out += d.toString()));
    q.stderr.on('data', (d: Buffer) => (out += d.toString()));
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      q.kill('SIGKILL');
    }, timeoutMs);
    q.on('close', (code) => {
      clearTimeout(t);
      resolvePromise({ console: out, code, timedOut, ms: Date.now() - t0 });
    });
  });
}

describe('e2e: vsock transport inside the guest (vsock_loopback)', function () {
  this.timeout(240_000);

  before(function () {
    requirePrerequisite(this, unavailable);
  });

  it('listen + dial CID 1 through our transport, bytes both ways, wrong secret refused, share dial; the VM powers off', async () => {
    const r = await bootImage(['lcow.mode=vsocktest'], 180_000);
    const lines = r.console.split(/\r?\n/).filter((l) => l.startsWith('LCOW '));
    assert.ok(!/LCOW warn insmod vsock/.test(r.console), r.console);
    assert.ok(
      lines.some((l) => /^LCOW vsocktest ok echo=true bytes=262144 wrong-secret-refused=true share-dial=true/.test(l)),
      lines.join('\n') || r.console.slice(-3000),
    );
    assert.ok(lines.includes('LCOW vsocktest exited rc=0'), `the self-test did not exit: ${lines.join('\n')}`);
    assert.equal(r.timedOut, false, 'the VM did not power off by itself');
  });
});
