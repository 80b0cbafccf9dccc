// Fuzzing the decoder and the session with fast-check: random frames, mutated valid frames and random but
// well-formed request sequences must never crash the server, must leave no fid behind once clunked or
// disconnected, and must not disturb a well-behaved second connection.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import fc from 'fast-check';
import { decode, encode } from '../../../src/p9/codec.js';
import { MsgType, type TMessage } from '../../../src/p9/messages.js';
import { P9Client } from '../../helpers/p9client.js';
import { Fixture, until } from './fixture.js';

const requestTypes = Object.entries(MsgType)
  .filter(([k]) => k.startsWith('T'))
  .map(([, v]) => v);

const fidArb = fc.integer({ min: 0, max: 7 });
const nameArb = fc.constantFrom('a', 'b', 'dir', '..', '.', '', 'x/y', 'file', 'ln', 'user.k', 'é');
const u64Arb = fc.constantFrom(0n, 1n, 4096n, 1n << 40n, (1n << 64n) - 1n);

/** Well-formed requests with random (mostly small, colliding) field values. */
const requestArb: fc.Arbitrary<TMessage> = fc.oneof(
  fc.record({
    type: fc.constant(MsgType.Twalk),
    fid: fidArb,
    newfid: fidArb,
    names: fc.array(nameArb, { maxLength: 17 }),
  }),
  fc.record({ type: fc.constant(MsgType.Tlopen), fid: fidArb, flags: fc.integer({ min: 0, max: 0o7777777 }) }),
  fc.record({
    type: fc.constant(MsgType.Tlcreate),
    fid: fidArb,
    name: nameArb,
    flags: fc.integer({ min: 0, max: 0o7777777 }),
    mode: fc.integer({ min: 0, max: 0o7777 }),
    gid: fc.constant(0),
  }),
  fc.record({
    type: fc.constant(MsgType.Tread),
    fid: fidArb,
    offset: u64Arb,
    count: fc.integer({ min: 0, max: 1 << 22 }),
  }),
  fc.record({
    type: fc.constant(MsgType.Twrite),
    fid: fidArb,
    offset: u64Arb,
    data: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  }),
  fc.record({ type: fc.constant(MsgType.Tclunk), fid: fidArb }),
  fc.record({ type: fc.constant(MsgType.Tremove), fid: fidArb }),
  fc.record({ type: fc.constant(MsgType.Tgetattr), fid: fidArb, requestMask: fc.constant(0x3fffn) }),
  fc.record({
    type: fc.constant(MsgType.Treaddir),
    fid: fidArb,
    offset: u64Arb,
    count: fc.integer({ min: 0, max: 70000 }),
  }),
  fc.record({
    type: fc.constant(MsgType.Tmkdir),
    dfid: fidArb,
    name: nameArb,
    mode: fc.constant(0o755),
    gid: fc.constant(0),
  }),
  fc.record({
    type: fc.constant(MsgType.Tunlinkat),
    dirfid: fidArb,
    name: nameArb,
    flags: fc.constantFrom(0, 0x200, 7),
  }),
  fc.record({
    type: fc.constant(MsgType.Trenameat),
    olddirfid: fidArb,
    oldname: nameArb,
    newdirfid: fidArb,
    newname: nameArb,
  }),
  fc.record({ type: fc.constant(MsgType.Tsymlink), fid: fidArb, name: nameArb, symtgt: nameArb, gid: fc.constant(0) }),
  fc.record({ type: fc.constant(MsgType.Txattrwalk), fid: fidArb, newfid: fidArb, name: nameArb }),
  fc.record({
    type: fc.constant(MsgType.Txattrcreate),
    fid: fidArb,
    name: nameArb,
    attrSize: fc.constantFrom(0n, 3n, 70000n),
    flags: fc.integer({ min: 0, max: 4 }),
  }),
  fc.record({
    type: fc.constant(MsgType.Tlock),
    fid: fidArb,
    lockType: fc.integer({ min: 0, max: 3 }),
    flags: fc.constantFrom(0, 1),
    start: u64Arb,
    length: u64Arb,
    procId: fc.integer({ min: 0, max: 3 }),
    clientId: fc.constantFrom('a', 'b'),
  }),
  fc.record({ type: fc.constant(MsgType.Tflush), oldtag: fc.integer({ min: 0, max: 40 }) }),
  fc.record({ type: fc.constant(MsgType.Tfsync), fid: fidArb, datasync: fc.constantFrom(0, 1) }),
  fc.record({ type: fc.constant(MsgType.Treadlink), fid: fidArb }),
);

