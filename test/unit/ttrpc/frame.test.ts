import { strict as assert } from 'node:assert';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { RequestSchema, ResponseSchema } from '../../../src/gen/ttrpc/ttrpc_pb.js';
import { StatusSchema } from '../../../src/gen/google/rpc/status_pb.js';
import { decodeRequest, decodeResponse, encodeRequestFrame, encodeResponseFrame } from '../../../src/ttrpc/envelope.js';
import { encodeFrame, FrameDecoder, FrameType, type FrameHeader } from '../../../src/ttrpc/frame.js';

function hex(s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex');
}

function joined(f: { head: Buffer; tail: Uint8Array | undefined }): Buffer {
  return f.tail ? Buffer.concat([f.head, f.tail]) : f.head;
}

interface Seen {
  frames: Array<{ header: FrameHeader; data: Buffer }>;
  oversized: FrameHeader[];
  garbage: string[];
}

function decoder(max?: number): { d: FrameDecoder; seen: Seen } {
  const seen: Seen = { frames: [], oversized: [], garbage: [] };
  const d = new FrameDecoder(
    {
      // Copy: the contract allows `data` to be a view of the pushed chunk.
      onFrame: (header, data) => seen.frames.push({ header: { ...header }, data: Buffer.from(data) }),
      onOversized: (header) => seen.oversized.push({ ...header }),
      onGarbage: (reason) => seen.garbage.push(reason),
    },
    max,
  );
  return { d, seen };
}

