// The server's request counters over a real connection: what the shim's p9-stats.json and make bench report.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Fixture } from './fixture.js';

describe('p9 server: request counters', function () {
  this.timeout(20_000);
  let fx: Fixture;
  beforeEach(async () => {
    fx = await Fixture.start();
  });
  afterEach(async () => {
    await fx.stop();
  });

  it('counts each answered request by type, errors included, with its server time', async () => {
    fs.writeFileSync(`${fx.dir}/f`, 'x');
    const { c, root } = await fx.client();
    const { fid } = await c.walk(root, ['f']);
    await c.getattr(fid);
    await c.getattr(fid);
    await assert.rejects(c.walk(root, ['missing']));
    await c.clunk(fid);
    const s = fx.server.stats.snapshot();
    assert.equal(s.Tattach?.count, 1);
    assert.equal(s.Twalk?.count, 2);
    assert.equal(s.Tgetattr?.count, 2);
    assert.equal(s.Tclunk?.count, 1);
    assert.equal(s.Tversion, undefined, 'Tversion is not a counted request');
    for (const v of Object.values(s)) assert.ok(v.micros >= 0);
  });
});
