// The Windows launcher (hack/windows/launcher.c) re-quotes containerd's arguments for node.exe. Its quoting
// function is plain C: built here for Linux and called through koffi; what it produces is split again by the
// documented rules of CommandLineToArgvW / the Microsoft C runtime (Microsoft Learn, "Parsing C++
// command-line arguments"), implemented below and checked against that page's own examples first.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { buildSharedObject, fakesUnavailable } from '../../helpers/win32-fakes.js';

const require = createRequire(import.meta.url);

/** Splits a command line's arguments (after the program name) by the documented rules. */
function splitArgs(line: string): string[] {
  const out: string[] = [];
  let i = 0;
  for (;;) {
    while (line[i] === ' ' || line[i] === '\t') i++;
    if (i >= line.length) return out;
    let arg = '';
    let quoted = false;
    for (; i < line.length; i++) {
      const c = line[i]!;
      if (c === '\\') {
        let n = 0;
        while (line[i] === '\\') {
          n++;
          i++;
        }
        if (line[i] === '"') {
          arg += '\\'.repeat(Math.floor(n / 2));
          if (n % 2 === 1) arg += '"';
          else quoted = !quoted;
        } else {
          arg += '\\'.repeat(n);
          i--;
        }
      } else if (c === '"') {
        // Inside quotes, "" is one literal quote (and quoting goes on).
        if (quoted && line[i + 1] === '"') {
          arg += '"';
          i++;
        } else quoted = !quoted;
      } else if ((c === ' ' || c === '\t') && !quoted) break;
      else arg += c;
    }
    out.push(arg);
  }
}

describe('Windows launcher: argument quoting', () => {
  it('the reference splitter gives the documented results', () => {
    // The table of "Parsing C++ command-line arguments" (argv[1..]).
    assert.deepEqual(splitArgs('"a b c" d e'), ['a b c', 'd', 'e']);
    assert.deepEqual(splitArgs('"ab\\"c" "\\\\" d'), ['ab"c', '\\', 'd']);
    assert.deepEqual(splitArgs('a\\\\\\b d"e f"g h'), ['a\\\\\\b', 'de fg', 'h']);
    assert.deepEqual(splitArgs('a\\\\\\"b c d'), ['a\\"b', 'c', 'd']);
    assert.deepEqual(splitArgs('a\\\\\\\\"b c" d e'), ['a\\\\b c', 'd', 'e']);
    assert.deepEqual(splitArgs('a"b"" c d'), ['ab" c d']);
  });

  describe('lcow_quote_arg (launcher.c built for Linux)', () => {
    let quote: (s: string) => string;
    before(function () {
      requirePrerequisite(this, fakesUnavailable());
      const koffi = require('koffi');
      const lib = koffi.load(buildSharedObject('hack/windows/launcher.c'));
      // wchar_t is 4 bytes on Linux: the same function, UTF-32 here, UTF-16 on Windows.
      const f = lib.func('size_t lcow_quote_arg(str32 arg, _Inout_ uint8_t *out, size_t len, size_t cap)');
      quote = (s: string): string => {
        const cap = 4 * s.length + 8;
        const buf = Buffer.alloc(cap * 4);
        const n = Number(f(s, buf, 0, cap));
        assert.notEqual(n, Number.MAX_SAFE_INTEGER);
        return koffi.decode.string32(buf, n) as string;
      };
    });

    it('leaves plain words alone and quotes what needs it', () => {
      assert.equal(quote('-namespace'), '-namespace');
      assert.equal(quote('C:\\Program Files\\x'), '"C:\\Program Files\\x"');
      assert.equal(quote(''), '""');
      assert.equal(quote('a"b'), '"a\\"b"');
      assert.equal(quote('dir with\\'), '"dir with\\\\"');
      assert.equal(quote('\\\\.\\pipe\\x'), '\\\\.\\pipe\\x');
    });

    it('round-trips any argument list through the documented splitter', () => {
      const chars = fc.constantFrom('a', 'Z', ' ', '\t', '"', '\\', '\\', '-', '=', 'é', '\u4e2d');
      fc.assert(
        fc.property(fc.array(fc.string({ unit: chars, maxLength: 12 }), { maxLength: 6 }), (args) => {
          const line = args.map(quote).join(' ');
          assert.deepEqual(splitArgs(line), args);
        }),
        { numRuns: 500 },
      );
    });
  });
});
