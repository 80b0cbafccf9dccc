import assert from 'node:assert/strict';
import { Logger } from '../../../src/util/log.js';

describe('util/log', () => {
  it('writes one JSON line with context fields and filters by level', () => {
    const lines: string[] = [];
    const log = new Logger({ write: (l: string) => lines.push(l) }, 'info').with({ pod: 'p1' });
    log.debug('hidden');
    log.info('shown', { container: 'c1', err: new Error('boom') });
    assert.equal(lines.length, 1);
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.msg, 'shown');
    assert.equal(entry.pod, 'p1');
    assert.equal(entry.container, 'c1');
    assert.equal(entry.err, 'boom');
    assert.ok(lines[0]!.endsWith('\n'));
  });

  it('survives a sink that throws', () => {
    const log = new Logger(
      {
        write: () => {
          throw new Error('EPIPE');
        },
      },
      'info',
    );
    assert.doesNotThrow(() => log.error('x'));
  });
});