describe('ttrpc frame codec', () => {
  // Request{service:"s", method:"m"} is 0a 01 73 12 01 6d (field 1 len 1 "s", field 2 len 1 "m").
  const unaryRequest = hex('00000006 00000001 01 00  0a0173 12016d');

  it('encodes a unary Request for s/m to the exact bytes', () => {
    const f = encodeRequestFrame(1, 0, { service: 's', method: 'm', payload: new Uint8Array(0) });
    assert.equal(f.tail, undefined);
    assert.deepEqual(f.head, unaryRequest);
  });

  it('encodes timeout, metadata and payload (payload last) to the exact bytes', () => {
    const f = encodeRequestFrame(3, 0x2, {
      service: 's',
      method: 'm',
      payload: Uint8Array.of(0x08, 0x2a),
      timeoutNano: 1_000_000_000,
      metadata: [{ key: 'k', value: 'v' }],
    });
    const envelope =
      '0a0173 12016d' + // service, method
      '20 8094ebdc03' + // timeout_nano = 1e9 as varint
      '2a06 0a016b 120176' + // metadata KeyValue{k, v}
      '1a02 082a'; // payload
    assert.deepEqual(joined(f), hex('00000018 00000003 01 02' + envelope));
    // And the generated (reflection) codec reads it back the same.
    const req = fromBinary(RequestSchema, hex(envelope));
    assert.equal(req.service, 's');
    assert.equal(req.method, 'm');
    assert.equal(req.timeoutNano, 1_000_000_000n);
    assert.deepEqual([...req.payload], [0x08, 0x2a]);
    assert.deepEqual(
      req.metadata.map((kv) => [kv.key, kv.value]),
      [['k', 'v']],
    );
  });

  it('encodes an error Response with its status', () => {
    const status = toBinary(StatusSchema, create(StatusSchema, { code: 5, message: 'x' }));
    assert.deepEqual(Buffer.from(status), hex('0805 120178'));
    const f = encodeResponseFrame(7, status, new Uint8Array(0));
    assert.deepEqual(f.head, hex('00000007 00000007 02 00  0a05 0805120178'));
  });

  it('writes a large payload as a separate buffer, byte-identical to the generated codec', () => {
    const payload = new Uint8Array(100_000).map((_, i) => i & 0xff);
    const f = encodeRequestFrame(5, 0, { service: 'svc', method: 'Method', payload });
    assert.equal(f.tail, payload, 'payload must not be copied');
    const all = joined(f);
    assert.equal(all.readUInt32BE(0), all.length - 10);
    const req = fromBinary(RequestSchema, all.subarray(10));
    assert.equal(req.service, 'svc');
    assert.deepEqual(Buffer.from(req.payload), Buffer.from(payload));
    const mine = decodeRequest(all.subarray(10));
    assert.deepEqual(Buffer.from(mine.payload), Buffer.from(payload));
  });

  it('decodes what the generated codec encodes (and vice versa) for many requests', () => {
    for (let i = 0; i < 200; i++) {
      const msg = create(RequestSchema, {
        service: 'containerd.task.v2.Task'.slice(0, i % 24),
        method: 'Ünïcode-' + 'x'.repeat(i % 7),
        payload: new Uint8Array(i * 3).fill(i & 0xff),
        timeoutNano: BigInt(i * 1_234_567),
        metadata: Array.from({ length: i % 4 }, (_, j) => ({ key: `k${j}`, value: 'v'.repeat(j) })),
      });
      const decoded = decodeRequest(Buffer.from(toBinary(RequestSchema, msg)));
      assert.equal(decoded.service, msg.service);
      assert.equal(decoded.method, msg.method);
      assert.deepEqual(Buffer.from(decoded.payload), Buffer.from(msg.payload));
      assert.equal(decoded.timeoutNano, Number(msg.timeoutNano));
      assert.deepEqual(
        decoded.metadata,
        msg.metadata.map((kv) => ({ key: kv.key, value: kv.value })),
      );
      const re = joined(
        encodeRequestFrame(1, 0, { ...decoded, timeoutNano: decoded.timeoutNano, metadata: decoded.metadata }),
      );
      const back = fromBinary(RequestSchema, re.subarray(10));
      assert.equal(back.service, msg.service);
      assert.equal(back.timeoutNano, msg.timeoutNano);
      assert.deepEqual(Buffer.from(back.payload), Buffer.from(msg.payload));
    }
    const resp = create(ResponseSchema, { status: { code: 3, message: 'bad' }, payload: Uint8Array.of(1, 2) });
    const d = decodeResponse(Buffer.from(toBinary(ResponseSchema, resp)));
    assert.deepEqual([...d.payload], [1, 2]);
    assert.equal(fromBinary(StatusSchema, d.status!).message, 'bad');
  });

  it('reads a negative timeout_nano (already expired) as negative', () => {
    const msg = create(RequestSchema, { service: 's', method: 'm', timeoutNano: -5n });
    assert.equal(decodeRequest(Buffer.from(toBinary(RequestSchema, msg))).timeoutNano, -5);
  });

  it('rejects malformed envelopes with an EnvelopeError and never reads out of bounds', () => {
    const bad = [
      '0a05 73', // string longer than the message
      '0a', // truncated length
      '20 ffffffffffffffffffff01', // varint longer than 10 bytes
      '00', // field number 0
      '0b', // group start (wire type 3)
      '1d 0000', // fixed32 truncated
    ];
    for (const h of bad) {
      assert.throws(() => decodeRequest(hex(h)), { name: 'EnvelopeError' }, h);
    }
    // Random bytes: either a value or an EnvelopeError, nothing else.
    for (let i = 0; i < 2000; i++) {
      const buf = Buffer.from(Array.from({ length: i % 40 }, () => Math.floor(Math.random() * 256)));
      try {
        decodeRequest(buf);
        decodeResponse(buf);
      } catch (err) {
        assert.equal((err as Error).name, 'EnvelopeError');
      }
    }
  });

  it('decodes a stream split at every byte boundary', () => {
    const frames = [
      unaryRequest,
      encodeFrame(3, FrameType.DATA, 0x4 | 0x1, new Uint8Array(0)),
      encodeFrame(5, FrameType.DATA, 0, new Uint8Array(300).fill(7)),
      encodeFrame(2, FrameType.RESPONSE, 0, Uint8Array.of(1)),
    ];
    const stream = Buffer.concat(frames);
    for (let a = 0; a <= stream.length; a++) {
      for (const b of [a, Math.min(stream.length, a + 1), Math.min(stream.length, a + 11), stream.length]) {
        const { d, seen } = decoder();
        d.push(stream.subarray(0, a));
        d.push(stream.subarray(a, b));
        d.push(stream.subarray(b));
        assert.equal(seen.frames.length, 4, `split at ${a}/${b}`);
        assert.deepEqual(seen.frames[0]!.data, unaryRequest.subarray(10));
        assert.deepEqual(seen.frames[1]!.header, { length: 0, streamId: 3, type: 3, flags: 5 });
        assert.equal(seen.frames[2]!.data.length, 300);
        assert.ok(seen.frames[2]!.data.every((x) => x === 7));
        assert.deepEqual(seen.frames[3]!.header, { length: 1, streamId: 2, type: 2, flags: 0 });
        assert.equal(d.bufferedBytes, 0);
      }
    }
    // One byte at a time.
    const { d, seen } = decoder();
    for (const byte of stream) d.push(Buffer.of(byte));
    assert.equal(seen.frames.length, 4);
  });

  it('skips an oversized body without buffering it, then decodes the next frame', () => {
    const { d, seen } = decoder(1024);
    const big = Buffer.alloc(10 + 5000);
    big.writeUInt32BE(5000, 0);
    big.writeUInt32BE(9, 4);
    big[8] = FrameType.REQUEST;
    d.push(big.subarray(0, 10));
    assert.equal(seen.oversized.length, 1);
    assert.deepEqual(seen.oversized[0], { length: 5000, streamId: 9, type: 1, flags: 0 });
    for (let off = 10; off < big.length; off += 700) {
      d.push(big.subarray(off, Math.min(big.length, off + 700)));
      assert.ok(d.bufferedBytes <= 10, `buffered ${d.bufferedBytes} bytes of a skipped frame`);
    }
    d.push(unaryRequest);
    assert.equal(seen.frames.length, 1);
    assert.equal(seen.frames[0]!.header.streamId, 1);
    assert.equal(seen.garbage.length, 0);
  });

  it('declares garbage (not ttrpc) once and ignores everything after it', () => {
    for (const junk of ['GET / HTTP/1.1\r\n\r\n', '\x00\x00\x00\x01\x00\x00\x00\x01\x09\x00x']) {
      const { d, seen } = decoder();
      d.push(Buffer.from(junk, 'latin1'));
      d.push(unaryRequest);
      assert.equal(seen.garbage.length, 1, junk);
      assert.equal(seen.frames.length, 0);
      assert.ok(d.dead);
    }
  });

  it('pauses in the middle of a chunk and resumes where it stopped', () => {
    const stream = Buffer.concat([unaryRequest, unaryRequest, unaryRequest]);
    const seen: number[] = [];
    const d: FrameDecoder = new FrameDecoder({
      onFrame: (h) => {
        seen.push(h.streamId);
        if (seen.length === 1) d.pause();
      },
      onOversized: () => assert.fail('not oversized'),
      onGarbage: () => assert.fail('not garbage'),
    });
    d.push(stream);
    assert.equal(seen.length, 1, 'no frame delivered while paused');
    d.resume();
    assert.equal(seen.length, 3);
  });
});
