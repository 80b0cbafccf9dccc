/*
 * FAKE ws2_32.dll for Linux unit tests: the Winsock exports src/transport/winsock.ts binds, with their documented
 * signatures and semantics (Microsoft Learn: winsock2.h, hvsocket.h), implemented on Linux sockets so the real
 * binding, poller and stream code run unchanged.
 *
 *  - WSAStartup must come first (everything else fails with WSANOTINITIALISED).
 *  - SOCKET is UINT_PTR; INVALID_SOCKET is ~0; failures return SOCKET_ERROR and set a per-thread WSAGetLastError.
 *  - AF_HYPERV (34) / SOCK_STREAM / HV_PROTOCOL_RAW sockets become AF_UNIX stream sockets; SOCKADDR_HV
 *    (Family, Reserved, GUID VmId, GUID ServiceId: 36 bytes) maps to the path
 *    $LCOW_FAKE_HVSOCK_DIR/<vmid>_<serviceid>. A dialer therefore reaches the listener bound to the same pair
 *    (on Windows the guest dials the parent and Hyper-V routes it to the host listener bound to its VM id).
 *  - AF_INET SOCK_DGRAM (the poller's wake socket) passes through to Linux UDP (sockaddr_in has the same layout).
 *  - Non-blocking connect reports WSAEWOULDBLOCK (Windows never says EINPROGRESS); ioctlsocket(FIONBIO) sets
 *    the mode; `long` is 32-bit as on Windows (LLP64).
 *  - WSAPoll takes WSAPOLLFD {SOCKET fd; SHORT events; SHORT revents} (16 bytes) and, as Windows does, rejects
 *    events other than POLLRDNORM, POLLRDBAND and POLLWRNORM with WSAEINVAL.
 * libc is reached through syscall(2) where its names collide with the Winsock exports defined here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Linux socket ABI values, spelled out: <sys/socket.h> declares libc functions with the names exported here. */
#define AF_UNIX 1
#define AF_INET 2
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define SOCK_CLOEXEC 02000000
#define SOL_SOCKET 1
#define SO_ERROR 4
#define MSG_NOSIGNAL 0x4000
struct sockaddr_un {
  unsigned short sun_family;
  char sun_path[108];
};
typedef unsigned int socklen_t;

typedef uintptr_t SOCKET;
#define INVALID_SOCKET ((SOCKET)~(uintptr_t)0)
#define SOCKET_ERROR (-1)
#define WIN_AF_INET 2
#define WIN_AF_HYPERV 34
#define WIN_SOCK_STREAM 1
#define WIN_SOCK_DGRAM 2
#define HV_PROTOCOL_RAW 1
#define WIN_SOL_SOCKET 0xffff
#define WIN_SO_ERROR 0x1007
#define WIN_FIONBIO ((int32_t)0x8004667e)
#define WIN_POLLRDNORM 0x0100
#define WIN_POLLRDBAND 0x0200
#define WIN_POLLWRNORM 0x0010
#define WIN_POLLERR 0x0001
#define WIN_POLLHUP 0x0002
#define WIN_POLLNVAL 0x0004
/* Offset between a Linux fd and the SOCKET value handed out: a caller mixing them up fails loudly. */
#define SOCKET_BASE 0x10000

enum {
  WSAEINTR = 10004, WSAEFAULT = 10014, WSAEINVAL = 10022, WSAEMFILE = 10024, WSAEWOULDBLOCK = 10035,
  WSAENOTSOCK = 10038, WSAEPROTONOSUPPORT = 10043, WSAEOPNOTSUPP = 10045, WSAEAFNOSUPPORT = 10047,
  WSAEADDRINUSE = 10048, WSAEADDRNOTAVAIL = 10049, WSAECONNABORTED = 10053, WSAECONNRESET = 10054,
  WSAENOBUFS = 10055, WSAEISCONN = 10056, WSAENOTCONN = 10057, WSAESHUTDOWN = 10058, WSAETIMEDOUT = 10060,
  WSAECONNREFUSED = 10061, WSAVERNOTSUPPORTED = 10092, WSANOTINITIALISED = 10093
};

typedef struct {
  SOCKET fd;
  short events;
  short revents;
} WSAPOLLFD;

static __thread int last_error;
static int started;
/* Family of each socket (indexed by Linux fd); 0 = not ours. */
#define MAX_FD 65536
static unsigned char families[MAX_FD];
static int open_sockets;

