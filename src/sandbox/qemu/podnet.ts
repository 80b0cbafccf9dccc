// The pod's network, carried into the UVM (the model is Kata's "tcfilter"): CRI made a network namespace and CNI
// put one interface in it (a veth whose peer is on the node's bridge, with the pod's IP). We create a tap inside
// that namespace, join veth and tap with tc ingress + mirred redirects in both directions (every frame from the
// bridge goes to the VM, every frame from the VM goes to the bridge; the namespace's own stack sees none), hand
// the tap's fd to QEMU over QMP (getfd), hot-add a virtio-net NIC with the veth's MAC on it (netdev_add +
// device_add: the VM may be a restored template with no pod NIC on its command line), and ask the agent to
// move that NIC into the pod's guest namespace with the veth's name, MTU, addresses and routes.
// The control NIC (QEMU user networking, restrict=on) is untouched: pod traffic never uses it.
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import type { Logger } from '../../util/log.js';
import type { QmpClient } from './qmp.js';
import { openTapInNetns, sendWithFd } from './tap.js';

export const POD_TAP = 'lcowtap0';
const NETDEV_ID = 'podnet0';
const DEVICE_ID = 'podnic0';

/** A CNI result the shim cannot carry into the VM: the message names what was found. */
export class PodNetworkError extends Error {
  override readonly name = 'PodNetworkError';
}

export interface PodInterface {
  /** Its name in the pod namespace (e.g. eth0). */
  name: string;
  mac: string;
  mtu: number;
  addresses: Array<{ address: string; prefixLen: number }>;
  routes: Array<{ destination: string; gateway: string }>;
  /** IPv6 global addresses found (not carried: IPv4 only for now). */
  ipv6: string[];
}

interface IpLink {
  ifname: string;
  link_type?: string;
  address?: string;
  mtu?: number;
}
interface IpAddr {
  ifname: string;
  addr_info?: Array<{ family?: string; local?: string; prefixlen?: number; scope?: string }>;
}
interface IpRoute {
  dst?: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
}

/** Runs CMD inside the network namespace at `netnsPath` (util-linux nsenter); resolves stdout. */
export function inNetns(netnsPath: string, cmd: string, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn('nsenter', [`--net=${netnsPath}`, '--', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    c.stdout.on('data', (d: Buffer) => out.push(d));
    c.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(Buffer.concat(out).toString());
      else reject(new Error(`${cmd} ${args.join(' ')} in ${netnsPath}: ${Buffer.concat(err).toString().trim()}`));
    });
  });
}

/**
 * The one interface CNI built in the namespace, from `ip -j` output (link, IPv4 and IPv6 addresses, IPv4
 * routes). Pure: unit-tested on recorded output. Throws PodNetworkError naming what it found when the result
 * cannot be mapped onto one NIC.
 */
export function parsePodInterface(
  netnsPath: string,
  links: IpLink[],
  addrs4: IpAddr[],
  addrs6: IpAddr[],
  routes4: IpRoute[],
): PodInterface {
  const candidates = links.filter((l) => l.link_type !== 'loopback' && l.ifname !== POD_TAP);
  if (candidates.length === 0)
    throw new PodNetworkError(`the pod network namespace ${netnsPath} has no interface besides lo (CNI made none)`);
  if (candidates.length > 1)
    throw new PodNetworkError(
      `the pod network namespace ${netnsPath} has ${candidates.length} interfaces ` +
        `(${candidates
          .map((c) => `${c.ifname}/${c.link_type ?? '?'}`)
          .sort()
          .join(', ')}); lcow carries exactly one into the UVM`,
    );
  const link = candidates[0]!;
  if (!link.address || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(link.address))
    throw new PodNetworkError(`pod interface ${link.ifname} has no Ethernet address (${link.link_type ?? '?'})`);
  const global = (a: IpAddr[], family: string): Array<{ local: string; prefixlen: number }> =>
    a
      .filter((x) => x.ifname === link.ifname)
      .flatMap((x) => x.addr_info ?? [])
      .filter((i) => i.family === family && i.scope === 'global' && i.local && i.prefixlen !== undefined)
      .map((i) => ({ local: i.local!, prefixlen: i.prefixlen! }));
  const v4 = global(addrs4, 'inet');
  const v6 = global(addrs6, 'inet6').map((a) => `${a.local}/${a.prefixlen}`);
  if (v4.length === 0) {
    throw new PodNetworkError(
      v6.length
        ? `pod interface ${link.ifname} is IPv6-only (${v6.join(', ')}); lcow carries IPv4 pod networks only`
        : `pod interface ${link.ifname} has no IP address`,
    );
  }
  const routes = routes4
    .filter((r) => r.dev === link.ifname && r.protocol !== 'kernel' && r.dst)
    .map((r) => ({
      destination: r.dst === 'default' || r.dst!.includes('/') ? r.dst! : `${r.dst}/32`,
      gateway: r.gateway ?? '',
    }));
  return {
    name: link.ifname,
    mac: link.address.toLowerCase(),
    mtu: link.mtu ?? 1500,
    addresses: v4.map((a) => ({ address: a.local, prefixLen: a.prefixlen })),
    routes,
    ipv6: v6,
  };
}

