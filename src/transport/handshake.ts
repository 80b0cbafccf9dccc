// Mutual authentication of every shim <-> guest agent connection (tcp+token and vsock alike): a challenge-response
// in both directions, keyed by the per-UVM secret, so that the secret never crosses the wire. Each side proves it
// knows the secret with an HMAC over both sides' fresh nonces, the direction of the connection and its purpose;
// a squatter on a port (or anyone who connects) learns two random nonces and MACs bound to that one connection:
// nothing it can replay, reflect or use to pass for either side.
//
// Wire format, version 1 (docs/security.md, "Transport and local users", has the same table). Every frame starts
// with the magic "LCAU" (0x4c 0x43 0x41 0x55), the version byte 0x01 and a type byte.
//
//   HELLO     dialer -> listener, 41..105 bytes
//     off  len  field
//       0    4  magic "LCAU"
//       4    1  version 0x01
//       5    1  type 0x01
//       6    1  direction: 0x01 host dials guest (tcp+token through hostfwd), 0x02 guest dials host (vsock)
//       7    1  purpose: 0x01 control channel (ttrpc), 0x02 9P share
//       8    1  N = length of the share id: 0 for control, 1..64 for a share
//       9    N  share id, ASCII [A-Za-z0-9_.-] (the 9P aname)
//     9+N   32  dialer nonce Nd (random)
//   CHALLENGE listener -> dialer, 70 bytes
//       0    4  magic,  4 1 version,  5 1 type 0x02
//       6   32  listener nonce Nl (random)
//      38   32  listener MAC = HMAC-SHA256(secret, "lcow-auth/1 listener" 0x00 || T)
//   PROOF     dialer -> listener, 38 bytes
//       0    4  magic,  4 1 version,  5 1 type 0x03
//       6   32  dialer MAC = HMAC-SHA256(secret, "lcow-auth/1 dialer" 0x00 || T)
//
//   T = the HELLO frame exactly as sent || Nl || len(B) (1 byte) || B
//   B = binding bytes that both sides know and never send: the 9P share's token (from AddShare); empty for control.
//
// Flow: the dialer sends HELLO; the listener refuses (closes without a byte) anything malformed, of another
// version, direction or purpose, or an unknown share id, else answers CHALLENGE; the dialer checks the listener's
// MAC (constant time) and only then sends PROOF; the listener checks the dialer's MAC and hands the connection out.
// A dialer that gave up before PROOF never becomes a half-adopted channel (PROOF doubles as the old COMMIT).
// The listener proves first, so a squatter the shim dials by mistake receives only HELLO: a nonce and a purpose.
// Sizes are fixed or bounded (the share id), each side has a deadline, and every MAC compare is constant time.
//
// What this does not do: encrypt. After the handshake the bytes are plain on 127.0.0.1 (tcp+token) or vsock. An
// attacker who could relay a live handshake between the shim and the real agent would sit in the middle; on
// tcp+token that needs the hostfwd port QEMU holds (a squatter holding it means QEMU could not start), see the
// threat model in docs/security.md.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export const MAGIC = Buffer.from('LCAU', 'ascii');
export const VERSION = 0x01;
export const NONCE_LENGTH = 32;
export const MAC_LENGTH = 32;
export const SECRET_LENGTH = 32;
export const MAX_SHARE_ID_LENGTH = 64;
export const MAX_BINDING_LENGTH = 255;

export const FrameType = { hello: 0x01, challenge: 0x02, proof: 0x03 } as const;
export const Direction = { hostToGuest: 0x01, guestToHost: 0x02 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];
export const PurposeKind = { control: 0x01, p9: 0x02 } as const;

/** What a connection is for; bound into both MACs. */
export type Purpose = { kind: 'control' } | { kind: 'p9'; shareId: string };

const HEADER_LENGTH = 6; // magic + version + type
/** HELLO bytes before the share id: header, direction, purpose, id length. */
export const HELLO_FIXED_LENGTH = HEADER_LENGTH + 3;
export const CHALLENGE_LENGTH = HEADER_LENGTH + NONCE_LENGTH + MAC_LENGTH;
export const PROOF_LENGTH = HEADER_LENGTH + MAC_LENGTH;
export const MAX_HELLO_LENGTH = HELLO_FIXED_LENGTH + MAX_SHARE_ID_LENGTH + NONCE_LENGTH;

