// The mutual-authentication handshake (src/transport/handshake.ts): the codec against the byte layout documented
// there and in docs/security.md (hand-built frames, known-answer MACs computed independently with Python's hmac),
// property tests (fast-check) for the codec and the MACs, and both sides run against each other and against
// fakes over an in-memory pipe: a dialer or listener without the secret, replayed and reflected transcripts.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import {
  CHALLENGE_LENGTH,
  Direction,
  HandshakeIncompleteError,
  HandshakeRefused,
  MAX_HELLO_LENGTH,
  PROOF_LENGTH,
  PeerProofError,
  decodeChallenge,
  decodeHello,
  decodeProof,
  dialerHandshake,
  encodeChallenge,
  encodeHello,
  encodeProof,
  fixedSecret,
  handshakeMac,
  listenerHandshake,
  newSecret,
  type HandshakeIo,
  type ListenerAuth,
  type Purpose,
} from '../../../src/transport/index.js';

/** One end of an in-memory byte pipe; `sent` records every byte this end wrote. */
interface End extends HandshakeIo {
  /** Synchronous here: the bytes are in the peer's inbox on return. */
  write(b: Buffer): void;
  sent: Buffer[];
  close(): void;
}

function pipePair(): [End, End] {
  const mk = (): { buf: Buffer; closed: boolean; wake: () => void } => ({
    buf: Buffer.alloc(0),
    closed: false,
    wake: () => undefined,
  });
  const ab = mk();
  const ba = mk();
  const end = (inbox: ReturnType<typeof mk>, outbox: ReturnType<typeof mk>): End => {
    const sent: Buffer[] = [];
    return {
      sent,
      write(b) {
        if (outbox.closed) throw new Error('closed');
        sent.push(Buffer.from(b));
        outbox.buf = Buffer.concat([outbox.buf, b]);
        outbox.wake();
      },
      read(n, timeoutMs) {
        return new Promise((resolve, reject) => {
          const t = setTimeout(() => {
            inbox.wake = () => undefined;
            reject(new Error(`timed out waiting for ${n} bytes`));
          }, timeoutMs);
          const check = (): void => {
            if (inbox.buf.length >= n) {
              clearTimeout(t);
              inbox.wake = () => undefined;
              const out = inbox.buf.subarray(0, n);
              inbox.buf = inbox.buf.subarray(n);
              resolve(Buffer.from(out));
            } else if (inbox.closed) {
              clearTimeout(t);
              inbox.wake = () => undefined;
              reject(new Error(`connection closed after ${inbox.buf.length} of ${n} bytes`));
            }
          };
          inbox.wake = check;
          check();
        });
      },
      close() {
        outbox.closed = true;
        inbox.closed = true;
        outbox.wake();
        inbox.wake();
      },
    };
  };
  return [end(ba, ab), end(ab, ba)];
}

const control: Purpose = { kind: 'control' };
const listenerFor = (secret: Buffer, extra: Partial<ListenerAuth> = {}): ListenerAuth => ({
  secret: fixedSecret(secret),
  direction: Direction.hostToGuest,
  admit: (p) => (p.kind === 'control' ? {} : undefined),
  ...extra,
});

/** Runs both sides to completion; each side's outcome as 'ok' or its error. */
async function runBoth(
  dialerSecret: Buffer,
  listener: ListenerAuth,
  purpose: Purpose = control,
  binding?: Buffer,
): Promise<{ dialer: 'ok' | Error; listener: 'ok' | Error; d: End; l: End }> {
  const [d, l] = pipePair();
  const settle = (p: Promise<unknown>): Promise<'ok' | Error> =>
    p.then(
      () => 'ok' as const,
      (e: Error) => e,
    );
  const ls = settle(listenerHandshake(l, listener, 300)).then((r) => {
    if (r !== 'ok') l.close();
    return r;
  });
  const ds = settle(
    dialerHandshake(d, { secret: fixedSecret(dialerSecret), direction: Direction.hostToGuest, purpose, binding }, 300),
  ).then((r) => {
    if (r !== 'ok') d.close();
    return r;
  });
  const [dialer, listenerResult] = await Promise.all([ds, ls]);
  return { dialer, listener: listenerResult, d, l };
}

const bytes = (ends: Buffer[]): Buffer => Buffer.concat(ends);

