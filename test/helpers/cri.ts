// A private containerd WITH its CRI plugin, for tests and benchmarks that play the kubelet: runtime handlers
// `lcow` (our shim, bin/ on containerd's PATH) and `runc`, a locally built pause image as `sandbox_image`, a
// per-run CNI network (bridge with its own name and subnet, host-local IPAM whose state lives in the run's temp
// dir, portmap; containerd adds loopback itself), the streaming server on 127.0.0.1 with a random port, and
// hcsshim's sizing annotations passed to the lcow handler (`pod_annotations`).
//
//   const env = await startCri();           // containerd + images + CNI config
//   const pod = await env.client.runPodSandbox({ config, runtimeHandler: 'lcow' });
//   ...
//   await env.stop();                        // containerd gone, bridge deleted, temp dir removed
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, type PrivateContainerd } from './containerd.js';
import { criClient, type CriClient, type PodSandboxConfig } from './cri-client.js';
import { importPauseImage, importTestImage, PAUSE_IMAGE } from './image.js';
import { pidsWhere, qemuPidsOfPod } from './host-state.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const CRI_NAMESPACE = 'k8s.io';
export const SIZING_ANNOTATIONS = 'io.microsoft.virtualmachine.computetopology.*';
export type Handler = 'lcow' | 'runc';

export interface CriEnv {
  cd: PrivateContainerd;
  client: CriClient;
  /** The busybox image, in the k8s.io namespace. */
  image: string;
  bridge: string;
  /** e.g. 10.241.7.0/24; the bridge (gateway) is .1. */
  subnet: string;
  gateway: string;
  /** Where pod logs go (PodSandboxConfig.logDirectory). */
  logRoot: string;
  /** A PodSandboxConfig with unique metadata (name includes the process id and `name`). */
  podConfig(name: string, extra?: Partial<PodSandboxConfig>): PodSandboxConfig;
  stop(): Promise<void>;
}

/** Why the CRI suites cannot run here (pass to requirePrerequisite), or undefined. */
export function criUnavailable(handlers: Handler[]): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  for (const p of ['bridge', 'host-local', 'portmap', 'loopback'])
    if (!existsSync(`/usr/lib/cni/${p}`)) return `no CNI plugin /usr/lib/cni/${p} (make setup)`;
  if (!existsSync('/dev/net/tun')) return 'no /dev/net/tun';
  if (handlers.includes('lcow')) {
    if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
    if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const a = s.address();
      s.close(() => (a && typeof a !== 'string' ? res(a.port) : rej(new Error('no port'))));
    });
  });
}

/** A /24 under 10.241.0.0/16 that no route on this host uses yet (other test runs have their own). */
function pickSubnet(taken: string[]): string {
  const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
  for (let i = 0; i < 250; i++) {
    const third = (process.pid + i + Math.floor(Math.random() * 250)) % 250;
    const net = `10.241.${third}.`;
    if (!routes.includes(net) && !taken.includes(`${net}0/24`)) return `${net}0/24`;
  }
  throw new Error('no free 10.241.x.0/24 subnet');
}

function criConfig(o: { pauseImage: string; cniConfDir: string; streamPort: number; networks: number }): string {
  const cri = '[plugins."io.containerd.grpc.v1.cri"]';
  const rt = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes';
  return [
    cri,
    `  sandbox_image = "${o.pauseImage}"`,
    '  stream_server_address = "127.0.0.1"',
    `  stream_server_port = "${o.streamPort}"`,
    // The sandbox cannot lower oom_score_adj; CRI sets -998 on the pause container.
    '  restrict_oom_score_adj = true',
    '  enable_selinux = false',
    '  [plugins."io.containerd.grpc.v1.cri".containerd]',
    '    snapshotter = "overlayfs"',
    '    default_runtime_name = "runc"',
    `  ${rt}.runc]`,
    '    runtime_type = "io.containerd.runc.v2"',
    `  ${rt}.lcow]`,
    '    runtime_type = "io.containerd.lcow.v1"',
    `    pod_annotations = ["${SIZING_ANNOTATIONS}"]`,
    '  [plugins."io.containerd.grpc.v1.cri".cni]',
    '    bin_dir = "/usr/lib/cni"',
    `    conf_dir = "${o.cniConfDir}"`,
    `    max_conf_num = ${o.networks}`,
    '',
  ].join('\n');
}

export interface CriOptions {
  /**
   * CNI networks containerd attaches to every pod (its max_conf_num): 1 (default), or 2, which gives each pod two
   * interfaces (eth0, eth1): a CNI result lcow refuses.
   */
  networks?: 1 | 2;
}