const LISTENER_LABEL = Buffer.from('lcow-auth/1 listener\0', 'ascii');
const DIALER_LABEL = Buffer.from('lcow-auth/1 dialer\0', 'ascii');
const SHARE_ID_RE = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * Where one side gets the per-UVM secret. CONTRACT: called at every handshake and never cached by the transport,
 * so that a side can change its secret under a listener that is already up. The guest agent reads its token file
 * (QEMU fw_cfg) on every call: a UVM clone restored from a template snapshot gets a fresh secret through fw_cfg
 * after restore, and its next handshake must use that one, not the template's.
 */
export type SecretSource = () => Buffer | Promise<Buffer>;

/** A SecretSource for a secret this process made and holds (the shim's per-boot-attempt secret, tests). */
export function fixedSecret(secret: Buffer): SecretSource {
  checkSecret(secret);
  const copy = Buffer.from(secret);
  return () => copy;
}

export function checkSecret(secret: Buffer): void {
  if (secret.length !== SECRET_LENGTH) throw new Error(`the transport secret must be ${SECRET_LENGTH} bytes`);
}

async function getSecret(source: SecretSource): Promise<Buffer> {
  const s = await source();
  checkSecret(s);
  return s;
}

/** The peer sent bytes that are not a valid proof of the secret: it is not our agent or shim (e.g. a squatter). */
export class PeerProofError extends Error {
  readonly code = 'ELCOW_PEER_PROOF';
  constructor(message: string) {
    super(message);
    this.name = 'PeerProofError';
  }
}

/** The handshake did not complete (closed, silent, refused): nothing was learnt about the peer. */
export class HandshakeIncompleteError extends Error {
  readonly code = 'ELCOW_HANDSHAKE_INCOMPLETE';
  constructor(message: string) {
    super(message);
    this.name = 'HandshakeIncompleteError';
  }
}

// ---- codec ----

function header(type: number): Buffer {
  const h = Buffer.alloc(HEADER_LENGTH);
  MAGIC.copy(h, 0);
  h[4] = VERSION;
  h[5] = type;
  return h;
}

/** Why `b` does not start with a version-1 header of `type`, or undefined if it does. */
function headerProblem(b: Buffer, type: number): string | undefined {
  if (b.length < HEADER_LENGTH) return 'short frame';
  if (!b.subarray(0, 4).equals(MAGIC)) return 'bad magic';
  if (b[4] !== VERSION) return `unsupported version ${b[4]}`;
  if (b[5] !== type) return `unexpected frame type ${b[5]}`;
  return undefined;
}

export interface Hello {
  direction: Direction;
  purpose: Purpose;
  nonce: Buffer;
}

export function validatePurpose(p: Purpose): void {
  if (p.kind === 'p9' && !SHARE_ID_RE.test(p.shareId))
    throw new Error(`invalid share id ${JSON.stringify(p.shareId)} (1..64 of [A-Za-z0-9_.-])`);
}

export function encodeHello(h: Hello): Buffer {
  validatePurpose(h.purpose);
  if (h.nonce.length !== NONCE_LENGTH) throw new Error('bad nonce length');
  const id = h.purpose.kind === 'p9' ? Buffer.from(h.purpose.shareId, 'ascii') : Buffer.alloc(0);
  const kind = h.purpose.kind === 'p9' ? PurposeKind.p9 : PurposeKind.control;
  return Buffer.concat([header(FrameType.hello), Buffer.from([h.direction, kind, id.length]), id, h.nonce]);
}

/** The share id length announced by a HELLO's fixed part (validated), so the reader knows how much follows. */
export function helloIdLength(fixed: Buffer): number {
  const bad = headerProblem(fixed, FrameType.hello);
  if (bad) throw new Error(`HELLO: ${bad}`);
  if (fixed.length < HELLO_FIXED_LENGTH) throw new Error('HELLO: short frame');
  const n = fixed[8]!;
  if (n > MAX_SHARE_ID_LENGTH) throw new Error(`HELLO: share id of ${n} bytes (max ${MAX_SHARE_ID_LENGTH})`);
  return n;
}