describe('transport handshake: codec against the documented byte layout', () => {
  const nonce = Buffer.alloc(32, 0xab);
  const secret = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const nl = Buffer.alloc(32, 0xcd);
  const token = Buffer.alloc(16, 0x11);

  it('HELLO: magic "LCAU", version 1, type 1, direction, purpose, id length, id, dialer nonce', () => {
    const share = encodeHello({ direction: Direction.hostToGuest, purpose: { kind: 'p9', shareId: 's1' }, nonce });
    const want = Buffer.concat([
      Buffer.from([0x4c, 0x43, 0x41, 0x55, 0x01, 0x01, 0x01, 0x02, 0x02]),
      Buffer.from('s1'),
      nonce,
    ]);
    assert.deepEqual(share, want);
    assert.equal(share.length, 43);
    const ctl = encodeHello({ direction: Direction.guestToHost, purpose: control, nonce });
    assert.deepEqual(ctl.subarray(0, 9), Buffer.from([0x4c, 0x43, 0x41, 0x55, 0x01, 0x01, 0x02, 0x01, 0x00]));
    assert.equal(ctl.length, 41);
    assert.deepEqual(decodeHello(want), {
      direction: Direction.hostToGuest,
      purpose: { kind: 'p9', shareId: 's1' },
      nonce,
    });
    assert.equal(MAX_HELLO_LENGTH, 105);
  });

  it('CHALLENGE (70 bytes) and PROOF (38 bytes)', () => {
    const mac = Buffer.alloc(32, 0xee);
    const c = encodeChallenge({ nonce: nl, mac });
    assert.deepEqual(c, Buffer.concat([Buffer.from([0x4c, 0x43, 0x41, 0x55, 0x01, 0x02]), nl, mac]));
    assert.equal(c.length, CHALLENGE_LENGTH);
    assert.equal(CHALLENGE_LENGTH, 70);
    assert.deepEqual(decodeChallenge(c), { nonce: nl, mac });
    const p = encodeProof(mac);
    assert.deepEqual(p, Buffer.concat([Buffer.from([0x4c, 0x43, 0x41, 0x55, 0x01, 0x03]), mac]));
    assert.equal(PROOF_LENGTH, 38);
    assert.deepEqual(decodeProof(p), mac);
  });

  it('MACs: HMAC-SHA256(secret, label || HELLO || Nl || len(B) || B), known answers', () => {
    const hello = encodeHello({ direction: Direction.hostToGuest, purpose: { kind: 'p9', shareId: 's1' }, nonce });
    // Computed independently: python3 hmac.new(bytes(range(32)), b'lcow-auth/1 listener\0' + ..., sha256)
    assert.equal(
      handshakeMac(secret, 'listener', hello, nl, token).toString('hex'),
      '9b21d7777ff27bd3e6be975d5e7b868c1af64db6188684f94a10c9d4eb7f5e71',
    );
    assert.equal(
      handshakeMac(secret, 'dialer', hello, nl, token).toString('hex'),
      'f2cb58472131063aeb82ba0c82f0d3d0da24e7299fba49d2927522743e56de45',
    );
    const ctlHello = encodeHello({ direction: Direction.guestToHost, purpose: control, nonce: Buffer.alloc(32) });
    assert.equal(
      handshakeMac(secret, 'listener', ctlHello, nl, Buffer.alloc(0)).toString('hex'),
      '39d181944f02107123a40297f0d5e1555c481224234891da3c9134ecd194d3f7',
    );
    // and the same through node:crypto directly, from the layout
    const direct = createHmac('sha256', secret)
      .update(Buffer.concat([Buffer.from('lcow-auth/1 dialer\0'), hello, nl, Buffer.from([16]), token]))
      .digest();
    assert.deepEqual(handshakeMac(secret, 'dialer', hello, nl, token), direct);
  });

  it('refuses malformed frames: magic, version, type, lengths, id charset and size, unknown direction/purpose', () => {
    const good = encodeHello({ direction: Direction.hostToGuest, purpose: { kind: 'p9', shareId: 's1' }, nonce });
    const mutate = (i: number, v: number): Buffer => {
      const b = Buffer.from(good);
      b[i] = v;
      return b;
    };
    assert.throws(() => decodeHello(mutate(0, 0x4d)), /bad magic/);
    assert.throws(() => decodeHello(mutate(4, 0x02)), /unsupported version 2/);
    assert.throws(() => decodeHello(mutate(5, 0x02)), /unexpected frame type/);
    assert.throws(() => decodeHello(mutate(6, 0x03)), /unknown direction/);
    assert.throws(() => decodeHello(mutate(7, 0x09)), /unknown purpose/);
    assert.throws(() => decodeHello(mutate(8, 65)), /max 64/);
    assert.throws(() => decodeHello(mutate(9, 0x2f)), /invalid share id/); // '/'
    assert.throws(() => decodeHello(mutate(7, 0x01)), /control with a share id/);
    assert.throws(() => decodeHello(good.subarray(0, good.length - 1)), /wrong length/);
    assert.throws(() => decodeHello(Buffer.concat([good, Buffer.from([0])])), /wrong length/);
    assert.throws(() => decodeChallenge(Buffer.alloc(70)), /bad magic/);
    assert.throws(() => decodeProof(encodeChallenge({ nonce, mac: nonce })), /unexpected frame type/);
    assert.throws(() =>
      encodeHello({ direction: Direction.hostToGuest, purpose: { kind: 'p9', shareId: 'a/b' }, nonce }),
    );
    assert.throws(() =>
      encodeHello({ direction: Direction.hostToGuest, purpose: { kind: 'p9', shareId: 'x'.repeat(65) }, nonce }),
    );
  });
});

