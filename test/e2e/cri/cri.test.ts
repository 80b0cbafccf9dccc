// Kubernetes through containerd 1.6's CRI plugin: this file plays the kubelet (grpc-js CRI client, websocket
// streaming client) against a private containerd with two runtime handlers on one CNI bridge network. The same
// suite runs with the `runc` handler (so the test itself is known to be right) and with `lcow` (each pod in its
// own QEMU UVM, its CNI network carried in through a tap). Under TCG a UVM boot is the cost, so the lcow suite
// boots two pods: the shared pod A (most tests) and pod B (pod-to-pod, sizing, a vanishing netns, teardown); a
// pod on a CNI result lcow cannot map (second containerd, two networks) is refused before any VM boots.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import {
  criUnavailable,
  podNetnsPath,
  qemuPidsFor,
  shimPidsFor,
  startCri,
  type CriEnv,
  type Handler,
} from '../../helpers/cri.js';
import type { ContainerConfig, CriClient, PodSandboxConfig } from '../../helpers/cri-client.js';
import { openStream } from '../../helpers/cri-stream.js';
import { leftovers } from '../../helpers/containerd.js';

const MEMORY_ANNOTATION = 'io.microsoft.virtualmachine.computetopology.memory.sizeinmb';

function httpGet(url: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
  });
}

async function retry<T>(fn: () => Promise<T>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return cond();
}

/** What a removed pod must not leave behind: its QEMU, its netns (with the tap in it), mounts, shim state. */
function podLeftovers(podId: string, netns: string | undefined): string[] {
  const out: string[] = [];
  if (qemuPidsFor(podId).length) out.push(`QEMU of pod ${podId} still running`);
  if (netns && existsSync(netns)) out.push(`netns ${netns} still exists`);
  const mounts = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter((l) => l.includes(podId));
  if (mounts.length) out.push(`mounts left: ${mounts.join('; ')}`);
  if (existsSync(`/run/lcow/k8s.io/${podId}`)) out.push(`shim state /run/lcow/k8s.io/${podId} left`);
  return out;
}

