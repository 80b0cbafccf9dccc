// Linux errno values on the wire whatever the host: host errors are mapped by name (Node's err.code), in one
// table that knows every name libuv reports, never by number (Node on Windows gives libuv's Windows numbers).

import assert from 'node:assert/strict';
import { Errno, P9Error, errnoFromCode, hostErrorNames, toLinuxErrno } from '../../../src/p9/errno.js';

// Every error name libuv defines (docs/src/errors.rst of libuv 1.x, the UV_E* constants): what Node can put in
// err.code on any OS.
const LIBUV_NAMES = (
  'E2BIG EACCES EADDRINUSE EADDRNOTAVAIL EAFNOSUPPORT EAGAIN EAI_ADDRFAMILY EAI_AGAIN EAI_BADFLAGS EAI_BADHINTS ' +
  'EAI_CANCELED EAI_FAIL EAI_FAMILY EAI_MEMORY EAI_NODATA EAI_NONAME EAI_OVERFLOW EAI_PROTOCOL EAI_SERVICE ' +
  'EAI_SOCKTYPE EALREADY EBADF EBUSY ECANCELED ECHARSET ECONNABORTED ECONNREFUSED ECONNRESET EDESTADDRREQ EEXIST ' +
  'EFAULT EFBIG EHOSTUNREACH EINTR EINVAL EIO EISCONN EISDIR ELOOP EMFILE EMSGSIZE ENAMETOOLONG ENETDOWN ' +
  'ENETUNREACH ENFILE ENOBUFS ENODEV ENOENT ENOMEM ENONET ENOPROTOOPT ENOSPC ENOSYS ENOTCONN ENOTDIR ENOTEMPTY ' +
  'ENOTSOCK ENOTSUP EOVERFLOW EPERM EPIPE EPROTO EPROTONOSUPPORT EPROTOTYPE ERANGE EROFS ESHUTDOWN ESPIPE ESRCH ' +
  'ETIMEDOUT ETXTBSY EXDEV UNKNOWN EOF ENXIO EMLINK EHOSTDOWN EREMOTEIO ENOTTY EFTYPE EILSEQ ESOCKTNOSUPPORT ' +
  'ENODATA EUNATCH'
).split(' ');

/** An error as Node on Windows builds it for a failed fs call: libuv name, libuv's Windows number. */
function windowsNodeError(code: string, errno: number, syscall: string): NodeJS.ErrnoException {
  const err = new Error(`${code}: ${syscall}`) as NodeJS.ErrnoException;
  err.code = code;
  err.errno = errno;
  err.syscall = syscall;
  return err;
}

describe('p9 errno mapping (by name, one table)', () => {
  it('every libuv error name maps to a Linux errno', () => {
    const missing = LIBUV_NAMES.filter((n) => errnoFromCode(n) === undefined);
    assert.deepEqual(missing, []);
    for (const n of LIBUV_NAMES) assert.ok(Number.isInteger(hostErrorNames[n]) && hostErrorNames[n]! > 0, n);
  });

  it('Linux names keep their Linux numbers (the x86_64/arm64 generic values)', () => {
    const expected: Record<string, number> = {
      EPERM: 1,
      ENOENT: 2,
      EIO: 5,
      EBADF: 9,
      EACCES: 13,
      EBUSY: 16,
      EEXIST: 17,
      EXDEV: 18,
      ENOTDIR: 20,
      EISDIR: 21,
      EINVAL: 22,
      ENOSPC: 28,
      EROFS: 30,
      EMLINK: 31,
      ENAMETOOLONG: 36,
      ENOTEMPTY: 39,
      ELOOP: 40,
      ENODATA: 61,
      EILSEQ: 84,
      EOPNOTSUPP: 95,
      ESTALE: 116,
      ESHUTDOWN: 108,
      EHOSTDOWN: 112,
      ENONET: 64,
    };
    for (const [name, num] of Object.entries(expected)) assert.equal(errnoFromCode(name), num, name);
  });

  it('aliases and libuv-only names: ENOTSUP, EWOULDBLOCK, ENOATTR, ECHARSET, EFTYPE, EOF, UNKNOWN', () => {
    assert.equal(errnoFromCode('ENOTSUP'), Errno.EOPNOTSUPP);
    assert.equal(errnoFromCode('EWOULDBLOCK'), Errno.EAGAIN);
    assert.equal(errnoFromCode('ENOATTR'), Errno.ENODATA);
    assert.equal(errnoFromCode('ECHARSET'), Errno.EILSEQ);
    assert.equal(errnoFromCode('EFTYPE'), Errno.EINVAL);
    assert.equal(errnoFromCode('EOF'), Errno.EIO);
    assert.equal(errnoFromCode('UNKNOWN'), Errno.EIO);
  });

  it('errors shaped as Node on Windows reports them become the Linux number, whatever err.errno says', () => {
    // libuv's Windows numbers (include/uv/errno.h): never consulted.
    const cases: Array<[string, number, number]> = [
      ['ENOENT', -4058, 2],
      ['EEXIST', -4075, 17],
      ['EACCES', -4092, 13],
      ['EPERM', -4048, 1],
      ['EBUSY', -4082, 16],
      ['EISDIR', -4068, 21],
      ['EINVAL', -4071, 22],
      ['ENOTEMPTY', -4051, 39],
      ['ECHARSET', -4080, 84],
      ['EOF', -4095, 5],
      ['UNKNOWN', -4094, 5],
    ];
    for (const [code, winErrno, linux] of cases) {
      assert.equal(toLinuxErrno(windowsNodeError(code, winErrno, 'open')), linux, code);
    }
  });

  it('unknown names, prototype keys and non-errors are EIO; P9Errors carry their own number', () => {
    assert.equal(errnoFromCode('toString'), undefined);
    assert.equal(errnoFromCode('__proto__'), undefined);
    assert.equal(toLinuxErrno(Object.assign(new Error('x'), { code: 'ERR_INVALID_ARG_TYPE' })), Errno.EIO);
    assert.equal(toLinuxErrno(Object.assign(new Error('x'), { code: 'constructor' })), Errno.EIO);
    assert.equal(toLinuxErrno('boom'), Errno.EIO);
    assert.equal(toLinuxErrno(new P9Error(Errno.ESTALE)), Errno.ESTALE);
  });
});