static int wsa_from_errno(int e) {
  switch (e) {
  case EAGAIN: return WSAEWOULDBLOCK;
  case EINPROGRESS: return WSAEWOULDBLOCK;
  case EINTR: return WSAEINTR;
  case EFAULT: return WSAEFAULT;
  case EINVAL: return WSAEINVAL;
  case EMFILE: case ENFILE: return WSAEMFILE;
  case EBADF: case ENOTSOCK: return WSAENOTSOCK;
  case EPROTONOSUPPORT: return WSAEPROTONOSUPPORT;
  case EOPNOTSUPP: return WSAEOPNOTSUPP;
  case EAFNOSUPPORT: return WSAEAFNOSUPPORT;
  case EADDRINUSE: return WSAEADDRINUSE;
  case EADDRNOTAVAIL: return WSAEADDRNOTAVAIL;
  case ECONNABORTED: return WSAECONNABORTED;
  case ECONNRESET: return WSAECONNRESET;
  case EPIPE: return WSAESHUTDOWN;
  case ENOBUFS: case ENOMEM: return WSAENOBUFS;
  case EISCONN: return WSAEISCONN;
  case ENOTCONN: return WSAENOTCONN;
  case ETIMEDOUT: return WSAETIMEDOUT;
  /* No listener on the pair: the unix path is missing or nobody accepts on it. */
  case ECONNREFUSED: case ENOENT: return WSAECONNREFUSED;
  default: return WSAEINVAL;
  }
}

static int fail(int wsa) {
  last_error = wsa;
  return SOCKET_ERROR;
}

static int fail_errno(void) { return fail(wsa_from_errno(errno)); }

/* The Linux fd behind a SOCKET, or -1 (WSAENOTSOCK set). */
static int fd_of(SOCKET s) {
  if (!started) return fail(WSANOTINITIALISED), -1;
  if (s < SOCKET_BASE || s >= SOCKET_BASE + MAX_FD || !families[s - SOCKET_BASE]) return fail(WSAENOTSOCK), -1;
  return (int)(s - SOCKET_BASE);
}

int WSAStartup(uint16_t version, void *data) {
  if ((version & 0xff) < 2) return WSAVERNOTSUPPORTED;
  if (data) memset(data, 0, 408);
  started = 1;
  return 0;
}

int WSAGetLastError(void) { return last_error; }

/* For the tests: sockets created and not yet closed. */
int fake_ws_open_sockets(void) { return open_sockets; }

SOCKET socket(int af, int type, int protocol) {
  if (!started) return fail(WSANOTINITIALISED), INVALID_SOCKET;
  int fd;
  if (af == WIN_AF_HYPERV) {
    if (type != WIN_SOCK_STREAM) return fail(WSAEINVAL), INVALID_SOCKET;
    if (protocol != HV_PROTOCOL_RAW) return fail(WSAEPROTONOSUPPORT), INVALID_SOCKET;
    fd = (int)syscall(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  } else if (af == WIN_AF_INET && type == WIN_SOCK_DGRAM) {
    fd = (int)syscall(SYS_socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  } else {
    return fail(WSAEAFNOSUPPORT), INVALID_SOCKET;
  }
  if (fd < 0) return fail_errno(), INVALID_SOCKET;
  if (fd >= MAX_FD) {
    close(fd);
    return fail(WSAEMFILE), INVALID_SOCKET;
  }
  families[fd] = (unsigned char)af;
  open_sockets++;
  return SOCKET_BASE + (SOCKET)fd;
}

static void guid_str(const unsigned char *g, char *out) {
  uint32_t d1 = (uint32_t)g[0] | (uint32_t)g[1] << 8 | (uint32_t)g[2] << 16 | (uint32_t)g[3] << 24;
  uint16_t d2 = (uint16_t)(g[4] | g[5] << 8), d3 = (uint16_t)(g[6] | g[7] << 8);
  sprintf(out, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", d1, d2, d3, g[8], g[9], g[10], g[11], g[12],
          g[13], g[14], g[15]);
}

/* SOCKADDR_HV -> sockaddr_un, validating the family and length as Winsock does. */
static int hv_path(const void *name, int namelen, struct sockaddr_un *un) {
  const unsigned char *b = name;
  if (!name || namelen < 36) return fail(WSAEFAULT);
  if ((b[0] | b[1] << 8) != WIN_AF_HYPERV) return fail(WSAEAFNOSUPPORT);
  const char *dir = getenv("LCOW_FAKE_HVSOCK_DIR");
  if (!dir) return fail(WSAEINVAL);
  char vm[37], svc[37];
  guid_str(b + 4, vm);
  guid_str(b + 20, svc);
  memset(un, 0, sizeof(*un));
  un->sun_family = AF_UNIX;
  if (snprintf(un->sun_path, sizeof(un->sun_path), "%s/%s_%s", dir, vm, svc) >= (int)sizeof(un->sun_path))
    return fail(WSAEINVAL);
  return 0;
}

int bind(SOCKET s, const void *name, int namelen) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (families[fd] == WIN_AF_HYPERV) {
    struct sockaddr_un un;
    if (hv_path(name, namelen, &un) != 0) return SOCKET_ERROR;
    return syscall(SYS_bind, fd, &un, sizeof(un)) == 0 ? 0 : fail_errno();
  }
  if (namelen < 16) return fail(WSAEFAULT);
  return syscall(SYS_bind, fd, name, 16) == 0 ? 0 : fail_errno();
}

int listen(SOCKET s, int backlog) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (families[fd] != WIN_AF_HYPERV) return fail(WSAEOPNOTSUPP);
  return syscall(SYS_listen, fd, backlog) == 0 ? 0 : fail_errno();
}

