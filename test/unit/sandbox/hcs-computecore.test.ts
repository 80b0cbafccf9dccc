// The computecore binding and the compute-system logic above it (operations with deadlines and cancel, the exit
// callback from a foreign thread, open-by-id, handle/allocation hygiene), run through the real koffi binding
// against a FAKE computecore.dll (test/fakes/computecore-fake.c, written from the HCS API reference).
// HRESULT naming and result-document parsing are pure and tested directly.
import assert from 'node:assert/strict';
import { loadComputeCore, type ComputeCore } from '../../../src/sandbox/hcs/computecore.js';
import {
  HcsError,
  formatHresult,
  isAlreadyStopping,
  isNotFound,
  parseResultError,
} from '../../../src/sandbox/hcs/hresult.js';
import { lcowDocument } from '../../../src/sandbox/hcs/schema.js';
import { HcsComputeSystem, HcsTimeoutError, DEFAULT_TIMEOUTS } from '../../../src/sandbox/hcs/system.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { fakeComputeCore, fakesUnavailable, type FakeHcsControl } from '../../helpers/win32-fakes.js';

describe('HRESULTs', () => {
  it('names the common codes and keeps the hex', () => {
    assert.equal(formatHresult(0x80370118), 'HCS_E_OPERATION_TIMEOUT (0x80370118)');
    assert.equal(formatHresult(-2147024891), 'E_ACCESSDENIED (0x80070005)'); // signed, as koffi returns it
    assert.equal(formatHresult(0xc037010e), 'ERROR_VMCOMPUTE_SYSTEM_NOT_FOUND (0xc037010e)');
    assert.equal(formatHresult(0x80991234), '0x80991234');
  });

  it('recognises "not found" and "already stopping" in every form HCS uses', () => {
    for (const hr of [0x8037010e, 0xc037010e, 0x80070490]) assert.ok(isNotFound(hr));
    for (const hr of [0x80370110, 0xc0370110, 0x80370117, 0xc0370103]) assert.ok(isAlreadyStopping(hr));
    assert.ok(!isNotFound(0x80070005));
  });

  it('builds a message from the HRESULT, the ResultError document and a hint', () => {
    const doc = JSON.stringify({
      Error: -2143878910,
      ErrorMessage: 'The virtual machine could not be started',
      ErrorEvents: [{ Message: 'Hyper-V is not installed' }],
    });
    const e = new HcsError('HcsStartComputeSystem', 0x80370102, doc, 'pod@vm');
    assert.equal(e.code, 'HCS_E_HYPERV_NOT_INSTALLED');
    assert.match(e.message, /^HcsStartComputeSystem pod@vm: HCS_E_HYPERV_NOT_INSTALLED \(0x80370102\)/);
    assert.match(e.message, /could not be started: Hyper-V is not installed/);
    assert.match(e.message, /enable the Hyper-V role/);
  });

  it('ignores result documents that are not a ResultError', () => {
    assert.equal(parseResultError(undefined), undefined);
    assert.equal(parseResultError('not json'), undefined);
    assert.equal(parseResultError('{"RuntimeId":"x"}'), undefined);
    assert.equal(parseResultError('[1]'), undefined);
    assert.deepEqual(parseResultError('{"Error":5}'), { Error: 5, ErrorMessage: undefined, ErrorEvents: undefined });
  });
});