export async function inspectPodNetns(netnsPath: string): Promise<PodInterface> {
  const j = async <T>(args: string[]): Promise<T[]> =>
    JSON.parse((await inNetns(netnsPath, 'ip', ['-j', ...args])) || '[]') as T[];
  const [links, a4, a6, r4] = await Promise.all([
    j<IpLink>(['link', 'show']),
    j<IpAddr>(['-4', 'addr', 'show']),
    j<IpAddr>(['-6', 'addr', 'show']),
    j<IpRoute>(['-4', 'route', 'show', 'table', 'main']),
  ]);
  return parsePodInterface(netnsPath, links, a4, a6, r4);
}

/** The tc commands that join `iface` and the tap both ways (ingress qdisc + u32 match-all + mirred redirect). */
export function redirectCommands(iface: string, tap: string): string[][] {
  const redirect = (from: string, to: string): string[][] => [
    ['qdisc', 'add', 'dev', from, 'handle', 'ffff:', 'ingress'],
    [
      'filter',
      'add',
      'dev',
      from,
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
      to,
    ],
  ];
  return [...redirect(iface, tap), ...redirect(tap, iface)];
}

/** Removes the redirect from the CNI interface (the tap goes away with QEMU's fd). Never throws. */
export async function detachPodNetwork(netnsPath: string, iface: string): Promise<void> {
  // Failing is the expected case at teardown: CNI DEL may have removed the interface or the netns already, and
  // the qdisc goes with them.
  await inNetns(netnsPath, 'tc', ['qdisc', 'del', 'dev', iface, 'handle', 'ffff:', 'ingress']).catch(() => undefined);
}

export interface AttachInputs {
  netnsPath: string;
  qmp: QmpClient;
  /** Asks the agent to configure the NIC (lcow.agent.v1 ConfigureNetwork); resolves the guest netns path. */
  configureGuest: (iface: PodInterface) => Promise<string>;
  log: Logger;
}

/** Everything above, in order, undone on failure. Resolves the guest path of the pod's network namespace. */
export async function attachPodNetwork(i: AttachInputs): Promise<{ guestNetnsPath: string; iface: PodInterface }> {
  const iface = await inspectPodNetns(i.netnsPath);
  if (iface.ipv6.length)
    i.log.warn('pod interface has IPv6 addresses; only IPv4 is carried into the UVM', { ipv6: iface.ipv6 });
  const undo: Array<() => Promise<unknown>> = [];
  try {
    const fd = openTapInNetns(i.netnsPath, POD_TAP);
    try {
      await inNetns(i.netnsPath, 'ip', ['link', 'set', 'dev', POD_TAP, 'mtu', String(iface.mtu), 'up']);
      undo.push(() => detachPodNetwork(i.netnsPath, iface.name));
      for (const args of redirectCommands(iface.name, POD_TAP)) await inNetns(i.netnsPath, 'tc', args);
      await i.qmp.executeWithFd('getfd', { fdname: NETDEV_ID }, (sock, bytes) => sendWithFd(sock, bytes, fd));
    } finally {
      closeSync(fd); // QEMU holds its own copy now
    }
    undo.push(() => i.qmp.execute('closefd', { fdname: NETDEV_ID }));
    await i.qmp.execute('netdev_add', { type: 'tap', id: NETDEV_ID, fd: NETDEV_ID });
    undo.pop();
    undo.push(() => i.qmp.execute('netdev_del', { id: NETDEV_ID }));
    await i.qmp.execute('device_add', { driver: 'virtio-net-pci', id: DEVICE_ID, netdev: NETDEV_ID, mac: iface.mac });
    undo.push(() => i.qmp.execute('device_del', { id: DEVICE_ID }));
    const guestNetnsPath = await i.configureGuest(iface);
    i.log.info('pod network attached', {
      netns: i.netnsPath,
      iface: iface.name,
      mac: iface.mac,
      addresses: iface.addresses.map((a) => `${a.address}/${a.prefixLen}`),
    });
    return { guestNetnsPath, iface };
  } catch (err) {
    for (const u of undo.reverse())
      await u().catch((undoErr: unknown) =>
        i.log.warn('pod network: undoing a step of the failed attach failed', { error: undoErr }),
      );
    throw err;
  }
}