SOCKET accept(SOCKET s, void *addr, int *addrlen) {
  int fd = fd_of(s);
  if (fd < 0) return INVALID_SOCKET;
  if (addr || addrlen) return fail(WSAEOPNOTSUPP), INVALID_SOCKET; /* the binding never asks */
  int c = (int)syscall(SYS_accept4, fd, NULL, NULL, SOCK_CLOEXEC);
  if (c < 0) return fail_errno(), INVALID_SOCKET;
  families[c] = WIN_AF_HYPERV;
  open_sockets++;
  return SOCKET_BASE + (SOCKET)c;
}

int connect(SOCKET s, const void *name, int namelen) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  struct sockaddr_un un;
  if (hv_path(name, namelen, &un) != 0) return SOCKET_ERROR;
  if (syscall(SYS_connect, fd, &un, sizeof(un)) == 0) return 0;
  /* AF_UNIX connects complete at once; a missing listener is refused like hvsock's "no service". */
  return fail_errno();
}

int recv(SOCKET s, char *buf, int len, int flags) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (flags != 0 || len < 0) return fail(WSAEINVAL);
  long n = syscall(SYS_recvfrom, fd, buf, (size_t)len, 0, NULL, NULL);
  return n < 0 ? fail_errno() : (int)n;
}

int send(SOCKET s, const char *buf, int len, int flags) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (flags != 0 || len < 0) return fail(WSAEINVAL);
  long n = syscall(SYS_sendto, fd, buf, (size_t)len, MSG_NOSIGNAL, NULL, 0);
  return n < 0 ? fail_errno() : (int)n;
}

int sendto(SOCKET s, const char *buf, int len, int flags, const void *to, int tolen) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (families[fd] != WIN_AF_INET || tolen < 16 || flags != 0) return fail(WSAEINVAL);
  long n = syscall(SYS_sendto, fd, buf, (size_t)len, MSG_NOSIGNAL, to, 16);
  return n < 0 ? fail_errno() : (int)n;
}

int getsockname(SOCKET s, void *name, int *namelen) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (families[fd] != WIN_AF_INET || !namelen || *namelen < 16) return fail(WSAEFAULT);
  socklen_t l = 16;
  if (syscall(SYS_getsockname, fd, name, &l) != 0) return fail_errno();
  *namelen = 16;
  return 0;
}

int getsockopt(SOCKET s, int level, int optname, char *optval, int *optlen) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (level != WIN_SOL_SOCKET || optname != WIN_SO_ERROR || !optlen || *optlen < 4) return fail(WSAEINVAL);
  int e = 0;
  socklen_t l = sizeof(e);
  if (syscall(SYS_getsockopt, fd, SOL_SOCKET, SO_ERROR, &e, &l) != 0) return fail_errno();
  int w = e ? wsa_from_errno(e) : 0;
  memcpy(optval, &w, 4);
  *optlen = 4;
  return 0;
}

int ioctlsocket(SOCKET s, int32_t cmd, uint32_t *argp) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (cmd != WIN_FIONBIO || !argp) return fail(WSAEINVAL);
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, *argp ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) != 0) return fail_errno();
  return 0;
}

int shutdown(SOCKET s, int how) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  if (how < 0 || how > 2) return fail(WSAEINVAL);
  return syscall(SYS_shutdown, fd, how) == 0 ? 0 : fail_errno();
}

int closesocket(SOCKET s) {
  int fd = fd_of(s);
  if (fd < 0) return SOCKET_ERROR;
  families[fd] = 0;
  open_sockets--;
  return close(fd) == 0 ? 0 : fail_errno();
}

int WSAPoll(WSAPOLLFD *fds, uint32_t nfds, int timeout) {
  if (!started) return fail(WSANOTINITIALISED);
  if (nfds == 0 || nfds > 1024) return fail(WSAEINVAL);
  struct pollfd p[1024];
  for (uint32_t i = 0; i < nfds; i++) {
    short ev = fds[i].events;
    if (ev & ~(WIN_POLLRDNORM | WIN_POLLRDBAND | WIN_POLLWRNORM)) return fail(WSAEINVAL);
    SOCKET s = fds[i].fd;
    p[i].fd = (s >= SOCKET_BASE && s < SOCKET_BASE + MAX_FD && families[s - SOCKET_BASE]) ? (int)(s - SOCKET_BASE) : -1;
    if (p[i].fd < 0) return fail(WSAENOTSOCK);
    p[i].events = (short)((ev & (WIN_POLLRDNORM | WIN_POLLRDBAND) ? POLLIN : 0) | (ev & WIN_POLLWRNORM ? POLLOUT : 0));
    p[i].revents = 0;
  }
  int n = poll(p, nfds, timeout);
  if (n < 0) return fail_errno();
  for (uint32_t i = 0; i < nfds; i++) {
    short r = 0;
    if (p[i].revents & POLLIN) r |= WIN_POLLRDNORM;
    if (p[i].revents & POLLOUT) r |= WIN_POLLWRNORM;
    if (p[i].revents & POLLERR) r |= WIN_POLLERR;
    if (p[i].revents & POLLHUP) r |= WIN_POLLHUP;
    if (p[i].revents & POLLNVAL) r |= WIN_POLLNVAL;
    fds[i].revents = r;
  }
  return n;
}
