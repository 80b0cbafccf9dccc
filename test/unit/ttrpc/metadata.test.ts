import { strict as assert } from 'node:assert';
import { create } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import {
  Code,
  codeName,
  getNamespace,
  getTraceContext,
  Metadata,
  NAMESPACE_KEY,
  propagateTraceContext,
  setNamespace,
  TtrpcError,
} from '../../../src/ttrpc/index.js';

describe('ttrpc metadata', () => {
  it('lower-cases keys and keeps several values per key in order', () => {
    const md = new Metadata([
      { key: 'X-A', value: '1' },
      { key: 'x-a', value: '2' },
      { key: 'B', value: '3' },
    ]);
    assert.deepEqual(md.get('X-a'), ['1', '2']);
    assert.equal(md.getFirst('x-A'), '1');
    assert.deepEqual(md.toKeyValues(), [
      { key: 'x-a', value: '1' },
      { key: 'x-a', value: '2' },
      { key: 'b', value: '3' },
    ]);
    md.set('X-A', 'only');
    assert.deepEqual(md.get('x-a'), ['only']);
    assert.ok(md.delete('b'));
    assert.equal(md.size, 1);
    const copy = md.clone().append('x-a', 'more');
    assert.deepEqual(md.get('x-a'), ['only'], 'clone is independent');
    assert.deepEqual(copy.get('x-a'), ['only', 'more']);
  });

  it('reads and writes the containerd namespace header', () => {
    const md = new Metadata();
    assert.equal(getNamespace(md), undefined);
    setNamespace(md, 'k8s.io');
    assert.deepEqual(md.toKeyValues(), [{ key: NAMESPACE_KEY, value: 'k8s.io' }]);
    assert.equal(getNamespace(new Metadata({ 'Containerd-Namespace-Ttrpc': 'default' })), 'default');
  });

  it('passes W3C trace context through', () => {
    const incoming = new Metadata({
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: ['a=1', 'b=2'],
      other: 'x',
    });
    assert.deepEqual(getTraceContext(incoming), {
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: 'a=1,b=2',
    });
    const outgoing = propagateTraceContext(incoming, new Metadata({ [NAMESPACE_KEY]: 'ns' }));
    assert.deepEqual(outgoing.toJSON(), {
      [NAMESPACE_KEY]: ['ns'],
      traceparent: ['00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'],
      tracestate: ['a=1,b=2'],
    });
    assert.deepEqual(getTraceContext(new Metadata()), {});
  });
});

describe('ttrpc errors and codes', () => {
  it('numbers the codes as gRPC does', () => {
    assert.equal(Code.OK, 0);
    assert.equal(Code.NOT_FOUND, 5);
    assert.equal(Code.UNIMPLEMENTED, 12);
    assert.equal(Code.UNAUTHENTICATED, 16);
    assert.equal(codeName(8), 'RESOURCE_EXHAUSTED');
    assert.equal(codeName(99), 'CODE(99)');
  });

  it('converts to and from google.rpc.Status, details included', () => {
    const detail = create(AnySchema, { typeUrl: 'type.googleapis.com/x.Y', value: Uint8Array.of(1) });
    const err = new TtrpcError(Code.NOT_FOUND, 'container abc: not found', [detail]);
    const st = err.toStatus();
    assert.equal(st.code, 5);
    assert.equal(st.message, 'container abc: not found');
    const back = TtrpcError.fromStatus(st);
    assert.ok(back instanceof TtrpcError && back instanceof Error);
    assert.equal(back.code, Code.NOT_FOUND);
    assert.equal(back.message, 'container abc: not found');
    assert.equal(back.details[0]!.typeUrl, 'type.googleapis.com/x.Y');
    assert.equal(TtrpcError.fromStatus({ code: 1234, message: 'm' }).code, Code.UNKNOWN);
    assert.equal(String(back), 'TtrpcError: NOT_FOUND: container abc: not found');
  });

  it('maps foreign errors to UNKNOWN with their message', () => {
    const e = TtrpcError.from(new TypeError('boom'));
    assert.equal(e.code, Code.UNKNOWN);
    assert.equal(e.message, 'boom');
    assert.equal(TtrpcError.from('str').message, 'str');
    const same = new TtrpcError(Code.ABORTED, 'x');
    assert.equal(TtrpcError.from(same), same);
  });
});