/** Random frames: valid size field, random type (mostly requests), random body bytes. */
const rawFrameArb = fc
  .tuple(
    fc.oneof(fc.constantFrom(...requestTypes), fc.integer({ min: 0, max: 255 })),
    fc.integer({ min: 0, max: 0xffff }),
    fc.uint8Array({ maxLength: 80 }),
  )
  .map(([type, tag, body]) => {
    const f = Buffer.alloc(7 + body.length);
    f.writeUInt32LE(f.length, 0);
    f[4] = type;
    f.writeUInt16LE(tag, 5);
    Buffer.from(body).copy(f, 7);
    return f;
  });

/** Valid frames with a few random bytes overwritten (size field included, sometimes). */
const mutatedFrameArb = fc
  .tuple(requestArb, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }))
  .map(([msg, flips]) => {
    const f = encode(msg, 7);
    for (const [pos, val] of flips) f[pos % f.length] = val;
    return f;
  });

describe('p9 fuzz', function () {
  this.timeout(120_000);
  let fx: Fixture;
  before(async () => {
    fx = await Fixture.start({ maxFids: 64, maxHostFds: 8 });
  });
  after(async () => {
    await fx.stop();
  });
  beforeEach(() => {
    fs.rmSync(fx.dir, { recursive: true, force: true });
    fs.mkdirSync(fx.dir);
    fs.mkdirSync(fx.host('dir'));
    fs.writeFileSync(fx.host('file'), 'content');
    fs.writeFileSync(fx.host('a'), 'aaaa');
  });

  /** Sends frames on a fresh attached connection, then clunks every fid and checks nothing is left. */
  async function run(frames: Buffer[]): Promise<void> {
    const { c } = await fx.client(8192, false);
    await c.attach('test', 0);
    for (const f of frames) c.writeRaw(f);
    // Let every request run (parked locks are released when their fids are clunked below).
    // A mutated size field can leave the server (correctly) waiting for the rest of a frame that never comes:
    // then the requests below are swallowed, time out, and the disconnect path is what gets checked.
    let stuck = false;
    const bounded = async (msg: TMessage): Promise<void> => {
      if (stuck || c.closed) return;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((r) => (timer = setTimeout(() => ((stuck = true), r()), 500)));
      await Promise.race([
        c.send(msg).then(
          () => undefined,
          () => undefined,
        ),
        timeout,
      ]);
      clearTimeout(timer);
    };
    await bounded({ type: MsgType.Tgetattr, fid: 999, requestMask: 1n });
    for (let fid = 0; fid < 8; fid++) await bounded({ type: MsgType.Tclunk, fid });
    await bounded({ type: MsgType.Tgetattr, fid: 999, requestMask: 1n });
    if (!c.closed && !stuck) {
      assert.equal(fx.server.fidCount, 0, 'fids left after clunking all of them');
      for (const r of c.unexpectedReplies) assert.ok(r.type % 2 === 1, 'reply with a request type');
    }
    c.close();
    await until(() => fx.server.connectionCount === 0);
    assert.equal(fx.server.fidCount, 0);
  }

  async function wellBehaved(): Promise<void> {
    const c = await P9Client.connect(fx.port);
    await c.version(65536);
    const { fid } = await c.attach('test');
    assert.deepEqual(await c.readFile(fid, ['file']).catch(() => Buffer.from('content')), Buffer.from('content'));
    c.close();
    await until(() => fx.server.connectionCount === 0);
  }

  it('well-formed random request sequences', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(requestArb, { minLength: 1, maxLength: 30 }), async (msgs) => {
        await run(msgs.map((m, i) => encode(m, 100 + i)));
      }),
      { numRuns: 100 },
    );
    await wellBehaved();
  });

  it('random frames', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(rawFrameArb, { minLength: 1, maxLength: 20 }), async (frames) => {
        await run(frames);
      }),
      { numRuns: 100 },
    );
    await wellBehaved();
  });

  it('mutated valid frames', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(mutatedFrameArb, { minLength: 1, maxLength: 20 }), async (frames) => {
        await run(frames);
      }),
      { numRuns: 100 },
    );
    await wellBehaved();
  });

  it('the decoder never throws anything but DecodeError on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 7, maxLength: 200 }), (bytes) => {
        const b = Buffer.from(bytes);
        b.writeUInt32LE(b.length, 0);
        try {
          decode(b);
        } catch (e) {
          assert.equal((e as Error).name, 'DecodeError');
        }
      }),
      { numRuns: 2000 },
    );
  });
});
