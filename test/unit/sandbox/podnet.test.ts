// The pod-network mapping on the host side (src/sandbox/qemu/podnet.ts): what `ip -j` shows in a CNI network
// namespace (recorded from iproute2 6.1 on a namespace set up as CNI's bridge plugin does) becomes the one NIC
// the UVM gets, or a clear error naming what was found.
import assert from 'node:assert/strict';
import { parsePodInterface, PodNetworkError, POD_TAP, redirectCommands } from '../../../src/sandbox/qemu/podnet.js';

const NS = '/var/run/netns/cni-test';
const lo = { ifname: 'lo', link_type: 'loopback', address: '00:00:00:00:00:00', mtu: 65536 };
const eth0 = { ifname: 'eth0', link_type: 'ether', address: '0A:58:0a:f1:07:02', mtu: 1450 };
const addr4 = [
  { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
  { ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.241.7.2', prefixlen: 24, scope: 'global' }] },
];
const addr6 = [
  { ifname: 'lo', addr_info: [{ family: 'inet6', local: '::1', prefixlen: 128, scope: 'host' }] },
  { ifname: 'eth0', addr_info: [{ family: 'inet6', local: 'fe80::858:aff:fef1:702', prefixlen: 64, scope: 'link' }] },
];
const routes4 = [
  { dst: 'default', gateway: '10.241.7.1', dev: 'eth0', flags: [] },
  { dst: '10.241.7.0/24', dev: 'eth0', protocol: 'kernel', scope: 'link', prefsrc: '10.241.7.2' },
  { dst: '10.96.0.10', gateway: '10.241.7.1', dev: 'eth0' },
];

describe('podnet: mapping a CNI network namespace onto one UVM NIC', () => {
  it('one veth with IPv4: MAC (lower-case), MTU, addresses, non-kernel routes (host routes as /32)', () => {
    const p = parsePodInterface(NS, [lo, eth0], addr4, addr6, routes4);
    assert.deepEqual(p, {
      name: 'eth0',
      mac: '0a:58:0a:f1:07:02',
      mtu: 1450,
      addresses: [{ address: '10.241.7.2', prefixLen: 24 }],
      routes: [
        { destination: 'default', gateway: '10.241.7.1' },
        { destination: '10.96.0.10/32', gateway: '10.241.7.1' },
      ],
      ipv6: [],
    });
  });

  it('our own tap in the namespace is not a candidate (a retried attach)', () => {
    const tap = { ifname: POD_TAP, link_type: 'ether', address: 'aa:bb:cc:dd:ee:ff', mtu: 1450 };
    assert.equal(parsePodInterface(NS, [lo, eth0, tap], addr4, addr6, routes4).name, 'eth0');
  });

  it('no interface besides lo: an error saying CNI made none', () => {
    assert.throws(
      () => parsePodInterface(NS, [lo], addr4.slice(0, 1), addr6.slice(0, 1), []),
      (e: Error) => e instanceof PodNetworkError && /no interface besides lo/.test(e.message) && e.message.includes(NS),
    );
  });

  it('several interfaces: an error naming each', () => {
    const net1 = { ifname: 'net1', link_type: 'ether', address: '0a:58:0a:f2:00:05', mtu: 1500 };
    assert.throws(
      () => parsePodInterface(NS, [lo, eth0, net1], addr4, addr6, routes4),
      /has 2 interfaces \(eth0\/ether, net1\/ether\); lcow carries exactly one/,
    );
  });

  it('IPv6-only: an error naming the addresses; dual stack keeps IPv4 and reports the IPv6 ones', () => {
    const v6 = [
      ...addr6,
      { ifname: 'eth0', addr_info: [{ family: 'inet6', local: 'fd00:10::5', prefixlen: 64, scope: 'global' }] },
    ];
    assert.throws(
      () => parsePodInterface(NS, [lo, eth0], addr4.slice(0, 1), v6, []),
      /eth0 is IPv6-only \(fd00:10::5\/64\); lcow carries IPv4 pod networks only/,
    );
    assert.deepEqual(parsePodInterface(NS, [lo, eth0], addr4, v6, routes4).ipv6, ['fd00:10::5/64']);
  });

  it('no address at all, or no Ethernet address: clear errors', () => {
    assert.throws(() => parsePodInterface(NS, [lo, eth0], addr4.slice(0, 1), addr6, []), /eth0 has no IP address/);
    const tun = { ifname: 'tun0', link_type: 'none', mtu: 1500 };
    assert.throws(() => parsePodInterface(NS, [lo, tun], addr4, addr6, []), /tun0 has no Ethernet address \(none\)/);
  });

  it('tc: ingress qdisc + match-all u32 + mirred egress redirect, both directions', () => {
    assert.deepEqual(redirectCommands('eth0', 'lcowtap0'), [
      ['qdisc', 'add', 'dev', 'eth0', 'handle', 'ffff:', 'ingress'],
      [
        'filter',
        'add',
        'dev',
        'eth0',
        'parent',
        'ffff:',
        'protocol',
        'all',
        'u32',
        'match',
        'u8',
        '0',
        '0',
        'action',
        'mirred',
        'egress',
        'redirect',
        'dev',
        'lcowtap0',
      ],
      ['qdisc', 'add', 'dev', 'lcowtap0', 'handle', 'ffff:', 'ingress'],
      [
        'filter',
        'add',
        'dev',
        'lcowtap0',
        'parent',
        'ffff:',
        'protocol',
        'all',
        'u32',
        'match',
        'u8',
        '0',
        '0',
        'action',
        'mirred',
        'egress',
        'redirect',
        'dev',
        'eth0',
      ],
    ]);
  });
});
