// Interop with real containerd 1.6 (Go ttrpc 1.1): our client forwards task events to containerd's ttrpc
// Events service and `ctr events` must print them.
import { strict as assert } from 'node:assert';
import type { ChildProcess } from 'node:child_process';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { AnySchema, EmptySchema, timestampFromDate, type Any } from '@bufbuild/protobuf/wkt';
import { TaskExitSchema, type TaskExit } from '../../../src/gen/containerd/events/task_pb.js';
import { ForwardRequestSchema } from '../../../src/gen/containerd/services/events/ttrpc/v1/events_pb.js';
import { Code, NAMESPACE_KEY, TtrpcClient, TtrpcError } from '../../../src/ttrpc/index.js';
import { containerdUnavailable, leftovers, startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const EVENTS_SERVICE = 'containerd.services.events.ttrpc.v1.Events';

/** containerd resolves the Any by bare message name (gogo registry); no type.googleapis.com/ prefix. */
function anyOf(exit: TaskExit): Any {
  return create(AnySchema, { typeUrl: 'containerd.events.TaskExit', value: toBinary(TaskExitSchema, exit) });
}

function forwardRequest(namespace: string, topic: string, event: Any): Uint8Array {
  return toBinary(
    ForwardRequestSchema,
    create(ForwardRequestSchema, {
      envelope: { timestamp: timestampFromDate(new Date()), namespace, topic, event },
    }),
  );
}

/** Collects `ctr events` output lines: "<timestamp> <namespace> <topic> <json>". */
class EventWatcher {
  readonly lines: string[] = [];
  private partial = '';
  private waiters: Array<() => void> = [];

  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      const parts = (this.partial + s).split('\n');
      this.partial = parts.pop()!;
      this.lines.push(...parts.filter((l) => l.length > 0));
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitFor(pred: (line: string) => boolean, timeoutMs: number, poke?: () => Promise<void>): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`event not seen; ctr printed:\n${this.lines.join('\n')}`);
      if (poke) await poke();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

describe('ttrpc interop with containerd 1.6 (events)', function () {
  this.timeout(60_000);
  let cd: PrivateContainerd | undefined;
  let client: TtrpcClient | undefined;
  let watcher: EventWatcher;

  before(async function () {
    requirePrerequisite(this, containerdUnavailable());
    cd = await startContainerd({ namespace: 'default' });
    client = await TtrpcClient.connect(cd.ttrpcAddress);
    watcher = new EventWatcher(cd.spawnCtr(['events']));
    // ctr has no "subscribed" signal: forward probe events until one is printed.
    let probes = 0;
    const probe = async (): Promise<void> => {
      const exit = create(TaskExitSchema, { containerId: `probe-${probes++}` });
      await client!.call(EVENTS_SERVICE, 'Forward', forwardRequest('probe', '/tasks/exit', anyOf(exit)), {
        metadata: { [NAMESPACE_KEY]: 'probe' },
      });
    };
    await watcher.waitFor((l) => l.includes('probe-'), 20_000, probe);
  });

  after(async () => {
    const pid = cd?.pid;
    client?.close();
    await cd?.stop();
    assert.deepEqual(leftovers(), []);
    if (pid !== undefined) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, 'containerd is gone');
  });

  it('Forward delivers a TaskExit that ctr events prints with topic, namespace and fields', async () => {
    const exitedAt = new Date('2024-05-06T07:08:09.123Z');
    const exit = create(TaskExitSchema, {
      containerId: 'ctr-abc',
      id: 'exec-1',
      pid: 4242,
      exitStatus: 137,
      exitedAt: timestampFromDate(exitedAt),
    });
    const reply = await client!.call(EVENTS_SERVICE, 'Forward', forwardRequest('lcow-ns', '/tasks/exit', anyOf(exit)), {
      metadata: { [NAMESPACE_KEY]: 'lcow-ns' },
    });
    assert.equal(fromBinary(EmptySchema, reply).$typeName, 'google.protobuf.Empty');
    const line = await watcher.waitFor((l) => l.includes('ctr-abc'), 10_000);
    // Go prints the timestamp as "2006-01-02 15:04:05.999 +0000 UTC".
    const m = /^(.+ UTC) (\S+) (\S+) (\{.*\})$/.exec(line);
    assert.ok(m, `unexpected line: ${line}`);
    const [, , namespace, topic, json] = m;
    assert.equal(namespace, 'lcow-ns', line);
    assert.equal(topic, '/tasks/exit', line);
    const event = JSON.parse(json!) as Record<string, unknown>;
    assert.equal(event.container_id, 'ctr-abc');
    assert.equal(event.id, 'exec-1');
    assert.equal(event.pid, 4242);
    assert.equal(event.exit_status, 137);
    assert.equal(new Date(event.exited_at as string).toISOString(), exitedAt.toISOString());
  });

  it('an invalid namespace gets InvalidArgument from containerd', async () => {
    const exit = create(TaskExitSchema, { containerId: 'bad-ns' });
    await assert.rejects(
      client!.call(EVENTS_SERVICE, 'Forward', forwardRequest('Bad Namespace!', '/tasks/exit', anyOf(exit)), {
        metadata: { [NAMESPACE_KEY]: 'Bad Namespace!' },
      }),
      (err: unknown) => {
        assert.ok(err instanceof TtrpcError, String(err));
        assert.equal(err.code, Code.INVALID_ARGUMENT, err.toString());
        // containerd 1.6.20 answers INVALID_ARGUMENT `event envelope has invalid namespace: identifier
        // "Bad Namespace!" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument`.
        assert.match(err.message, /invalid namespace/);
        if (process.env.TTRPC_TEST_VERBOSE) console.log(`containerd said: ${err.toString()}`);
        return true;
      },
    );
  });

  it('an unknown method or service gets Unimplemented from Go ttrpc', async () => {
    await assert.rejects(client!.call(EVENTS_SERVICE, 'Publish', new Uint8Array(0)), {
      code: Code.UNIMPLEMENTED,
      message: 'method Publish',
    });
    await assert.rejects(client!.call('no.such.Service', 'Forward', new Uint8Array(0)), {
      code: Code.UNIMPLEMENTED,
      message: 'service no.such.Service',
    });
  });

  it('a call with a short deadline (timeout_nano) is served', async () => {
    const exit = create(TaskExitSchema, { containerId: 'deadline-ok' });
    await client!.call(EVENTS_SERVICE, 'Forward', forwardRequest('default', '/tasks/exit', anyOf(exit)), {
      metadata: { [NAMESPACE_KEY]: 'default' },
      timeoutMs: 500,
    });
    await watcher.waitFor((l) => l.includes('deadline-ok'), 10_000);
  });

  it('many concurrent Forward calls on one connection all succeed', async () => {
    const calls = Array.from({ length: 100 }, (_, i) =>
      client!.call(
        EVENTS_SERVICE,
        'Forward',
        forwardRequest('default', '/tasks/exit', anyOf(create(TaskExitSchema, { containerId: `burst-${i}` }))),
        { metadata: { [NAMESPACE_KEY]: 'default' } },
      ),
    );
    await Promise.all(calls);
    await watcher.waitFor((l) => l.includes('burst-99'), 10_000);
  });
});
