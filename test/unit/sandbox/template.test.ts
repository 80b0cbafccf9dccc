// UVM template bookkeeping without a VM: the key follows the guest image, the size and the command line;
// a template whose metadata or files do not match is reported (and so rebuilt), never used; clones get the
// template's command line with private RAM and -incoming. The build and restore themselves run in
// test/e2e/uvm/template.test.ts.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { qemuConfig } from '../../../src/sandbox/qemu/config.js';
import { TEMPLATE_FORMAT, checkTemplate, cloneArgs, templateKey } from '../../../src/sandbox/qemu/template.js';

describe('sandbox/qemu: templates (keys, staleness, damage)', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lcow-tpl-unit-'));
    writeFileSync(join(dir, 'vmlinuz'), 'kernel');
    writeFileSync(join(dir, 'initrd.img'), 'initrd');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const spec = (runtime: Record<string, unknown> = {}) => ({
    cfg: qemuConfig({ guest_dir: dir, qemu_binary: process.execPath, ...runtime }, {}),
    accel: 'tcg' as const,
    cpus: 1,
  });

  it('the key changes with the guest image, memory size, cpus and accelerator; not otherwise', () => {
    const k = templateKey(spec()).key;
    assert.equal(templateKey(spec()).key, k);
    assert.notEqual(templateKey(spec({ memory_mb: 512 })).key, k);
    assert.notEqual(templateKey({ ...spec(), cpus: 2 }).key, k);
    assert.notEqual(templateKey({ ...spec(), accel: 'kvm' }).key, k);
    // A rebuilt image is a new file (new inode or mtime).
    const t = new Date(Date.now() + 5000);
    utimesSync(join(dir, 'initrd.img'), t, t);
    assert.notEqual(templateKey(spec()).key, k);
  });

  it('checkTemplate: missing, other key, damaged state, changed RAM file are all refused; intact is used', () => {
    const { key } = templateKey(spec());
    const tdir = join(dir, key);
    mkdirSync(tdir);
    assert.equal(checkTemplate(tdir, key), 'no meta.json');
    writeFileSync(join(tdir, 'mem'), Buffer.alloc(4096, 7));
    writeFileSync(join(tdir, 'state'), 'device state');
    const m = statSync(join(tdir, 'mem'));
    const meta = {
      format: TEMPLATE_FORMAT,
      key,
      family: 'f',
      inputs: {},
      memBytes: m.size,
      memMtimeMs: m.mtimeMs,
      stateSha256: createHash('sha256').update('device state').digest('hex'),
      builtAt: '',
      buildMs: 0,
    };
    writeFileSync(join(tdir, 'meta.json'), JSON.stringify(meta));
    const ok = checkTemplate(tdir, key);
    assert.equal(typeof ok, 'object');
    assert.equal(checkTemplate(tdir, 'another'), 'built for another key');
    writeFileSync(join(tdir, 'meta.json'), JSON.stringify({ ...meta, format: TEMPLATE_FORMAT + 1 }));
    assert.equal(checkTemplate(tdir, key), 'built for another key');
    writeFileSync(join(tdir, 'meta.json'), JSON.stringify(meta));
    writeFileSync(join(tdir, 'state'), 'device statE');
    assert.equal(checkTemplate(tdir, key), 'device state checksum mismatch');
    writeFileSync(join(tdir, 'state'), 'device state');
    const later = new Date(Date.now() + 10_000);
    utimesSync(join(tdir, 'mem'), later, later);
    assert.equal(checkTemplate(tdir, key), 'RAM file changed since it was built');
  });

  it('tcg_tb_size_mb bounds the TCG translation cache; it is part of the template key', () => {
    const vm = { name: 'lcow-x', qmpSocket: '/q', tokenFile: '/t', controlPort: 40001, p9Port: 40002 };
    const t = { key: 'k', dir: '/d', memFile: '/d/mem', stateFile: '/d/state', meta: {} as never };
    const args = cloneArgs(spec({ tcg_tb_size_mb: 32 }), t, vm);
    assert.equal(args[args.indexOf('-accel') + 1], 'tcg,tb-size=32');
    assert.notEqual(templateKey(spec({ tcg_tb_size_mb: 32 })).key, templateKey(spec()).key);
  });

  it('a clone: the same command line with RAM mapped private, vmgenid, -incoming defer', () => {
    const s = spec();
    const vm = { name: 'lcow-x', qmpSocket: '/q', tokenFile: '/t', controlPort: 40001, p9Port: 40002 };
    const t = { key: 'k', dir: '/d', memFile: '/d/mem', stateFile: '/d/state', meta: {} as never };
    const args = cloneArgs(s, t, vm);
    const obj = args[args.indexOf('-object') + 1]!;
    assert.match(obj, /^memory-backend-file,id=ram0,size=1024M,mem-path=\/d\/mem,share=off$/);
    assert.equal(args[args.indexOf('-machine') + 1], 'pc,memory-backend=ram0');
    assert.ok(args.join(' ').includes('-device vmgenid'));
    assert.deepEqual(args.slice(args.indexOf('-incoming'), args.indexOf('-incoming') + 2), ['-incoming', 'defer']);
    // The secret still only by file.
    assert.ok(args.includes('name=opt/lcow/token,file=/t'));
  });
});