export function decodeHello(b: Buffer): Hello {
  const n = helloIdLength(b);
  if (b.length !== HELLO_FIXED_LENGTH + n + NONCE_LENGTH) throw new Error('HELLO: wrong length');
  const direction = b[6]!;
  if (direction !== Direction.hostToGuest && direction !== Direction.guestToHost)
    throw new Error(`HELLO: unknown direction ${direction}`);
  const kind = b[7]!;
  const id = b.subarray(HELLO_FIXED_LENGTH, HELLO_FIXED_LENGTH + n).toString('latin1');
  let purpose: Purpose;
  if (kind === PurposeKind.control) {
    if (n !== 0) throw new Error('HELLO: control with a share id');
    purpose = { kind: 'control' };
  } else if (kind === PurposeKind.p9) {
    if (!SHARE_ID_RE.test(id)) throw new Error('HELLO: invalid share id');
    purpose = { kind: 'p9', shareId: id };
  } else throw new Error(`HELLO: unknown purpose ${kind}`);
  return { direction: direction as Direction, purpose, nonce: Buffer.from(b.subarray(HELLO_FIXED_LENGTH + n)) };
}

export interface Challenge {
  nonce: Buffer;
  mac: Buffer;
}

export function encodeChallenge(c: Challenge): Buffer {
  if (c.nonce.length !== NONCE_LENGTH || c.mac.length !== MAC_LENGTH) throw new Error('bad challenge field length');
  return Buffer.concat([header(FrameType.challenge), c.nonce, c.mac]);
}

export function decodeChallenge(b: Buffer): Challenge {
  const bad = headerProblem(b, FrameType.challenge);
  if (bad) throw new Error(`CHALLENGE: ${bad}`);
  if (b.length !== CHALLENGE_LENGTH) throw new Error('CHALLENGE: wrong length');
  return {
    nonce: Buffer.from(b.subarray(HEADER_LENGTH, HEADER_LENGTH + NONCE_LENGTH)),
    mac: Buffer.from(b.subarray(HEADER_LENGTH + NONCE_LENGTH)),
  };
}

export function encodeProof(mac: Buffer): Buffer {
  if (mac.length !== MAC_LENGTH) throw new Error('bad proof length');
  return Buffer.concat([header(FrameType.proof), mac]);
}

export function decodeProof(b: Buffer): Buffer {
  const bad = headerProblem(b, FrameType.proof);
  if (bad) throw new Error(`PROOF: ${bad}`);
  if (b.length !== PROOF_LENGTH) throw new Error('PROOF: wrong length');
  return Buffer.from(b.subarray(HEADER_LENGTH));
}

/** The MAC one side sends: `role` is who proves (the listener in CHALLENGE, the dialer in PROOF). */
export function handshakeMac(
  secret: Buffer,
  role: 'listener' | 'dialer',
  helloFrame: Buffer,
  listenerNonce: Buffer,
  binding: Buffer,
): Buffer {
  checkSecret(secret);
  if (binding.length > MAX_BINDING_LENGTH) throw new Error('binding too long');
  return createHmac('sha256', secret)
    .update(role === 'listener' ? LISTENER_LABEL : DIALER_LABEL)
    .update(helloFrame)
    .update(listenerNonce)
    .update(Buffer.from([binding.length]))
    .update(binding)
    .digest();
}

function macEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

// ---- the two sides, over any byte pipe ----

/** The byte pipe a handshake runs over: a stream, a raw fd, or a test fake. */
export interface HandshakeIo {
  /** Exactly `n` bytes, or rejects (EOF, error, `timeoutMs` passed). Bytes past `n` stay for the protocol. */
  read(n: number, timeoutMs: number): Promise<Buffer>;
  write(b: Buffer): void | Promise<void>;
}

export interface DialerAuth {
  secret: SecretSource;
  direction: Direction;
  purpose: Purpose;
  /** Bound into both MACs, never sent (the share's token). */
  binding?: Buffer;
}

/**
 * Dialer side. Resolves once PROOF is written: the connection is ready for the protocol. Rejects with
 * PeerProofError when the peer answered something that is not a valid CHALLENGE for this HELLO (it does not know
 * the secret), or with HandshakeIncompleteError when it closed or stayed silent (not listening yet, refused).
 */