/** QEMUs of lcow pods in CRI's k8s.io namespace (their QMP socket lives under /run/lcow/k8s.io/). */
function k8sQemus(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') && cmd.includes('/run/lcow/k8s.io/')) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

const unavailable = criUnavailable(['runc', 'lcow']);

describe('CRI: containerd 1.6 CRI plugin, runtime handlers runc and lcow', function () {
  this.timeout(600_000);
  let env: CriEnv;

  before(async function () {
    requirePrerequisite(this, unavailable);
    env = await startCri();
  });

  after(async function () {
    if (unavailable) return;
    const shims = env ? shimPidsFor(env.cd) : [];
    await env?.stop();
    assert.deepEqual(shims, [], 'a shim was left running');
    assert.deepEqual(leftovers(), []);
    if (env) {
      assert.ok(!existsSync(join('/sys/class/net', env.bridge)), `bridge ${env.bridge} left`);
      const stateRoot = '/run/lcow/k8s.io';
      if (existsSync(stateRoot)) {
        const ours = readdirSync(stateRoot).filter((d) => created.has(d));
        assert.deepEqual(ours, [], 'pod state left behind');
      }
    }
  });

  /** Every pod id any suite created (for the final leak check). */
  const created = new Set<string>();

  for (const handler of ['runc', 'lcow'] as Handler[]) suite(handler);

  it('lcow: a CNI result with two interfaces fails RunPodSandbox, before any VM boots, with an error naming them; nothing left', async function () {
    const before = k8sQemus();
    const two = await startCri({ networks: 2 });
    try {
      const config = two.podConfig('lcow-twonets');
      await assert.rejects(
        two.client.runPodSandbox({ config, runtimeHandler: 'lcow' }),
        /has 2 interfaces \(eth0\/ether, eth1\/ether\); lcow carries exactly one/,
      );
      const pods = (await two.client.listPodSandbox({})).items;
      for (const p of pods) {
        await two.client.stopPodSandbox({ podSandboxId: p.id }).catch(() => undefined);
        await two.client.removePodSandbox({ podSandboxId: p.id }).catch(() => undefined);
        assert.deepEqual(podLeftovers(p.id, undefined), []);
      }
      assert.ok(await waitFor(() => shimPidsFor(two.cd).length === 0, 20_000), 'shim left running');
      const left = k8sQemus().filter((p) => !before.includes(p));
      assert.deepEqual(left, [], 'the UVM booted for the refused pod is still running');
    } finally {
      await two.stop();
    }
  });

  function suite(handler: Handler): void {
    describe(`handler ${handler}`, function () {
      let c: CriClient;
      let podA: { id: string; config: PodSandboxConfig; ip: string; netns: string | undefined };
      let web: string;
      let sidecar: string;
      const hostPort = 20_000 + (process.pid % 20_000) + (handler === 'lcow' ? 1 : 0);
      const dns = { servers: ['10.241.254.53'], searches: ['ns1.svc.example', 'svc.example'], options: ['ndots:3'] };

      const runPod = async (name: string, extra: Partial<PodSandboxConfig> = {}) => {
        const config = env.podConfig(`${handler}-${name}`, extra);
        const r = await c.runPodSandbox({ config, runtimeHandler: handler });
        created.add(r.podSandboxId);
        return { id: r.podSandboxId, config };
      };
      const removePod = async (id: string): Promise<void> => {
        await c.stopPodSandbox({ podSandboxId: id });
        await c.removePodSandbox({ podSandboxId: id });
      };
      const createContainer = async (
        pod: { id: string; config: PodSandboxConfig },
        name: string,
        command: string[],
        extra: Partial<ContainerConfig> = {},
      ): Promise<string> => {
        const r = await c.createContainer({
          podSandboxId: pod.id,
          sandboxConfig: pod.config,
          config: { metadata: { name }, image: { image: env.image }, command, logPath: `${name}.log`, ...extra },
        });
        return r.containerId;
      };
      const run = async (
        pod: { id: string; config: PodSandboxConfig },
        name: string,
        command: string[],
        extra: Partial<ContainerConfig> = {},
      ): Promise<string> => {
        const id = await createContainer(pod, name, command, extra);
        await c.startContainer({ containerId: id });
        return id;
      };
      const exec = async (id: string, cmd: string[], timeout = 60) => {
        const r = await c.execSync({ containerId: id, cmd, timeout });
        return { stdout: r.stdout.toString(), stderr: r.stderr.toString(), exitCode: r.exitCode };
      };
      const waitExited = async (id: string, ms = 60_000) => {
        let st = (await c.containerStatus({ containerId: id })).status;
        const end = Date.now() + ms;
        while (st.state !== 'CONTAINER_EXITED' && Date.now() < end) {
          await new Promise((r) => setTimeout(r, 200));
          st = (await c.containerStatus({ containerId: id })).status;
        }
        return st;
      };

      before(async function () {
        requirePrerequisite(this, unavailable);
        c = env.client;
        const pod = await runPod('a', {
          hostname: `pod-a-${handler}`,
          dnsConfig: dns,
          portMappings: [{ protocol: 'TCP', containerPort: 8080, hostPort }],
        });
        const st = await c.podSandboxStatus({ podSandboxId: pod.id });
        podA = { ...pod, ip: st.status.network?.ip ?? '', netns: await podNetnsPath(c, pod.id) };
        web = await run(podA, 'web', [
          'sh',
          '-c',
          'mkdir -p /www && echo "hello from $(hostname)" > /www/index.html && exec httpd -f -p 8080 -h /www',
        ]);
        sidecar = await run(podA, 'sidecar', ['sleep', '3600']);
      });

      after(async function () {
        if (unavailable || !podA) return;
        await removePod(podA.id).catch(() => undefined);
      });

      it('RunPodSandbox: one pod, two containers sharing it and its localhost', async function () {
        assert.equal(qemuPidsFor(podA.id).length, handler === 'lcow' ? 1 : 0, 'UVMs for the pod');
        const list = await c.listContainers({ filter: { podSandboxId: podA.id } });
        assert.deepEqual(list.containers.map((x) => x.state).sort(), ['CONTAINER_RUNNING', 'CONTAINER_RUNNING']);
        const r = await retry(async () => {
          const x = await exec(sidecar, ['wget', '-q', '-O', '-', 'http://127.0.0.1:8080/']);
          assert.equal(x.exitCode, 0, x.stderr);
          return x;
        }, 30_000);
        assert.equal(r.stdout, `hello from pod-a-${handler}\n`);
        if (handler === 'lcow') {
          const k = await exec(sidecar, ['uname', '-r']);
          assert.notEqual(k.stdout.trim(), execFileSync('uname', ['-r'], { encoding: 'utf8' }).trim());
          assert.equal(qemuPidsFor(podA.id).length, 1, 'the second container must not boot another UVM');
        }
      });

      it('PodSandboxStatus gives the pod IP; the host reaches the server there and through a hostPort', async function () {
        assert.match(podA.ip, /^10\.241\.\d+\.\d+$/);
        assert.ok(podA.ip.startsWith(env.subnet.slice(0, env.subnet.lastIndexOf('.'))), `${podA.ip} in ${env.subnet}`);
        const direct = await retry(() => httpGet(`http://${podA.ip}:8080/`), 30_000);
        assert.equal(direct.status, 200);
        assert.equal(direct.body, `hello from pod-a-${handler}\n`);
        const mapped = await retry(() => httpGet(`http://${env.gateway}:${hostPort}/`), 30_000);
        assert.equal(mapped.body, `hello from pod-a-${handler}\n`);
        // The container sees the pod's interface, not the UVM's control NIC.
        const ip = await exec(sidecar, ['ip', '-o', '-4', 'addr', 'show']);
        assert.match(ip.stdout, new RegExp(`inet ${podA.ip.replace(/\./g, '\\.')}/24`));
        assert.doesNotMatch(ip.stdout, /10\.0\.2\.15/);
      });

      it('DNSConfig and hostname are what the container sees', async function () {
        const r = await exec(sidecar, ['sh', '-c', 'cat /etc/resolv.conf; echo "host:$(hostname)"']);
        assert.equal(r.exitCode, 0, r.stderr);
        assert.match(r.stdout, /^nameserver 10\.241\.254\.53$/m);
        assert.match(r.stdout, /^search ns1\.svc\.example svc\.example$/m);
        assert.match(r.stdout, /^options ndots:3$/m);
        assert.match(r.stdout, new RegExp(`^host:pod-a-${handler}$`, 'm'));
      });

      it('ExecSync: stdout, stderr and exit code; its timeout is honoured', async function () {
        const r = await exec(sidecar, ['sh', '-c', 'echo out-$((2+3)); echo err-line >&2; exit 7']);
        assert.deepEqual(r, { stdout: 'out-5\n', stderr: 'err-line\n', exitCode: 7 });
        const t0 = Date.now();
        await assert.rejects(exec(sidecar, ['sleep', '31'], 2), /timeout|deadline/i);
        assert.ok(Date.now() - t0 < 30_000, `ExecSync returned after ${Date.now() - t0} ms`);
        assert.ok(
          await waitFor(async () => !(await exec(sidecar, ['ps'])).stdout.includes('sleep 31'), 15_000),
          'the timed-out exec is still running',
        );
      });

      it('Exec through the streaming server: stdin without a tty, then a tty with resize', async function () {
        const plain = await c.exec({
          containerId: sidecar,
          cmd: ['sh', '-c', 'read line; echo "got:$line"; echo to-stderr >&2; exit 4'],
          stdin: true,
          stdout: true,
          stderr: true,
        });
        const s1 = await openStream(plain.url);
        s1.send('through the websocket\n');
        const r1 = await s1.done;
        assert.equal(r1.stdout, 'got:through the websocket\n');
        assert.equal(r1.stderr, 'to-stderr\n');
        assert.equal(r1.exitCode, 4);

        const tty = await c.exec({ containerId: sidecar, cmd: ['sh'], tty: true, stdin: true, stdout: true });
        const s2 = await openStream(tty.url);
        s2.resize(100, 30);
        s2.send('echo "[$((6*7))]"\n');
        await s2.waitOutput(/\[42\]/);
        s2.send('stty size; exit 3\n');
        const r2 = await s2.done;
        assert.match(r2.stdout, /30 100/);
        assert.equal(r2.exitCode, 3);
      });

      it('Attach through the streaming server, with stdin and a tty', async function () {
        const id = await run(podA, 'attached', ['sh'], { stdin: true, tty: true });
        const a = await c.attach({ containerId: id, stdin: true, tty: true, stdout: true });
        const s = await openStream(a.url);
        s.send('echo "attached-$((40+2))"\n');
        await s.waitOutput(/attached-42/);
        s.send('exit 0\n');
        await s.done;
        const st = await waitExited(id);
        assert.equal(st.state, 'CONTAINER_EXITED');
        assert.equal(st.exitCode, 0);
        await c.removeContainer({ containerId: id });
      });

      it('ContainerStatus, ContainerStats, ListContainerStats with real numbers; logs in the CRI format', async function () {
        const stats = (await c.containerStats({ containerId: web })).stats;
        assert.ok((stats.cpu?.usageCoreNanoSeconds?.value ?? 0) > 0, JSON.stringify(stats.cpu));
        assert.ok((stats.memory?.workingSetBytes?.value ?? 0) > 0, JSON.stringify(stats.memory));
        const all = await c.listContainerStats({ filter: { podSandboxId: podA.id } });
        assert.deepEqual(all.stats.map((s) => s.attributes?.id).sort(), [web, sidecar].sort());
        for (const s of all.stats) assert.ok((s.memory?.workingSetBytes?.value ?? 0) > 0);

        const id = await run(podA, 'logger', ['sh', '-c', 'echo line-one; echo line-two >&2; exit 6']);
        const st = await waitExited(id);
        assert.equal(st.exitCode, 6);
        assert.equal(st.reason, 'Error');
        // (containerd takes startedAt after Start returned: a container this quick may have exited before.)
        assert.ok(st.startedAt > 0 && st.finishedAt >= st.createdAt, JSON.stringify(st));
        assert.equal(st.logPath, join(podA.config.logDirectory!, 'logger.log'));
        const lines = readFileSync(st.logPath, 'utf8').trim().split('\n');
        const re = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) F (.*)$/;
        const parsed = lines.map((l) => re.exec(l)).map((m) => (m ? `${m[2]} ${m[3]}` : 'unparsable'));
        assert.deepEqual(parsed.sort(), ['stderr line-two', 'stdout line-one']);
        await c.removeContainer({ containerId: id });
      });

      it('a container over its memory limit is OOMKilled', async function () {
        const id = await run(podA, 'hog', ['awk', 'BEGIN { s = "x"; while (1) s = s s }'], {
          linux: { resources: { memoryLimitInBytes: 32 << 20 } },
        });
        const st = await waitExited(id, 120_000);
        assert.equal(st.state, 'CONTAINER_EXITED');
        assert.equal(st.reason, 'OOMKilled', JSON.stringify(st));
        assert.equal(st.exitCode, 137);
        await c.removeContainer({ containerId: id });
      });

      it('StopContainer: SIGTERM first; SIGKILL when the grace period runs out', async function () {
        const polite = await run(podA, 'polite', [
          'sh',
          '-c',
          'trap "echo got-term; exit 0" TERM; echo ready; while true; do sleep 0.2; done',
        ]);
        const stubborn = await run(podA, 'stubborn', [
          'sh',
          '-c',
          'trap "echo ignoring-term" TERM; echo ready; while true; do sleep 0.2; done',
        ]);
        const logOf = async (id: string) => (await c.containerStatus({ containerId: id })).status.logPath;
        for (const id of [polite, stubborn])
          assert.ok(await waitFor(async () => readFileSync(await logOf(id), 'utf8').includes('ready'), 30_000));
        let t0 = Date.now();
        await c.stopContainer({ containerId: polite, timeout: 30 });
        assert.ok(Date.now() - t0 < 25_000, 'a container that exits on SIGTERM must not wait for the grace period');
        let st = await waitExited(polite);
        assert.equal(st.exitCode, 0);
        assert.match(readFileSync(st.logPath, 'utf8'), /got-term/);
        t0 = Date.now();
        await c.stopContainer({ containerId: stubborn, timeout: 3 });
        const took = Date.now() - t0;
        st = await waitExited(stubborn);
        assert.equal(st.exitCode, 137, 'SIGKILL after the grace period');
        assert.ok(took >= 2500, `stopped after ${took} ms: the grace period was not honoured`);
        assert.match(readFileSync(st.logPath, 'utf8'), /ignoring-term/);
        for (const id of [polite, stubborn]) await c.removeContainer({ containerId: id });
      });

      it('a second pod reaches the first by pod IP (lcow: its netns then vanishes); stop and remove leave nothing behind', async function () {
        // A small UVM: the root image is read from an erofs disk, not held in guest RAM (256 MiB boots too).
        const annotations = handler === 'lcow' ? { [MEMORY_ANNOTATION]: '384' } : undefined;
        const podB = await runPod('b', { annotations });
        const netnsB = await podNetnsPath(c, podB.id);
        try {
          if (handler === 'lcow') {
            const [pid] = qemuPidsFor(podB.id);
            assert.ok(pid, 'no UVM for pod B');
            const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
            assert.equal(argv[argv.indexOf('-m') + 1], '384', 'pod annotation sizes the UVM');
          }
          const client = await run(podB, 'client', ['sleep', '3600']);
          const r = await retry(async () => {
            const x = await exec(client, ['wget', '-q', '-O', '-', `http://${podA.ip}:8080/`]);
            assert.equal(x.exitCode, 0, x.stderr);
            return x;
          }, 30_000);
          assert.equal(r.stdout, `hello from pod-a-${handler}\n`);
          if (handler === 'lcow' && netnsB) {
            // The tap lives in the pod's netns, joined to the CNI veth by tc redirects.
            const links = execFileSync('nsenter', [`--net=${netnsB}`, 'ip', '-o', 'link', 'show'], {
              encoding: 'utf8',
            });
            assert.match(links, /lcowtap0/);
            // The pod's netns vanishes while the pod runs (deleted under CRI's feet): the shim keeps serving,
            // the pod's control channel is untouched, and teardown below still leaves nothing behind.
            execFileSync('umount', [netnsB]);
            execFileSync('rm', ['-f', netnsB]);
            const alive = await exec(client, ['echo', 'still-serving']);
            assert.equal(alive.stdout, 'still-serving\n');
            assert.equal(qemuPidsFor(podB.id).length, 1);
          }
        } finally {
          await removePod(podB.id);
        }
        assert.deepEqual(podLeftovers(podB.id, netnsB), []);
        assert.equal(qemuPidsFor(podA.id).length, handler === 'lcow' ? 1 : 0, 'pod A untouched');
      });

      it('a hostNetwork pod: runc shares the node network; lcow refuses it with a clear error', async function () {
        // As the kubelet: no hostname of its own (the node's), the node's network namespace.
        const hostNet = {
          hostname: '',
          linux: { securityContext: { namespaceOptions: { network: 'NODE' as const } } },
        };
        if (handler === 'runc') {
          const pod = await runPod('hostnet', hostNet);
          await removePod(pod.id);
          return;
        }
        const config = env.podConfig(`${handler}-hostnet`, hostNet);
        await assert.rejects(c.runPodSandbox({ config, runtimeHandler: handler }), /hostNetwork pods cannot run/);
        const pods = await c.listPodSandbox({});
        for (const p of pods.items.filter((x) => !created.has(x.id))) {
          created.add(p.id);
          await removePod(p.id).catch(() => undefined);
          assert.deepEqual(podLeftovers(p.id, undefined), []);
        }
      });

      it('StopPodSandbox and RemovePodSandbox of the shared pod leave nothing behind', async function () {
        await removePod(podA.id);
        assert.deepEqual(podLeftovers(podA.id, podA.netns), []);
        assert.ok(await waitFor(() => shimPidsFor(env.cd).length === 0, 20_000), 'shim left running');
        podA = undefined as unknown as typeof podA;
      });
    });
  }
});