describe('transport handshake: properties (fast-check)', () => {
  const shareId = fc.stringMatching(/^[A-Za-z0-9_.-]{1,64}$/);
  const purposeArb: fc.Arbitrary<Purpose> = fc.oneof(
    fc.constant<Purpose>({ kind: 'control' }),
    shareId.map((id): Purpose => ({ kind: 'p9', shareId: id })),
  );
  const buf = (n: number): fc.Arbitrary<Buffer> =>
    fc.uint8Array({ minLength: n, maxLength: n }).map((a) => Buffer.from(a));
  const dirArb = fc.constantFrom(Direction.hostToGuest, Direction.guestToHost);

  it('HELLO, CHALLENGE and PROOF round-trip; the HELLO length is 41 + id length', () => {
    fc.assert(
      fc.property(dirArb, purposeArb, buf(32), buf(32), (direction, purpose, n1, n2) => {
        const h = encodeHello({ direction, purpose, nonce: n1 });
        assert.equal(h.length, 41 + (purpose.kind === 'p9' ? purpose.shareId.length : 0));
        assert.deepEqual(decodeHello(h), { direction, purpose, nonce: n1 });
        assert.deepEqual(decodeChallenge(encodeChallenge({ nonce: n1, mac: n2 })), { nonce: n1, mac: n2 });
        assert.deepEqual(decodeProof(encodeProof(n2)), n2);
      }),
    );
  });

  it('the decoder is canonical: random bytes either fail or re-encode to exactly themselves', () => {
    const header = Buffer.from([0x4c, 0x43, 0x41, 0x55, 0x01, 0x01]);
    const arb = fc.oneof(
      fc.uint8Array({ maxLength: 120 }).map((a) => Buffer.from(a)),
      // mostly-valid frames: the real header followed by random bytes, so the checks past the header are hit
      fc.uint8Array({ maxLength: 110 }).map((a) => Buffer.concat([header, Buffer.from(a)])),
    );
    fc.assert(
      fc.property(arb, (b) => {
        let h;
        try {
          h = decodeHello(b);
        } catch {
          return;
        }
        assert.deepEqual(encodeHello(h), b);
      }),
      { numRuns: 2000 },
    );
  });

  it('any change to the HELLO, the listener nonce, the binding, the role or the secret changes the MAC', () => {
    fc.assert(
      fc.property(
        buf(32),
        purposeArb,
        buf(32),
        buf(32),
        fc.uint8Array({ maxLength: 32 }).map((a) => Buffer.from(a)),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        (secret, purpose, n1, nl, binding, at, x) => {
          const hello = encodeHello({ direction: Direction.hostToGuest, purpose, nonce: n1 });
          const base = handshakeMac(secret, 'listener', hello, nl, binding);
          assert.notDeepEqual(handshakeMac(secret, 'dialer', hello, nl, binding), base);
          const flip = (b: Buffer): Buffer => {
            const c = Buffer.from(b);
            c[at % c.length] ^= x;
            return c;
          };
          assert.notDeepEqual(handshakeMac(secret, 'listener', flip(hello), nl, binding), base);
          assert.notDeepEqual(handshakeMac(secret, 'listener', hello, flip(nl), binding), base);
          assert.notDeepEqual(handshakeMac(flip(secret), 'listener', hello, nl, binding), base);
          if (binding.length > 0) assert.notDeepEqual(handshakeMac(secret, 'listener', hello, nl, flip(binding)), base);
          assert.notDeepEqual(
            handshakeMac(secret, 'listener', hello, nl, Buffer.concat([binding, Buffer.from([0])])),
            base,
          );
        },
      ),
    );
  });

  it('both sides succeed iff they hold the same secret; the secret never crosses the wire', async () => {
    await fc.assert(
      fc.asyncProperty(buf(32), buf(32), fc.boolean(), purposeArb, buf(16), async (a, b, same, purpose, token) => {
        const dialerSecret = same ? a : b;
        const listener = listenerFor(a, { admit: () => ({ binding: token }) });
        const r = await runBoth(dialerSecret, listener, purpose, token);
        const wire = Buffer.concat([bytes(r.d.sent), bytes(r.l.sent)]);
        assert.equal(wire.indexOf(a), -1, 'the secret crossed the wire');
        assert.equal(wire.indexOf(dialerSecret), -1, 'the secret crossed the wire');
        if (same || a.equals(b)) {
          assert.equal(r.dialer, 'ok');
          assert.equal(r.listener, 'ok');
          assert.equal(bytes(r.d.sent).length, encodeHello({ direction: 1, purpose, nonce: a }).length + PROOF_LENGTH);
          assert.equal(bytes(r.l.sent).length, CHALLENGE_LENGTH);
        } else {
          assert.ok(r.dialer instanceof PeerProofError, String(r.dialer));
          assert.ok(r.listener instanceof HandshakeRefused, String(r.listener));
          // the dialer stopped after HELLO: no MAC of its own ever left it
          assert.equal(r.d.sent.length, 1);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('a listener fed arbitrary bytes never accepts, and answers at most one CHALLENGE (only to a valid HELLO)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
        async (junk) => {
          const [d, l] = pipePair();
          d.write(junk);
          d.close();
          await assert.rejects(listenerHandshake(l, listenerFor(newSecret()), 100), HandshakeRefused);
          const answered = bytes(l.sent);
          assert.ok(answered.length === 0 || answered.length === CHALLENGE_LENGTH);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('transport handshake: both sides, fakes and attacks', () => {
  it('binds the purpose: a share token mismatch fails, a control listener refuses a share HELLO without a byte', async () => {
    const s = newSecret();
    const share: Purpose = { kind: 'p9', shareId: 's7' };
    const wrongToken = await runBoth(
      s,
      listenerFor(s, { admit: () => ({ binding: Buffer.alloc(16, 1) }) }),
      share,
      Buffer.alloc(16, 2),
    );
    assert.ok(wrongToken.dialer instanceof PeerProofError);
    assert.ok(wrongToken.listener instanceof HandshakeRefused);
    const notServed = await runBoth(s, listenerFor(s), share);
    assert.ok(notServed.listener instanceof HandshakeRefused && /purpose not served/.test(notServed.listener.message));
    assert.equal(bytes(notServed.l.sent).length, 0);
    assert.ok(notServed.dialer instanceof HandshakeIncompleteError);
  });

  it('binds the direction: a listener for host->guest refuses a guest->host HELLO without a byte', async () => {
    const s = newSecret();
    const [d, l] = pipePair();
    const lr = listenerHandshake(l, listenerFor(s), 300);
    const dr = dialerHandshake(d, { secret: fixedSecret(s), direction: Direction.guestToHost, purpose: control }, 300);
    await assert.rejects(lr, /direction/);
    l.close();
    await assert.rejects(dr, HandshakeIncompleteError);
    assert.equal(bytes(l.sent).length, 0);
  });

  it('a replayed dialer transcript (HELLO + PROOF of a good session) is refused: the listener nonce is fresh', async () => {
    const s = newSecret();
    const good = await runBoth(s, listenerFor(s));
    assert.equal(good.listener, 'ok');
    const [d, l] = pipePair();
    d.write(bytes(good.d.sent));
    const r = listenerHandshake(l, listenerFor(s), 300);
    await assert.rejects(r, /bad dialer MAC/);
  });

  it('a replayed listener transcript (CHALLENGE of a good session) fails the dialer: the dialer nonce is fresh', async () => {
    const s = newSecret();
    const good = await runBoth(s, listenerFor(s));
    const [d, l] = pipePair();
    const r = dialerHandshake(d, { secret: fixedSecret(s), direction: Direction.hostToGuest, purpose: control }, 300);
    await l.read(41, 300);
    l.write(bytes(good.l.sent));
    await assert.rejects(r, PeerProofError);
    assert.equal(d.sent.length, 1, 'no PROOF sent to a bad CHALLENGE');
  });

  it('reflection: the listener MAC sent back as a PROOF, or the HELLO nonce as a MAC, is refused', async () => {
    const s = newSecret();
    const [d, l] = pipePair();
    const r = listenerHandshake(l, listenerFor(s), 300);
    const hello = encodeHello({ direction: Direction.hostToGuest, purpose: control, nonce: newSecret() });
    d.write(hello);
    const challenge = decodeChallenge(await d.read(CHALLENGE_LENGTH, 300));
    d.write(encodeProof(challenge.mac));
    await assert.rejects(r, /bad dialer MAC/);
  });

  it('a fake agent without the secret (a squatter) gets one HELLO: a nonce and a purpose, nothing to replay', async () => {
    const s = newSecret();
    const [d, squatter] = pipePair();
    const r = dialerHandshake(d, { secret: fixedSecret(s), direction: Direction.hostToGuest, purpose: control }, 300);
    const hello = await squatter.read(41, 300);
    squatter.write(encodeChallenge({ nonce: newSecret(), mac: newSecret() }));
    await assert.rejects(r, PeerProofError);
    assert.deepEqual(decodeHello(hello).purpose, control);
    assert.equal(bytes(d.sent).length, 41, 'exactly one HELLO left the dialer');
    // What it got opens nothing: fed to the real listener, the captured HELLO earns a CHALLENGE, but no PROOF
    // the squatter can make passes.
    const [d2, l2] = pipePair();
    const lr = listenerHandshake(l2, listenerFor(s), 300);
    d2.write(hello);
    await d2.read(CHALLENGE_LENGTH, 300);
    d2.write(encodeProof(hello.subarray(9)));
    await assert.rejects(lr, /bad dialer MAC/);
  });

  it('a dialer that stops after HELLO (gave up) is never accepted; a silent one is refused at the deadline', async () => {
    const s = newSecret();
    const [d, l] = pipePair();
    const r = listenerHandshake(l, listenerFor(s), 200);
    d.write(encodeHello({ direction: Direction.hostToGuest, purpose: control, nonce: newSecret() }));
    await d.read(CHALLENGE_LENGTH, 300);
    d.close();
    await assert.rejects(r, /PROOF/);
    const [, l2] = pipePair();
    await assert.rejects(listenerHandshake(l2, listenerFor(s), 100), /HELLO: timed out/);
  });

  it('admission is released when the handshake fails after it (a share claim is not left behind)', async () => {
    const s = newSecret();
    let released = 0;
    const share: Purpose = { kind: 'p9', shareId: 's1' };
    const r = await runBoth(newSecret(), listenerFor(s, { admit: () => ({ release: () => released++ }) }), share);
    assert.ok(r.listener instanceof HandshakeRefused);
    assert.equal(released, 1);
    const ok = await runBoth(s, listenerFor(s, { admit: () => ({ release: () => released++ }) }), share);
    assert.equal(ok.listener, 'ok');
    assert.equal(released, 1);
  });

  it('the SecretSource is called at every handshake: a listener whose secret changes uses the new one at once', async () => {
    // A UVM clone restored from a template re-reads a fresh secret from fw_cfg: no restart of the listener.
    const a = newSecret();
    const b = newSecret();
    let current = a;
    let calls = 0;
    const listener = listenerFor(a, {
      secret: () => {
        calls++;
        return current;
      },
    });
    assert.equal((await runBoth(a, listener)).listener, 'ok');
    current = b;
    const stale = await runBoth(a, listener);
    assert.ok(stale.dialer instanceof PeerProofError);
    assert.equal((await runBoth(b, listener)).listener, 'ok');
    assert.equal(calls, 3);
    // a source that fails or returns a wrong length refuses the connection, without an answer
    const broken = await runBoth(a, listenerFor(a, { secret: () => Buffer.alloc(5) }));
    assert.ok(broken.listener instanceof HandshakeRefused && /no secret/.test(broken.listener.message));
    assert.equal(bytes(broken.l.sent).length, 0);
  });
});