export async function dialerHandshake(io: HandshakeIo, auth: DialerAuth, timeoutMs: number): Promise<void> {
  const binding = auth.binding ?? Buffer.alloc(0);
  const secret = await getSecret(auth.secret);
  const hello = encodeHello({ direction: auth.direction, purpose: auth.purpose, nonce: randomBytes(NONCE_LENGTH) });
  await io.write(hello);
  let frame: Buffer;
  try {
    frame = await io.read(CHALLENGE_LENGTH, timeoutMs);
  } catch (err) {
    throw new HandshakeIncompleteError(`no CHALLENGE: ${(err as Error).message}`);
  }
  let challenge: Challenge;
  try {
    challenge = decodeChallenge(frame);
  } catch (err) {
    throw new PeerProofError(`the peer is not an lcow endpoint: ${(err as Error).message}`);
  }
  if (!macEqual(challenge.mac, handshakeMac(secret, 'listener', hello, challenge.nonce, binding)))
    throw new PeerProofError('the peer failed to prove it knows the secret (bad listener MAC)');
  await io.write(encodeProof(handshakeMac(secret, 'dialer', hello, challenge.nonce, binding)));
}

/** A listener's answer to a HELLO's purpose: what to bind into the MACs, and how to undo a claim if it fails. */
export interface Admission {
  binding?: Buffer;
  /** Called when the handshake fails after admission (e.g. to release a claimed pending share). */
  release?: () => void;
}

export interface ListenerAuth {
  secret: SecretSource;
  /** The direction this listener serves; a HELLO naming the other one is refused. */
  direction: Direction;
  /** Decides whether a purpose is served here: undefined refuses (closed, no answer). */
  admit: (p: Purpose) => Admission | undefined;
}

/** Why a listener closed a connection (for counters and debug logs; the peer is told nothing). */
export class HandshakeRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'HandshakeRefused';
  }
}

/**
 * Listener side: reads HELLO (bounded: 9 bytes, then at most 64 + 32), answers CHALLENGE only to a well-formed
 * HELLO it serves, checks PROOF. Resolves with the purpose once the dialer proved it knows the secret; rejects
 * with HandshakeRefused otherwise (the caller closes without a word). `timeoutMs` bounds the whole handshake.
 */
export async function listenerHandshake(
  io: HandshakeIo,
  auth: ListenerAuth,
  timeoutMs: number,
): Promise<{ purpose: Purpose; admission: Admission }> {
  const deadline = Date.now() + timeoutMs;
  const left = (): number => Math.max(1, deadline - Date.now());
  const refuse = (why: string): never => {
    throw new HandshakeRefused(why);
  };
  const read = async (n: number, what: string): Promise<Buffer> => {
    try {
      return await io.read(n, left());
    } catch (err) {
      return refuse(`${what}: ${(err as Error).message}`);
    }
  };
  const fixed = await read(HELLO_FIXED_LENGTH, 'HELLO');
  let idLength = 0;
  try {
    idLength = helloIdLength(fixed);
  } catch (err) {
    refuse((err as Error).message);
  }
  const helloFrame = Buffer.concat([fixed, await read(idLength + NONCE_LENGTH, 'HELLO')]);
  let hello: Hello | undefined;
  try {
    hello = decodeHello(helloFrame);
  } catch (err) {
    refuse((err as Error).message);
  }
  if (hello!.direction !== auth.direction) refuse(`HELLO for direction ${hello!.direction}`);
  const admission = auth.admit(hello!.purpose) ?? refuse(`purpose not served here: ${describePurpose(hello!.purpose)}`);
  try {
    const binding = admission.binding ?? Buffer.alloc(0);
    let secret: Buffer;
    try {
      secret = await getSecret(auth.secret);
    } catch (err) {
      return refuse(`no secret: ${(err as Error).message}`);
    }
    const nonce = randomBytes(NONCE_LENGTH);
    await io.write(encodeChallenge({ nonce, mac: handshakeMac(secret, 'listener', helloFrame, nonce, binding) }));
    const proofFrame = await read(PROOF_LENGTH, 'PROOF');
    let mac: Buffer | undefined;
    try {
      mac = decodeProof(proofFrame);
    } catch (err) {
      refuse((err as Error).message);
    }
    if (!macEqual(mac!, handshakeMac(secret, 'dialer', helloFrame, nonce, binding)))
      refuse('the dialer failed to prove it knows the secret (bad dialer MAC)');
    return { purpose: hello!.purpose, admission };
  } catch (err) {
    admission.release?.();
    throw err;
  }
}

export function describePurpose(p: Purpose): string {
  return p.kind === 'control' ? 'control' : `9P share ${p.shareId}`;
}
