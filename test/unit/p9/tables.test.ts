// Unit tests of the server's tables: POSIX lock ranges, qid remapping, frame splitting.

import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FrameReader } from '../../../src/p9/framer.js';
import { LOCK_EOF, LockLimitError, LockTable, rangeEnd, type LockRequest } from '../../../src/p9/locks.js';
import { QidMapper } from '../../../src/p9/qid.js';

const req = (owner: string, type: number, start: bigint, end: bigint, session = 1): LockRequest => ({
  owner,
  type,
  start,
  end,
  procId: 1,
  clientId: 'c',
  session,
});

describe('p9 lock table', () => {
  it('splits an owner range on partial unlock and merges adjacent ranges of the same type', () => {
    const t = new LockTable();
    assert.ok(t.trySet('f', req('a', 1, 0n, 100n)));
    assert.ok(t.trySet('f', req('a', 2, 40n, 60n)));
    assert.deepEqual(
      t.ranges('f').map((r) => [r.start, r.end, r.type]),
      [
        [0n, 40n, 1],
        [60n, 100n, 1],
      ],
    );
    assert.ok(t.trySet('f', req('a', 1, 40n, 60n)));
    assert.deepEqual(
      t.ranges('f').map((r) => [r.start, r.end]),
      [[0n, 100n]],
    );
    // A downgrade of the middle splits into three ranges of alternating type.
    assert.ok(t.trySet('f', req('a', 0, 10n, 20n)));
    assert.deepEqual(
      t.ranges('f').map((r) => [r.start, r.end, r.type]),
      [
        [0n, 10n, 1],
        [10n, 20n, 0],
        [20n, 100n, 1],
      ],
    );
    assert.equal(t.locksHeld(1), 3);
  });

  it('read locks share, write locks exclude, owners never conflict with themselves', () => {
    const t = new LockTable();
    assert.ok(t.trySet('f', req('a', 0, 0n, LOCK_EOF)));
    assert.ok(t.trySet('f', req('b', 0, 5n, 10n)));
    assert.equal(t.trySet('f', req('b', 1, 5n, 10n)), false);
    assert.ok(t.trySet('f', req('a', 1, 0n, 5n)));
    assert.equal(rangeEnd(5n, 0n), LOCK_EOF);
    assert.equal(rangeEnd((1n << 64n) - 2n, 10n), LOCK_EOF);
  });

  it('wakes waiters in FIFO order when ranges are released, and cancel removes a waiter', () => {
    const t = new LockTable();
    t.trySet('f', req('a', 1, 0n, LOCK_EOF));
    const granted: string[] = [];
    t.wait('f', req('b', 1, 0n, 10n), () => granted.push('b'));
    const cancelC = t.wait('f', req('c', 1, 0n, 10n), () => granted.push('c'));
    t.wait('f', req('d', 0, 50n, 60n), () => granted.push('d'));
    cancelC!();
    t.releaseOwner('f', 'a');
    assert.deepEqual(granted, ['b', 'd']);
  });

  it('bounds the ranges a session may hold', () => {
    const t = new LockTable(2);
    t.trySet('f', req('a', 1, 0n, 1n));
    t.trySet('f', req('a', 1, 5n, 6n));
    assert.throws(() => t.trySet('f', req('a', 1, 10n, 11n)));
    t.releaseSession(1);
    assert.equal(t.locksHeld(1), 0);
  });

  it('property: after random operations no two owners hold conflicting overlapping ranges', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            owner: fc.constantFrom('a', 'b', 'c'),
            type: fc.integer({ min: 0, max: 2 }),
            start: fc.bigInt({ min: 0n, max: 50n }),
            len: fc.bigInt({ min: 0n, max: 20n }),
          }),
          { maxLength: 40 },
        ),
        (ops) => {
          const t = new LockTable();
          for (const o of ops) t.trySet('f', req(o.owner, o.type, o.start, rangeEnd(o.start, o.len)));
          const rs = t.ranges('f');
          for (const x of rs) {
            assert.ok(x.start < x.end);
            for (const y of rs) {
              if (x === y) continue;
              const overlap = x.start < y.end && y.start < x.end;
              if (x.owner === y.owner) assert.ok(!overlap, 'an owner overlaps itself');
              else if (overlap) assert.ok(x.type === 0 && y.type === 0, 'conflicting locks coexist');
            }
          }
        },
      ),
    );
  });
});

