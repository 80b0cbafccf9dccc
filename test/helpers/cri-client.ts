// A kubelet-like CRI client: @grpc/grpc-js + @grpc/proto-loader against containerd's runtime.v1 RuntimeService and
// ImageService, loaded from our own .proto subset (proto/cri/runtime/v1/api.proto). Requests and replies are plain
// objects in proto-loader's camelCase form; int64 fields arrive as numbers, enums as their names, bytes as Buffers.
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../proto');

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  logDirectory?: string;
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
  portMappings?: Array<{ protocol?: 'TCP' | 'UDP'; containerPort: number; hostPort: number; hostIp?: string }>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroupParent?: string;
    securityContext?: { namespaceOptions?: { network?: 'POD' | 'NODE'; pid?: string; ipc?: string } };
  };
}

export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string };
  command?: string[];
  args?: string[];
  workingDir?: string;
  envs?: Array<{ key: string; value: string }>;
  mounts?: Array<{ containerPath: string; hostPath: string; readonly?: boolean }>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  logPath?: string;
  stdin?: boolean;
  stdinOnce?: boolean;
  tty?: boolean;
  linux?: {
    resources?: { memoryLimitInBytes?: number; cpuShares?: number; cpuQuota?: number; cpuPeriod?: number };
    securityContext?: { readonlyRootfs?: boolean; namespaceOptions?: { pid?: string } };
  };
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  createdAt: number;
  startedAt: number;
  finishedAt: number;
  exitCode: number;
  reason: string;
  message: string;
  logPath: string;
}

export interface PodSandboxStatus {
  id: string;
  state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY';
  network?: { ip: string; additionalIps: Array<{ ip: string }> };
  runtimeHandler: string;
}

export interface ContainerStats {
  attributes?: { id: string };
  cpu?: { timestamp: number; usageCoreNanoSeconds?: { value: number } };
  memory?: { timestamp: number; workingSetBytes?: { value: number }; usageBytes?: { value: number } };
  writableLayer?: { usedBytes?: { value: number } };
}

type Unary<Req, Res> = (req: Req, timeoutMs?: number) => Promise<Res>;

export interface CriClient {
  version: Unary<{ version?: string }, { runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }>;
  status: Unary<{ verbose?: boolean }, { status: { conditions: Array<{ type: string; status: boolean }> } }>;
  runPodSandbox: Unary<{ config: PodSandboxConfig; runtimeHandler: string }, { podSandboxId: string }>;
  stopPodSandbox: Unary<{ podSandboxId: string }, object>;
  removePodSandbox: Unary<{ podSandboxId: string }, object>;
  podSandboxStatus: Unary<
    { podSandboxId: string; verbose?: boolean },
    { status: PodSandboxStatus; info: Record<string, string> }
  >;
  listPodSandbox: Unary<
    { filter?: { id?: string; labelSelector?: Record<string, string> } },
    { items: Array<{ id: string; state: string; labels: Record<string, string> }> }
  >;
  createContainer: Unary<
    { podSandboxId: string; config: ContainerConfig; sandboxConfig: PodSandboxConfig },
    { containerId: string }
  >;
  startContainer: Unary<{ containerId: string }, object>;
  stopContainer: Unary<{ containerId: string; timeout: number }, object>;
  removeContainer: Unary<{ containerId: string }, object>;
  listContainers: Unary<
    { filter?: { podSandboxId?: string; id?: string } },
    { containers: Array<{ id: string; podSandboxId: string; state: string }> }
  >;
  containerStatus: Unary<
    { containerId: string; verbose?: boolean },
    { status: ContainerStatus; info: Record<string, string> }
  >;
  execSync: Unary<
    { containerId: string; cmd: string[]; timeout?: number },
    { stdout: Buffer; stderr: Buffer; exitCode: number }
  >;
  exec: Unary<
    { containerId: string; cmd: string[]; tty?: boolean; stdin?: boolean; stdout?: boolean; stderr?: boolean },
    { url: string }
  >;
  attach: Unary<
    { containerId: string; stdin?: boolean; tty?: boolean; stdout?: boolean; stderr?: boolean },
    { url: string }
  >;
  containerStats: Unary<{ containerId: string }, { stats: ContainerStats }>;
  listContainerStats: Unary<{ filter?: { id?: string; podSandboxId?: string } }, { stats: ContainerStats[] }>;
  imageStatus: Unary<{ image: { image: string } }, { image: { id: string; repoTags: string[] } | null }>;
  close(): void;
}

const RUNTIME_METHODS = [
  'Version',
  'Status',
  'RunPodSandbox',
  'StopPodSandbox',
  'RemovePodSandbox',
  'PodSandboxStatus',
  'ListPodSandbox',
  'CreateContainer',
  'StartContainer',
  'StopContainer',
  'RemoveContainer',
  'ListContainers',
  'ContainerStatus',
  'ExecSync',
  'Exec',
  'Attach',
  'ContainerStats',
  'ListContainerStats',
];
const IMAGE_METHODS = ['ImageStatus'];

/** Connects to the CRI endpoint at `socket` (a unix socket path). */
export function criClient(socket: string, defaultTimeoutMs = 240_000): CriClient {
  const def = protoLoader.loadSync(join(PROTO_ROOT, 'cri/runtime/v1/api.proto'), {
    includeDirs: [PROTO_ROOT],
    keepCase: false,
    longs: Number,
    enums: String,
    defaults: true,
    arrays: true,
    objects: false,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    runtime: { v1: Record<string, grpc.ServiceClientConstructor> };
  };
  const address = `unix://${socket}`;
  const creds = grpc.credentials.createInsecure();
  const opts = { 'grpc.max_receive_message_length': 16 << 20 };
  const runtime = new pkg.runtime.v1.RuntimeService!(address, creds, opts);
  const images = new pkg.runtime.v1.ImageService!(address, creds, opts);
  const bind = (client: grpc.Client, method: string) => {
    type Call = (
      req: unknown,
      md: grpc.Metadata,
      o: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res: unknown) => void,
    ) => void;
    const fn = (client as unknown as Record<string, Call>)[method]!;
    return (req: unknown, timeoutMs = defaultTimeoutMs): Promise<unknown> =>
      new Promise((resolvePromise, reject) => {
        fn.call(
          client,
          req,
          new grpc.Metadata(),
          { deadline: Date.now() + timeoutMs },
          (err: grpc.ServiceError | null, res: unknown) => (err ? reject(err) : resolvePromise(res)),
        );
      });
  };
  const out: Record<string, unknown> = {};
  const lower = (m: string): string => m[0]!.toLowerCase() + m.slice(1);
  for (const m of RUNTIME_METHODS) out[lower(m)] = bind(runtime, m);
  for (const m of IMAGE_METHODS) out[lower(m)] = bind(images, m);
  out.close = () => {
    runtime.close();
    images.close();
  };
  return out as unknown as CriClient;
}