describe('HCS compute system (FAKE computecore)', function () {
  this.timeout(20_000);
  let fake: FakeHcsControl;
  let api: ComputeCore;
  const doc = lcowDocument({
    owner: 'lcow-test',
    kernelPath: 'C:\\lcow\\vmlinuz',
    initrdPath: 'C:\\lcow\\initrd.img',
    kernelArgs: ['lcow.hv=1'],
    memoryMiB: 512,
    cpus: 1,
    hvSocketServices: [],
    scsiControllers: 0,
  });
  const fast = { ...DEFAULT_TIMEOUTS, startMs: 2000 };
  let seq = 0;
  const newId = (): string => `lcow-test-${process.pid}-${++seq}`;

  before(function () {
    requirePrerequisite(this, fakesUnavailable());
    fake = fakeComputeCore();
    api = loadComputeCore({ computecore: fake.path, kernel32: fake.path });
  });
  afterEach(async () => {
    fake.resetSettings();
    // Every test leaves nothing: operations closed, handles closed, result documents freed, systems gone.
    for (let i = 0; i < 100 && fake.count('events') > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(fake.count('operations'), 0, 'operations left open');
    assert.equal(fake.count('handles'), 0, 'system handles left open');
    assert.equal(fake.count('allocations'), 0, 'result documents not freed (LocalFree)');
    assert.equal(fake.count('systems'), 0, 'compute systems left behind');
  });

  it('creates, reads the VM id, starts, modifies, queries statistics, terminates (exit event), closes', async () => {
    const id = newId();
    const cs = await HcsComputeSystem.create(api, id, doc, fast);
    assert.equal(fake.state(id), 'created');
    assert.deepEqual(JSON.parse(fake.read(id, 'document')!), doc, 'the document reaches HCS as UTF-16 JSON');
    const props = await cs.properties({});
    assert.equal(props.RuntimeId, fake.read(id, 'runtime'));
    await cs.start();
    assert.equal(fake.state(id), 'running');
    const req = { ResourcePath: 'VirtualMachine/Devices/Scsi/x/Attachments/0', RequestType: 'Remove' as const };
    await cs.modify(req);
    assert.deepEqual(JSON.parse(fake.read(id, 'modify')!), req);
    const stats = await cs.properties({ PropertyTypes: ['Statistics'] });
    assert.equal(stats.Statistics?.Memory?.MemoryUsagePrivateWorkingSetBytes, 123456789);
    await cs.terminate();
    const exit = await cs.exited;
    assert.deepEqual(exit, { kind: 'exited', status: { Status: 0, ExitType: 'ForcedExit' }, unexpected: false });
    await cs.terminate(); // idempotent once exited
    await cs.close();
    await cs.close();
  });

  it('cancels an operation past its deadline (HcsCancelOperation) and closes it', async () => {
    fake.set('start_hangs', 1);
    const cancels = fake.count('cancels');
    const cs = await HcsComputeSystem.create(api, newId(), doc, { ...fast, startMs: 150 });
    await assert.rejects(
      cs.start(),
      (e: unknown) => e instanceof HcsTimeoutError && /no result within 150 ms/.test((e as Error).message),
    );
    assert.equal(fake.count('cancels'), cancels + 1);
    await cs.terminate();
    await cs.exited;
    await cs.close();
  });

  it('turns failed operations into named errors with HCS error text; nothing is left behind', async () => {
    const id = newId();
    const bad = { ...doc, SchemaVersion: undefined } as unknown as typeof doc;
    await assert.rejects(
      HcsComputeSystem.create(api, id, bad),
      (e: unknown) => e instanceof HcsError && e.code === 'HCS_E_INVALID_JSON',
    );
    const cs = await HcsComputeSystem.create(api, id, doc);
    await assert.rejects(
      HcsComputeSystem.create(api, id, doc),
      (e: unknown) => e instanceof HcsError && e.code === 'HCS_E_SYSTEM_ALREADY_EXISTS',
    );
    fake.set('fail_start_hr', 0x80370102);
    await assert.rejects(
      cs.start(),
      (e: unknown) =>
        e instanceof HcsError && e.code === 'HCS_E_HYPERV_NOT_INSTALLED' && /could not be started/.test(e.message),
    );
    await cs.terminate();
    await cs.exited;
    await cs.close();
  });

  it('delivers an unexpected exit from an HCS thread', async () => {
    fake.set('exit_after_start_ms', 20);
    const cs = await HcsComputeSystem.create(api, newId(), doc, fast);
    await cs.start();
    const exit = await cs.exited;
    assert.equal(exit.kind, 'exited');
    assert.equal(exit.kind === 'exited' && exit.unexpected, true);
    await cs.close();
  });

  it('shuts down gracefully when the guest cooperates, else needs terminate', async () => {
    const a = await HcsComputeSystem.create(api, newId(), doc, fast);
    await a.start();
    await a.shutdown();
    assert.equal(await a.waitExited(2000), true);
    assert.equal(
      (await a.exited).kind === 'exited' && ((await a.exited) as { status?: { ExitType?: string } }).status?.ExitType,
      'GracefulExit',
    );
    await a.close();

    fake.set('shutdown_works', 0);
    const b = await HcsComputeSystem.create(api, newId(), doc, fast);
    await b.start();
    await b.shutdown();
    assert.equal(await b.waitExited(100), false);
    await b.terminate();
    assert.equal(await b.waitExited(2000), true);
    await b.close();
  });

  it('opens a system by id after its creator went away, and reports a missing one as undefined', async () => {
    const id = newId();
    const first = await HcsComputeSystem.create(api, id, doc, fast);
    await first.start();
    // `delete` after a shim crash: a fresh open by id, terminate, wait, close.
    const second = await HcsComputeSystem.open(api, id);
    assert.ok(second);
    await second.terminate();
    assert.equal(await second.waitExited(2000), true);
    assert.equal(await first.waitExited(2000), true, 'every handle sees the exit');
    await second.close();
    await first.close();
    assert.equal(await HcsComputeSystem.open(api, id), undefined);
  });

  it('ends a running VM when its last handle closes (ShouldTerminateOnLastHandleClosed)', async () => {
    const id = newId();
    const cs = await HcsComputeSystem.create(api, id, doc, fast);
    await cs.start();
    await cs.close();
    assert.equal(fake.state(id), '');
  });
});
