// Host syscalls for the pod NIC, through koffi: a tap device created INSIDE the pod's network namespace (the
// /dev/net/tun file binds to the netns of the thread that opens it, so the main thread enters the pod's netns for
// the open + TUNSETIFF and returns at once; nothing else runs on this thread meanwhile, and setns(CLONE_NEWNET)
// moves only the calling thread), and SCM_RIGHTS to hand its fd to QEMU over the QMP socket (QMP `getfd`).
// The tap is not persistent: it disappears when the last fd (QEMU's) closes, so a dead VM leaves no tap.
import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';

const CLONE_NEWNET = 0x40000000;
const TUNSETIFF = 0x400454ca;
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFF_VNET_HDR = 0x4000;
const IFNAMSIZ = 16;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const O_RDWR = 2;
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

const libc = koffi.load('libc.so.6');
koffi.struct('lcow_tap_iovec', { base: 'void *', len: 'size_t' });
koffi.struct('lcow_msghdr', {
  name: 'void *',
  namelen: 'uint32',
  iov: 'lcow_tap_iovec *',
  iovlen: 'size_t',
  control: 'void *',
  controllen: 'size_t',
  flags: 'int',
});
const raw = {
  setns: libc.func('int setns(int, int)'),
  open: libc.func('int open(const char *, int, int)'),
  ioctl: libc.func('int ioctl(int, unsigned long, void *)'),
  sendmsg: libc.func('long sendmsg(int, const lcow_msghdr *, int)'),
};

function errnoName(): string {
  const n = koffi.errno();
  for (const [name, v] of Object.entries(koffi.os.errno as Record<string, number>)) if (v === n) return name;
  return `errno ${n}`;
}

/**
 * Opens a new (non-persistent) tap `name` inside the network namespace at `netnsPath`; returns its fd (the
 * caller hands it to QEMU, then closes its own copy). IFF_VNET_HDR: QEMU's virtio-net uses the vnet header.
 */
export function openTapInNetns(netnsPath: string, name: string): number {
  if (Buffer.byteLength(name) >= IFNAMSIZ) throw new Error(`tap name ${name} is too long`);
  const target = openSync(netnsPath, 'r');
  let home: number | undefined;
  try {
    home = openSync('/proc/thread-self/ns/net', 'r');
    if (raw.setns(target, CLONE_NEWNET) !== 0) throw new Error(`setns(${netnsPath}): ${errnoName()}`);
    let fd = -1;
    try {
      fd = raw.open('/dev/net/tun', O_RDWR | O_CLOEXEC | O_NONBLOCK, 0);
      if (fd < 0) throw new Error(`open /dev/net/tun: ${errnoName()}`);
      const ifr = Buffer.alloc(40);
      ifr.write(name, 0, 'utf8');
      ifr.writeUInt16LE(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, IFNAMSIZ);
      if (raw.ioctl(fd, TUNSETIFF, ifr) !== 0) {
        const why = errnoName();
        closeSync(fd);
        fd = -1;
        throw new Error(`TUNSETIFF ${name}: ${why}`);
      }
      return fd;
    } finally {
      // Back home whatever happened: a main thread left in the pod's netns would be a disaster.
      if (raw.setns(home, CLONE_NEWNET) !== 0) {
        process.stderr.write(`FATAL: cannot return to the shim's network namespace: ${errnoName()}\n`);
        process.abort();
      }
    }
  } finally {
    closeSync(target);
    if (home !== undefined) closeSync(home);
  }
}

/** sendmsg(2) of `data` with `fd` attached (SCM_RIGHTS) on the connected unix socket `sockFd`. */
export function sendWithFd(sockFd: number, data: Buffer, fd: number): number {
  const cmsg = Buffer.alloc(24); // CMSG_SPACE(sizeof(int)) on 64-bit Linux
  cmsg.writeBigUInt64LE(20n, 0); // cmsg_len = CMSG_LEN(sizeof(int))
  cmsg.writeInt32LE(SOL_SOCKET, 8);
  cmsg.writeInt32LE(SCM_RIGHTS, 12);
  cmsg.writeInt32LE(fd, 16);
  const n = Number(
    raw.sendmsg(
      sockFd,
      {
        name: null,
        namelen: 0,
        iov: [{ base: data, len: data.length }],
        iovlen: 1,
        control: cmsg,
        controllen: cmsg.length,
        flags: 0,
      },
      MSG_NOSIGNAL,
    ),
  );
  if (n < 0) throw new Error(`sendmsg: ${errnoName()}`);
  return n;
}
