// The pod's network inside the UVM. The host hot-added a virtio NIC whose other end is a tap joined to the pod's
// CNI interface (src/sandbox/qemu/podnet.ts). Here: a network namespace for the pod (`ip netns add`, a bind-mounted
// nsfs file that runc's namespace path can name), the NIC found by its MAC and moved there under the CNI
// interface's name, with its MTU, addresses and routes. The control NIC (QEMU user networking, the agent's own
// listeners) stays in the guest's root namespace, which no pod container joins.
import { readdir, readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { join } from 'node:path';
import { AgentError } from './agent.js';
import type { Logger } from '../util/log.js';

export const POD_NETNS = 'lcow-pod';
/** iproute2's NETNS_RUN_DIR (the image links /var/run to /run). */
export const NETNS_DIR = '/var/run/netns';
const DEFAULT_WAIT_MS = 20_000;
const MAX_ADDRESSES = 16;
const MAX_ROUTES = 64;

export interface NetworkRequest {
  mac: string;
  name: string;
  mtu: number;
  addresses: Array<{ address: string; prefixLen: number }>;
  routes: Array<{ destination: string; gateway: string }>;
  timeoutMs: number;
}

export type RunCommand = (cmd: string, args: string[]) => Promise<void>;

const MAC_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function invalid(msg: string): never {
  throw new AgentError('InvalidArgument', msg);
}

function checkCidr(s: string): void {
  const [ip, len, ...rest] = s.split('/');
  if (rest.length || !ip || !isIPv4(ip) || len === undefined || !/^\d{1,2}$/.test(len) || Number(len) > 32)
    invalid(`invalid IPv4 destination ${JSON.stringify(s)}`);
}

/** Validates a request from the host (bounded, well-formed) before any command runs. */
export function validateNetworkRequest(req: NetworkRequest): void {
  if (!MAC_RE.test(req.mac)) invalid(`invalid MAC ${JSON.stringify(req.mac)}`);
  if (!IFNAME_RE.test(req.name) || req.name === 'lo') invalid(`invalid interface name ${JSON.stringify(req.name)}`);
  if (!Number.isInteger(req.mtu) || req.mtu < 68 || req.mtu > 65535) invalid(`invalid MTU ${req.mtu}`);
  if (req.addresses.length === 0) invalid('no address for the pod interface');
  if (req.addresses.length > MAX_ADDRESSES) invalid(`more than ${MAX_ADDRESSES} addresses`);
  if (req.routes.length > MAX_ROUTES) invalid(`more than ${MAX_ROUTES} routes`);
  for (const a of req.addresses)
    if (!isIPv4(a.address) || !Number.isInteger(a.prefixLen) || a.prefixLen < 0 || a.prefixLen > 32)
      invalid(`invalid address ${a.address}/${a.prefixLen}`);
  for (const r of req.routes) {
    if (r.destination !== 'default') checkCidr(r.destination);
    if (r.gateway !== '' && !isIPv4(r.gateway)) invalid(`invalid gateway ${JSON.stringify(r.gateway)}`);
  }
}

/** The `ip` invocations that set the pod namespace up, in order (after the NIC was found as `found`). */
export function networkCommands(req: NetworkRequest, found: string): string[][] {
  const n = ['-n', POD_NETNS];
  const cmds: string[][] = [
    ['netns', 'add', POD_NETNS],
    ['link', 'set', 'dev', found, 'netns', POD_NETNS],
  ];
  if (found !== req.name) cmds.push([...n, 'link', 'set', 'dev', found, 'name', req.name]);
  cmds.push([...n, 'link', 'set', 'dev', req.name, 'mtu', String(req.mtu)]);
  for (const a of req.addresses) cmds.push([...n, 'addr', 'add', `${a.address}/${a.prefixLen}`, 'dev', req.name]);
  cmds.push([...n, 'link', 'set', 'dev', 'lo', 'up'], [...n, 'link', 'set', 'dev', req.name, 'up']);
  // On-link routes first: a gateway must be reachable when its route is added.
  const ordered = [...req.routes.filter((r) => r.gateway === ''), ...req.routes.filter((r) => r.gateway !== '')];
  for (const r of ordered) {
    const via = r.gateway ? ['via', r.gateway] : ['scope', 'link'];
    cmds.push([...n, 'route', 'replace', r.destination, ...via, 'dev', req.name]);
  }
  return cmds;
}

export class PodNetwork {
  private configured: string | undefined;
  private busy = false;

  constructor(
    private readonly run: RunCommand,
    private readonly log: Logger,
    private readonly sysClassNet = '/sys/class/net',
  ) {}

  /** The interface in the guest's root namespace whose MAC is `mac`, waiting for hotplug up to `ms`. */
  private async findByMac(mac: string, ms: number): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      for (const name of await readdir(this.sysClassNet).catch(() => [] as string[])) {
        const addr = await readFile(join(this.sysClassNet, name, 'address'), 'utf8').catch(() => '');
        if (addr.trim().toLowerCase() === mac) return name;
      }
      if (Date.now() > deadline)
        throw new AgentError('FailedPrecondition', `no NIC with MAC ${mac} appeared in ${ms} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async configure(req: NetworkRequest): Promise<string> {
    validateNetworkRequest(req);
    if (this.configured || this.busy) throw new AgentError('AlreadyExists', 'the pod network is already configured');
    this.busy = true;
    try {
      const found = await this.findByMac(req.mac, req.timeoutMs || DEFAULT_WAIT_MS);
      try {
        for (const args of networkCommands(req, found)) await this.run('ip', args);
      } catch (err) {
        // Deleting the namespace returns the NIC to the root namespace; nothing half-configured stays.
        await this.run('ip', ['netns', 'del', POD_NETNS]).catch((delErr: unknown) =>
          this.log.warn('removing the half-configured pod netns failed', { error: delErr }),
        );
        throw new AgentError('Internal', `configuring the pod network failed: ${(err as Error).message}`);
      }
      this.configured = join(NETNS_DIR, POD_NETNS);
      this.log.info('pod network configured', {
        nic: found,
        name: req.name,
        addresses: req.addresses.map((a) => `${a.address}/${a.prefixLen}`),
      });
      return this.configured;
    } finally {
      this.busy = false;
    }
  }
}
