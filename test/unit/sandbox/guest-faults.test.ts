// Console lines that end a UVM's boot at once with a reason (src/sandbox/qemu/guest-faults.ts), and the many that
// must not.
import assert from 'node:assert/strict';
import { bootFault } from '../../../src/sandbox/qemu/guest-faults.js';

describe('sandbox/qemu: boot faults from the console', () => {
  it('an initrd too big for the memory names the size and both ways out', () => {
    const why = bootFault('[    1.259767] Initramfs unpacking failed: write error', 384)!;
    assert.match(why, /does not fit in the UVM's 384 MiB/);
    assert.match(why, /"Initramfs unpacking failed: write error"/);
    assert.match(why, /memory\.sizeinmb/);
    assert.match(why, /rootfs\.erofs/);
  });

  it('an out-of-memory panic and a fatal line of our init', () => {
    assert.match(
      bootFault('[    2.0] Kernel panic - not syncing: System is deadlocked on memory', 256)!,
      /ran out of its 256 MiB/,
    );
    assert.match(bootFault('LCOW fatal no root image on /dev/vda', 1024)!, /init failed: "LCOW fatal no root image/);
  });

  it('ordinary boot lines are not faults; a long hostile line is quoted, bounded', () => {
    for (const l of [
      'LCOW init uptime=2.49 kernel=6.1.0',
      '[    0.5] Freeing initrd memory: 8116K',
      'random: crng reseeded due to virtual machine fork',
      'x LCOW fatal not at the start',
    ])
      assert.equal(bootFault(l, 1024), undefined, l);
    const why = bootFault(`LCOW fatal ${'"'.repeat(5000)}`, 1024)!;
    assert.ok(why.length < 600, String(why.length));
  });
});
