// The guest side of the pod network (src/agent/network.ts): validation of the host's request, the `ip` commands
// that build the pod namespace, and PodNetwork.configure against a fake /sys/class/net and a recording runner.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentError } from '../../../src/agent/agent.js';
import {
  networkCommands,
  PodNetwork,
  POD_NETNS,
  validateNetworkRequest,
  type NetworkRequest,
} from '../../../src/agent/network.js';
import { silentLogger } from '../../../src/util/log.js';

const req = (over: Partial<NetworkRequest> = {}): NetworkRequest => ({
  mac: '0a:58:0a:f1:07:02',
  name: 'eth0',
  mtu: 1450,
  addresses: [{ address: '10.241.7.2', prefixLen: 24 }],
  routes: [
    { destination: 'default', gateway: '10.241.7.1' },
    { destination: '10.241.8.0/24', gateway: '' },
  ],
  timeoutMs: 300,
  ...over,
});

describe('agent network: the pod namespace in the guest', () => {
  it('validates what the host sends', () => {
    validateNetworkRequest(req());
    const bad: Array<[Partial<NetworkRequest>, RegExp]> = [
      [{ mac: '0A:58:0A:F1:07:02' }, /invalid MAC/],
      [{ mac: 'aa:bb' }, /invalid MAC/],
      [{ name: 'lo' }, /invalid interface name/],
      [{ name: 'eth0; reboot' }, /invalid interface name/],
      [{ name: 'a-very-long-interface' }, /invalid interface name/],
      [{ mtu: 20 }, /invalid MTU/],
      [{ addresses: [] }, /no address/],
      [{ addresses: [{ address: 'fd00::1', prefixLen: 64 }] }, /invalid address/],
      [{ addresses: [{ address: '10.0.0.1', prefixLen: 33 }] }, /invalid address/],
      [{ routes: [{ destination: '10.0.0.0/33', gateway: '' }] }, /invalid IPv4 destination/],
      [{ routes: [{ destination: 'default', gateway: 'example.com' }] }, /invalid gateway/],
      [{ routes: Array.from({ length: 65 }, () => ({ destination: 'default', gateway: '' })) }, /more than 64/],
    ];
    for (const [over, re] of bad)
      assert.throws(
        () => validateNetworkRequest(req(over)),
        (e: Error) => e instanceof AgentError && e.code === 'InvalidArgument' && re.test(e.message),
        JSON.stringify(over),
      );
  });

  it('builds the namespace: move, rename, MTU, address, up, on-link routes before gateway routes', () => {
    const n = ['-n', POD_NETNS];
    assert.deepEqual(networkCommands(req(), 'eth1'), [
      ['netns', 'add', POD_NETNS],
      ['link', 'set', 'dev', 'eth1', 'netns', POD_NETNS],
      [...n, 'link', 'set', 'dev', 'eth1', 'name', 'eth0'],
      [...n, 'link', 'set', 'dev', 'eth0', 'mtu', '1450'],
      [...n, 'addr', 'add', '10.241.7.2/24', 'dev', 'eth0'],
      [...n, 'link', 'set', 'dev', 'lo', 'up'],
      [...n, 'link', 'set', 'dev', 'eth0', 'up'],
      [...n, 'route', 'replace', '10.241.8.0/24', 'scope', 'link', 'dev', 'eth0'],
      [...n, 'route', 'replace', 'default', 'via', '10.241.7.1', 'dev', 'eth0'],
    ]);
  });

  describe('PodNetwork.configure', () => {
    let sys: string;
    beforeEach(() => {
      sys = mkdtempSync(join(tmpdir(), 'lcow-sysnet-'));
      for (const [name, mac] of [
        ['eth0', '52:54:00:12:34:56'],
        ['eth1', '0a:58:0a:f1:07:02'],
      ]) {
        mkdirSync(join(sys, name));
        writeFileSync(join(sys, name, 'address'), `${mac}\n`);
      }
    });
    afterEach(() => rmSync(sys, { recursive: true, force: true }));

    it('finds the NIC by MAC (not the control NIC), runs the commands, answers the netns path; once', async () => {
      const ran: string[][] = [];
      const net = new PodNetwork(async (cmd, args) => void ran.push([cmd, ...args]), silentLogger, sys);
      assert.equal(await net.configure(req()), '/var/run/netns/lcow-pod');
      assert.deepEqual(ran[1], ['ip', 'link', 'set', 'dev', 'eth1', 'netns', POD_NETNS]);
      assert.ok(!ran.some((a) => a.includes('eth0') && a.includes('netns') && a.indexOf('eth0') === 4));
      await assert.rejects(net.configure(req()), (e: AgentError) => e.code === 'AlreadyExists');
    });

    it('a NIC that never appears: FailedPrecondition after the timeout, nothing run', async () => {
      const ran: string[][] = [];
      const net = new PodNetwork(async (cmd, args) => void ran.push([cmd, ...args]), silentLogger, sys);
      await assert.rejects(
        net.configure(req({ mac: '0a:58:0a:f1:07:99', timeoutMs: 200 })),
        (e: AgentError) => e.code === 'FailedPrecondition' && /no NIC with MAC 0a:58:0a:f1:07:99/.test(e.message),
      );
      assert.deepEqual(ran, []);
    });

    it('a failing command: the namespace is deleted again and the error says what failed', async () => {
      const ran: string[][] = [];
      const net = new PodNetwork(
        async (cmd, args) => {
          ran.push([cmd, ...args]);
          if (args.includes('addr')) throw new Error('RTNETLINK answers: File exists');
        },
        silentLogger,
        sys,
      );
      await assert.rejects(net.configure(req()), /configuring the pod network failed: RTNETLINK answers: File exists/);
      assert.deepEqual(ran.at(-1), ['ip', 'netns', 'del', POD_NETNS]);
    });
  });
});