export async function startCri(opts: CriOptions = {}): Promise<CriEnv> {
  const networks = opts.networks ?? 1;
  const streamPort = await freePort();
  const base = join('/tmp', `lcow-cri-${process.pid}-${Date.now()}`);
  const cniConfDir = join(base, 'cni-conf');
  const logRoot = join(base, 'pod-logs');
  mkdirSync(cniConfDir, { recursive: true });
  mkdirSync(logRoot, { recursive: true });
  const bridges: string[] = [];
  const subnets: string[] = [];
  for (let n = 0; n < networks; n++) {
    const subnet = pickSubnet(subnets);
    const prefix = subnet.slice(0, subnet.lastIndexOf('.') + 1);
    // A per-run bridge name (15 characters at most) and subnet: other test runs share this host.
    const bridge = `lc${n === 0 ? 'b' : 'c'}${process.pid}-${Date.now() % 1000}`.slice(0, 15);
    bridges.push(bridge);
    subnets.push(subnet);
    writeFileSync(
      join(cniConfDir, `${10 + n}-lcow-test.conflist`),
      JSON.stringify(
        {
          cniVersion: '0.4.0',
          name: `lcow-test-${process.pid}-${n}`,
          plugins: [
            {
              type: 'bridge',
              bridge,
              isGateway: true,
              ipMasq: false,
              hairpinMode: true,
              ipam: {
                type: 'host-local',
                ranges: [[{ subnet, gateway: `${prefix}1` }]],
                routes: n === 0 ? [{ dst: '0.0.0.0/0' }] : [],
                dataDir: join(base, `cni-ipam-${n}`),
              },
            },
            { type: 'portmap', capabilities: { portMappings: true }, snat: false },
          ],
        },
        null,
        2,
      ),
    );
  }
  const subnet = subnets[0]!;
  const bridge = bridges[0]!;
  const gateway = `${subnet.slice(0, subnet.lastIndexOf('.') + 1)}1`;
  let cd: PrivateContainerd | undefined;
  let client: CriClient | undefined;
  const cleanupNet = (): void => {
    for (const b of bridges) {
      try {
        execFileSync('ip', ['link', 'del', b], { stdio: 'ignore' });
      } catch {
        // never created, or gone
      }
    }
    execFileSync('rm', ['-rf', base]);
  };
  try {
    cd = await startContainerd({
      cri: true,
      extraPath: [join(ROOT, 'bin')],
      logLevel: 'info',
      namespace: CRI_NAMESPACE,
      extraConfig: criConfig({ pauseImage: PAUSE_IMAGE, cniConfDir, streamPort, networks }),
      startTimeoutMs: 60_000,
    });
    await importPauseImage(cd.address, CRI_NAMESPACE);
    const image = await importTestImage(cd.address, CRI_NAMESPACE);
    client = criClient(cd.address);
    // CRI reports NetworkReady once it loaded our CNI config.
    for (let i = 0; ; i++) {
      const st = await client.status({});
      if (st.status.conditions.every((c) => c.status)) break;
      if (i > 100) throw new Error(`CRI not ready: ${JSON.stringify(st.status.conditions)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const env: CriEnv = {
      cd,
      client,
      image,
      bridge,
      subnet,
      gateway,
      logRoot,
      podConfig: (name, extra = {}) => {
        const uid = `${name}-${process.pid}-${Date.now()}`;
        const logDirectory = join(logRoot, uid);
        mkdirSync(logDirectory, { recursive: true });
        return {
          metadata: { name: `${name}-${process.pid}`, uid, namespace: 'lcow-test', attempt: 0 },
          hostname: name,
          logDirectory,
          linux: {},
          ...extra,
        };
      },
      async stop() {
        client?.close();
        await cd?.stop();
        cleanupNet();
      },
    };
    return env;
  } catch (err) {
    client?.close();
    await cd?.stop();
    cleanupNet();
    throw err;
  }
}

/** The pod's host network namespace path (from the sandbox's OCI spec in PodSandboxStatus's verbose info). */
export async function podNetnsPath(client: CriClient, podId: string): Promise<string | undefined> {
  const st = await client.podSandboxStatus({ podSandboxId: podId, verbose: true });
  const info = JSON.parse(st.info.info ?? '{}') as {
    runtimeSpec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } };
  };
  return info.runtimeSpec?.linux?.namespaces?.find((n) => n.type === 'network')?.path;
}

/** QEMU processes whose -name is lcow-<id>. */
export const qemuPidsFor = qemuPidsOfPod;

/** Shim processes serving this containerd (their -address names its socket). */
export function shimPidsFor(cd: PrivateContainerd): number[] {
  return pidsWhere((cmd) => cmd.some((a) => a.includes('containerd-shim')) && cmd.includes(cd.address));
}
