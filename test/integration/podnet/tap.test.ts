// The host half of the pod NIC against the real kernel (no VM): a tap opened inside another network namespace
// through setns on the main thread, the thread back home afterwards (also when it fails), the tap gone with its
// last fd; and the CNI-interface inspection + tc redirects on a namespace set up as CNI's bridge plugin does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, readlinkSync } from 'node:fs';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { openTapInNetns } from '../../../src/sandbox/qemu/tap.js';
import {
  detachPodNetwork,
  inNetns,
  inspectPodNetns,
  POD_TAP,
  redirectCommands,
} from '../../../src/sandbox/qemu/podnet.js';

const NS = `lcow-tap-${process.pid}`;
const PATH = `/var/run/netns/${NS}`;
const PEER_NS = `${NS}-bridge`;
const ip = (...args: string[]): string =>
  execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const home = (): string => readlinkSync('/proc/thread-self/ns/net');

describe('pod NIC host side: tap in a netns, tc redirects (real kernel)', function () {
  before(function () {
    requirePrerequisite(
      this,
      process.getuid?.() !== 0 ? 'needs root' : !existsSync('/dev/net/tun') ? 'no /dev/net/tun' : undefined,
    );
    ip('netns', 'add', NS);
    ip('netns', 'add', PEER_NS);
    // As CNI's bridge plugin leaves it: a veth named eth0 with an address and a default route, its peer outside.
    ip('-n', NS, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0');
    ip('-n', NS, 'link', 'set', 'peer0', 'netns', PEER_NS);
    ip('-n', NS, 'link', 'set', 'eth0', 'address', '0a:58:0a:f1:07:02', 'up');
    ip('-n', NS, 'addr', 'add', '10.241.250.2/24', 'dev', 'eth0');
    ip('-n', NS, 'route', 'add', 'default', 'via', '10.241.250.1');
  });

  after(function () {
    for (const ns of [NS, PEER_NS]) if (existsSync(`/var/run/netns/${ns}`)) ip('netns', 'del', ns);
    assert.ok(!existsSync(PATH));
  });

  it('opens the tap inside the namespace; the thread comes back; the tap dies with its fd', function () {
    const before = home();
    const fd = openTapInNetns(PATH, POD_TAP);
    try {
      assert.equal(home(), before, 'the main thread must be back in its own netns');
      assert.match(ip('-n', NS, 'link', 'show', POD_TAP), new RegExp(POD_TAP));
      assert.throws(() => ip('link', 'show', POD_TAP), 'the tap must not exist in the host namespace');
    } finally {
      closeSync(fd);
    }
    assert.throws(() => ip('-n', NS, 'link', 'show', POD_TAP), 'a non-persistent tap goes with its last fd');
  });

  it('a bad namespace path fails cleanly and leaves the thread at home', function () {
    const before = home();
    assert.throws(() => openTapInNetns('/etc/hostname', POD_TAP), /setns/);
    assert.throws(() => openTapInNetns('/nonexistent/netns', POD_TAP), /ENOENT/);
    assert.equal(home(), before);
  });

  it('inspects the CNI interface, installs the redirects both ways, and removes them', async function () {
    const fd = openTapInNetns(PATH, POD_TAP);
    try {
      const iface = await inspectPodNetns(PATH);
      assert.deepEqual(
        { name: iface.name, mac: iface.mac, addresses: iface.addresses, routes: iface.routes },
        {
          name: 'eth0',
          mac: '0a:58:0a:f1:07:02',
          addresses: [{ address: '10.241.250.2', prefixLen: 24 }],
          routes: [{ destination: 'default', gateway: '10.241.250.1' }],
        },
      );
      for (const args of redirectCommands('eth0', POD_TAP)) await inNetns(PATH, 'tc', args);
      const filters = await inNetns(PATH, 'tc', ['filter', 'show', 'dev', 'eth0', 'parent', 'ffff:']);
      assert.match(filters, new RegExp(`mirred \\(Egress Redirect to device ${POD_TAP}\\)`));
      await detachPodNetwork(PATH, 'eth0');
      assert.doesNotMatch(await inNetns(PATH, 'tc', ['qdisc', 'show', 'dev', 'eth0']), /ingress/);
    } finally {
      closeSync(fd);
    }
  });
});