describe('p9 lock table bounds and wakeups', () => {
  it('a change re-tests only the waiters whose range it overlaps', () => {
    const t = new LockTable();
    t.trySet('f', req('a', 1, 0n, 10n));
    t.trySet('f', req('a', 1, 100n, 110n));
    const granted: string[] = [];
    for (let i = 0; i < 50; i++) t.wait('f', req(`w${i}`, 1, 100n, 110n), () => granted.push(`w${i}`));
    t.trySet('f', req('a', 2, 0n, 10n)); // unlock elsewhere
    assert.equal(t.rechecks, 0);
    t.trySet('f', req('a', 2, 105n, 106n)); // a hole under every waiter: each is re-tested, none fits
    assert.equal(t.rechecks, 50);
    assert.deepEqual(granted, []);
    t.releaseOwner('f', 'a');
    assert.deepEqual(granted, ['w0'], 'the first waiter wins, the others now conflict with it');
  });

  it('caps ranges per file (LockLimitError) and waiters per file (wait answers undefined)', () => {
    const t = new LockTable({ maxRangesPerFile: 3, maxWaitersPerFile: 2 });
    t.trySet('f', req('a', 1, 0n, 1n));
    t.trySet('f', req('b', 1, 5n, 6n, 2));
    t.trySet('f', req('a', 1, 10n, 11n));
    assert.throws(() => t.trySet('f', req('c', 1, 20n, 21n, 3)), LockLimitError);
    assert.ok(t.trySet('f', req('a', 1, 1n, 2n)), 'merging into an existing range needs no new one');
    assert.ok(t.wait('f', req('x', 1, 0n, 1n), () => undefined));
    assert.ok(t.wait('f', req('y', 1, 0n, 1n), () => undefined));
    assert.equal(
      t.wait('f', req('z', 1, 0n, 1n), () => undefined),
      undefined,
    );
  });

  it('property: agrees with a byte-by-byte model on every decision and every resulting lock', () => {
    const SIZE = 80;
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            owner: fc.constantFrom('a', 'b', 'c'),
            type: fc.integer({ min: 0, max: 2 }),
            start: fc.integer({ min: 0, max: 60 }),
            len: fc.integer({ min: 1, max: 20 }),
          }),
          { maxLength: 60 },
        ),
        (ops) => {
          const t = new LockTable();
          const cells: Array<Map<string, number>> = Array.from({ length: SIZE }, () => new Map());
          for (const o of ops) {
            const end = o.start + o.len;
            let conflict = false;
            if (o.type !== 2) {
              for (let i = o.start; i < end; i++) {
                for (const [owner, type] of cells[i]!) {
                  if (owner !== o.owner && (type === 1 || o.type === 1)) conflict = true;
                }
              }
            }
            const ok = t.trySet('f', req(o.owner, o.type, BigInt(o.start), BigInt(end)));
            assert.equal(ok, !conflict, `decision for ${JSON.stringify(o)}`);
            if (!ok) continue;
            for (let i = o.start; i < end; i++) {
              if (o.type === 2) cells[i]!.delete(o.owner);
              else cells[i]!.set(o.owner, o.type);
            }
          }
          const got: Array<Map<string, number>> = Array.from({ length: SIZE }, () => new Map());
          const rs = t.ranges('f');
          for (const r of rs) for (let i = Number(r.start); i < Number(r.end); i++) got[i]!.set(r.owner, r.type);
          assert.deepEqual(got, cells);
          // Maximal ranges: an owner's adjacent ranges of one type are merged.
          for (const x of rs)
            for (const y of rs) {
              if (x !== y && x.owner === y.owner && x.type === y.type)
                assert.ok(x.end !== y.start, 'unmerged neighbours');
            }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('p9 lock table waiters', () => {
  it('a granted downgrade that frees a range lets an earlier waiter in', () => {
    const t = new LockTable();
    t.trySet('f', req('w', 1, 0n, 10n)); // W holds a write lock
    t.trySet('f', req('x', 1, 15n, 20n)); // X holds a write lock further on
    const granted: string[] = [];
    t.wait('f', req('v', 0, 5n, 8n), () => granted.push('v')); // V waits on W's range
    t.wait('f', req('w', 0, 0n, 20n), () => granted.push('w')); // W downgrades over X's range: waits on X
    t.releaseOwner('f', 'x'); // W is granted, its downgrade frees [0, 10) for reading: V fits now
    assert.deepEqual(granted, ['w', 'v']);
  });

  it('property: after every operation no parked waiter could have been granted', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            owner: fc.constantFrom('a', 'b', 'c', 'd'),
            type: fc.integer({ min: 0, max: 2 }),
            start: fc.integer({ min: 0, max: 40 }),
            len: fc.integer({ min: 1, max: 20 }),
            block: fc.boolean(),
          }),
          { maxLength: 50 },
        ),
        (ops) => {
          const t = new LockTable();
          const pending = new Set<LockRequest>();
          for (const o of ops) {
            if ([...pending].some((p) => p.owner === o.owner)) continue; // a process waits for one lock at a time
            const r = req(o.owner, o.type, BigInt(o.start), BigInt(o.start + o.len));
            if (!t.trySet('f', r) && o.block) {
              pending.add(r);
              t.wait('f', r, () => pending.delete(r));
            }
            for (const p of pending) assert.ok(t.conflict('f', p) !== undefined, `waiter ${p.owner} could run`);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('p9 qid mapper', () => {
  it('keeps equal inode numbers on different devices distinct, and is stable', () => {
    const m = new QidMapper();
    const a = m.path(8, 1, 12n);
    const b = m.path(8, 2, 12n);
    assert.notEqual(a, b);
    assert.equal(m.path(8, 1, 12n), a);
    assert.equal(a, 12n); // first device: inode numbers pass through
  });

  it('remaps inodes too large for the device prefix, and answers ENFILE when the table is full', () => {
    const m = new QidMapper(2);
    m.path(1, 1, 1n);
    const big1 = m.path(1, 1, 1n << 60n);
    const big2 = m.path(1, 1, (1n << 60n) + 1n);
    assert.notEqual(big1, big2);
    assert.equal(m.path(1, 1, 1n << 60n), big1);
    assert.throws(() => m.path(1, 1, (1n << 60n) + 2n), /qid remap table full/);
  });
});

describe('p9 frame reader', () => {
  it('reassembles frames from arbitrary chunking, byte-exact', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 0, maxLength: 300 }), { minLength: 1, maxLength: 10 }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        (bodies, cuts) => {
          const frames = bodies.map((b) => {
            const f = Buffer.alloc(7 + b.length);
            f.writeUInt32LE(f.length, 0);
            Buffer.from(b).copy(f, 7);
            return f;
          });
          const stream = Buffer.concat(frames);
          const got: Buffer[] = [];
          const r = new FrameReader(
            () => 1000,
            (b, off, size) => got.push(Buffer.from(b.subarray(off, off + size))),
            () => assert.fail('bad size'),
            () => false,
          );
          let off = 0;
          for (let i = 0; off < stream.length; i++) {
            const n = cuts[i % cuts.length]!;
            r.push(stream.subarray(off, off + n));
            off += n;
          }
          assert.deepEqual(got, frames);
        },
      ),
    );
  });

  it('hands frames of the scatter type that span chunks out as pieces: byte-exact, header contiguous', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.uint8Array({ minLength: 16, maxLength: 300 })), {
          minLength: 1,
          maxLength: 10,
        }),
        fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
        (bodies, cuts) => {
          const frames = bodies.map(([scatter, b]) => {
            const f = Buffer.alloc(7 + b.length);
            f.writeUInt32LE(f.length, 0);
            Buffer.from(b).copy(f, 7);
            f[4] = scatter ? 118 : 100;
            return f;
          });
          const stream = Buffer.concat(frames);
          const got: Buffer[] = [];
          const r = new FrameReader(
            () => 1000,
            (b, off, size) => got.push(Buffer.from(b.subarray(off, off + size))),
            () => assert.fail('bad size'),
            () => false,
            {
              type: 118,
              head: 23,
              minSize: 30,
              onFrame: (pieces, size) => {
                assert.ok(pieces[0]!.length >= 23, 'the header is contiguous');
                const f = Buffer.concat(pieces);
                assert.equal(f.length, size);
                assert.equal(f[4], 118);
                got.push(f);
              },
            },
          );
          let off = 0;
          for (let i = 0; off < stream.length; i++) {
            const n = cuts[i % cuts.length]!;
            r.push(stream.subarray(off, off + n));
            off += n;
          }
          assert.deepEqual(got, frames);
        },
      ),
    );
  });

  it('holds frames back while blocked and releases them on pump', () => {
    let blocked = true;
    const got: number[] = [];
    const r = new FrameReader(
      () => 100,
      (_b, _off, size) => got.push(size),
      () => assert.fail(),
      () => blocked,
    );
    const f = Buffer.alloc(8);
    f.writeUInt32LE(8, 0);
    r.push(Buffer.concat([f, f]));
    assert.deepEqual(got, []);
    blocked = false;
    r.pump();
    assert.deepEqual(got, [8, 8]);
  });
});
