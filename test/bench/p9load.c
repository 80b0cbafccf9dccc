/* p9load: a raw 9P2000.L load generator for `make bench` (test/bench/p9-raw.ts), built there with gcc.
 *
 *   p9load --port P --aname A --msize M --conns C --depth D --secs S --op OP [--bytes N] [--warmup S]
 *          [--server-pid PID] [--file-size N]
 *
 * C connections, each with D requests (or request chains) in flight; one thread, epoll, replies matched by tag
 * (tag = slot). Requests produced while handling one batch of replies leave in one write per connection.
 * OP (one "op" is the whole chain):
 *   getattr  Tgetattr(ALL) of a walked fid on "small"
 *   walk     Twalk root -> "small" + Tclunk
 *   read     Tread of N bytes from "data" (opened read-only), sequential, wrapping at --file-size
 *   write    Twrite of N bytes to "wdata" (opened write-only), sequential, wrapping at --file-size
 *   create   Twalk (clone of root) + Tlcreate + Tclunk + Twalk to the new name + Tremove (the Linux client's
 *            unlink when a server has no Tunlinkat, as Debian's diod 1.0.24: one workload both servers serve)
 *   readdir  Twalk root -> "dir1000" + Tlopen + Treaddir (count msize-24) until empty + Tclunk; every listing is
 *            checked to hold 1002 entries
 *   mix      what a lookup, a stat and a file's life cost through the kernel client, one after the other:
 *            Twalk root -> "small" + Tgetattr + Tclunk, then the create chain above (8 requests): the servers
 *            see a mix of request types, as from a guest, not one type over and over
 * After --warmup seconds it measures for --secs: ops, latency percentiles (log histogram, 1% buckets), its own
 * CPU time, and, with --server-pid, the server's utime+stime (/proc/PID/stat) over exactly that window.
 * Prints one JSON object. Any Rlerror or protocol surprise exits 1 with a message on stderr. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { OP_GETATTR, OP_WALK, OP_READ, OP_WRITE, OP_CREATE, OP_READDIR, OP_MIX };
static const char *op_names[] = {"getattr", "walk", "read", "write", "create", "readdir", "mix"};

#define Rlerror 7
#define Tlopen 12
#define Tlcreate 14
#define Tgetattr 24
#define Treaddir 40
#define Tversion 100
#define Tattach 104
#define Twalk 110
#define Tread 116
#define Twrite 118
#define Tclunk 120
#define Tremove 122
#define NOFID 0xffffffffu
#define DIR_ENTRIES 1002 /* dir1000 plus . and .. */

static int port, conns = 1, depth = 1, op = -1, server_pid = 0;
static const char *aname = "";
static uint32_t msize = 65536, bytes = 65536;
static uint64_t file_size = 64ull << 20;
static double secs = 2, warmup = 0.3;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "p9load: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* utime+stime of a process (all its threads), seconds. */
static double cpu_of(int pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int fd = open(path, O_RDONLY);
  if (fd < 0) die("open %s: %s", path, strerror(errno));
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) die("read %s", path);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  if (!p) die("parse %s", path);
  unsigned long utime = 0, stime = 0;
  /* fields after "(comm)": state(3) ... utime(14) stime(15) */
  if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) die("parse stat");
  return (double)(utime + stime) / sysconf(_SC_CLK_TCK);
}

/* ---- little-endian encoding ---- */
static inline void p8(uint8_t **p, uint8_t v) { *(*p)++ = v; }
static inline void p16(uint8_t **p, uint16_t v) { memcpy(*p, &v, 2), *p += 2; }
static inline void p32(uint8_t **p, uint32_t v) { memcpy(*p, &v, 4), *p += 4; }
static inline void p64(uint8_t **p, uint64_t v) { memcpy(*p, &v, 8), *p += 8; }
static inline void pstr(uint8_t **p, const char *s) {
  size_t n = strlen(s);
  p16(p, (uint16_t)n);
  memcpy(*p, s, n);
  *p += n;
}
static inline uint16_t g16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t g32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t g64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

/* ---- connections ---- */
struct slot {
  int step;
  uint32_t fid;
  uint64_t off; /* file offset (read/write) or directory cookie (readdir) */
  int entries;  /* readdir: entries seen in this listing */
  unsigned seq; /* create: name counter */
  double t0;    /* start of the op in flight */
};

struct conn {
  int fd, idx;
  uint8_t *in;
  size_t in_len, in_cap;
  uint8_t *out;
  size_t out_len, out_off, out_cap;
  struct slot *slots;
};

static struct conn *cs;
static uint8_t *payload; /* write data */

static uint8_t *reserve(struct conn *c, size_t n) {
  if (c->out_len + n > c->out_cap) {
    while (c->out_len + n > c->out_cap) c->out_cap *= 2;
    c->out = realloc(c->out, c->out_cap);
    if (!c->out) die("out of memory");
  }
  return c->out + c->out_len;
}

/* Starts a message: returns the cursor after the header; finish with end_msg. */
static uint8_t *begin(struct conn *c, size_t max, uint8_t type, uint16_t tag) {
  uint8_t *p = reserve(c, max + 7) + 4;
  p8(&p, type);
  p16(&p, tag);
  return p;
}

static void end_msg(struct conn *c, uint8_t *end) {
  uint8_t *start = c->out + c->out_len;
  uint32_t size = (uint32_t)(end - start);
  memcpy(start, &size, 4);
  c->out_len += size;
}

static void flush_out(struct conn *c, int blocking) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && !blocking) return; /* EPOLLOUT not used: the kernel buffer fits our depth */
      if (errno == EAGAIN) {
        usleep(50);
        continue;
      }
      die("write: %s", strerror(errno));
    }
    c->out_off += n;
  }
  c->out_off = c->out_len = 0;
}

/* Reads one whole frame synchronously (setup only); returns a pointer into c->in valid until the next read. */
static uint8_t *read_frame_sync(struct conn *c) {
  for (;;) {
    if (c->in_len >= 4) {
      uint32_t size = g32(c->in);
      if (c->in_len >= size) return c->in;
    }
    if (c->in_len == c->in_cap) die("setup reply too large");
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n <= 0) die("read during setup: %s", n == 0 ? "closed" : strerror(errno));
    c->in_len += n;
  }
}

static void consume(struct conn *c, size_t n) {
  memmove(c->in, c->in + n, c->in_len - n);
  c->in_len -= n;
}

static void check_reply(const uint8_t *f, uint8_t want, const char *what) {
  if (f[4] == Rlerror) die("%s: Rlerror %u", what, g32(f + 7));
  if (f[4] != want) die("%s: reply type %u", what, f[4]);
}

/* One synchronous request (setup): the message must already be in c->out. */
static void rpc_sync(struct conn *c, uint8_t want, const char *what) {
  flush_out(c, 1);
  uint8_t *f = read_frame_sync(c);
  check_reply(f, want, what);
  if (f[4] == 101) msize = msize < g32(f + 7) ? msize : g32(f + 7);
  consume(c, g32(f));
}

static void walk1(struct conn *c, uint16_t tag, uint32_t fid, uint32_t newfid, const char *name) {
  uint8_t *p = begin(c, 16 + (name ? strlen(name) + 2 : 0), Twalk, tag);
  p32(&p, fid);
  p32(&p, newfid);
  p16(&p, name ? 1 : 0);
  if (name) pstr(&p, name);
  end_msg(c, p);
}

static void simple_fid(struct conn *c, uint8_t type, uint16_t tag, uint32_t fid) {
  uint8_t *p = begin(c, 4, type, tag);
  p32(&p, fid);
  end_msg(c, p);
}

static void lopen(struct conn *c, uint16_t tag, uint32_t fid, uint32_t flags) {
  uint8_t *p = begin(c, 8, Tlopen, tag);
  p32(&p, fid);
  p32(&p, flags);
  end_msg(c, p);
}

static void setup_conn(struct conn *c) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect: %s", strerror(errno));
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c->in_cap = 2 * (size_t)msize + 65536;
  c->in = malloc(c->in_cap);
  c->out_cap = 1 << 16;
  c->out = malloc(c->out_cap);
  c->slots = calloc(depth, sizeof *c->slots);
  if (!c->in || !c->out || !c->slots) die("out of memory");

  uint8_t *p = begin(c, 4 + 2 + 8, Tversion, 0xffff);
  p32(&p, msize);
  pstr(&p, "9P2000.L");
  end_msg(c, p);
  rpc_sync(c, 101, "Tversion");
  p = begin(c, 16 + strlen(aname) + 8, Tattach, 0);
  p32(&p, 0);
  p32(&p, NOFID);
  pstr(&p, "root");
  pstr(&p, aname);
  p32(&p, 0);
  end_msg(c, p);
  rpc_sync(c, 105, "Tattach");

  for (int s = 0; s < depth; s++) {
    struct slot *sl = &c->slots[s];
    sl->fid = 1 + s;
    if (op == OP_GETATTR) {
      walk1(c, 0, 0, sl->fid, "small");
      rpc_sync(c, 111, "Twalk small");
    } else if (op == OP_READ || op == OP_WRITE) {
      walk1(c, 0, 0, sl->fid, op == OP_READ ? "data" : "wdata");
      rpc_sync(c, 111, "Twalk data");
      lopen(c, 0, sl->fid, op == OP_READ ? 0 : 1);
      rpc_sync(c, 13, "Tlopen data");
      /* Spread the slots over the file so that they do not all touch the same pages. */
      uint64_t blocks = file_size / bytes;
      sl->off = ((uint64_t)(c->idx * depth + s) * blocks / (conns * depth)) * bytes;
    }
  }
  int fl = fcntl(c->fd, F_GETFL);
  fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- the ops ---- */
static void issue(struct conn *c, int s) {
  struct slot *sl = &c->slots[s];
  uint16_t tag = (uint16_t)s;
  uint8_t *p;
  switch (op) {
  case OP_GETATTR:
    p = begin(c, 12, Tgetattr, tag);
    p32(&p, sl->fid);
    p64(&p, 0x3fff);
    end_msg(c, p);
    break;
  case OP_WALK:
    if (sl->step == 0) walk1(c, tag, 0, sl->fid, "small");
    else simple_fid(c, Tclunk, tag, sl->fid);
    break;
  case OP_READ:
    p = begin(c, 16, Tread, tag);
    p32(&p, sl->fid);
    p64(&p, sl->off);
    p32(&p, bytes);
    end_msg(c, p);
    break;
  case OP_WRITE:
    p = begin(c, 16 + bytes, Twrite, tag);
    p32(&p, sl->fid);
    p64(&p, sl->off);
    p32(&p, bytes);
    memcpy(p, payload, bytes);
    end_msg(c, p + bytes);
    break;
  case OP_CREATE: {
    char name[64];
    snprintf(name, sizeof name, "c%d_%d_%u", c->idx, s, sl->seq);
    if (sl->step == 0) walk1(c, tag, 0, sl->fid, NULL);
    else if (sl->step == 1) {
      p = begin(c, 16 + strlen(name) + 2, Tlcreate, tag);
      p32(&p, sl->fid);
      pstr(&p, name);
      p32(&p, 02 | 0100); /* O_RDWR|O_CREAT */
      p32(&p, 0644);
      p32(&p, 0);
      end_msg(c, p);
    } else if (sl->step == 2) simple_fid(c, Tclunk, tag, sl->fid);
    else if (sl->step == 3) walk1(c, tag, 0, sl->fid, name);
    else simple_fid(c, Tremove, tag, sl->fid);
    break;
  }
  case OP_MIX: {
    char name[64];
    snprintf(name, sizeof name, "m%d_%d_%u", c->idx, s, sl->seq);
    switch (sl->step) {
    case 0: walk1(c, tag, 0, sl->fid, "small"); break;
    case 1:
      p = begin(c, 12, Tgetattr, tag);
      p32(&p, sl->fid);
      p64(&p, 0x3fff);
      end_msg(c, p);
      break;
    case 2: simple_fid(c, Tclunk, tag, sl->fid); break;
    case 3: walk1(c, tag, 0, sl->fid, NULL); break;
    case 4:
      p = begin(c, 16 + strlen(name) + 2, Tlcreate, tag);
      p32(&p, sl->fid);
      pstr(&p, name);
      p32(&p, 02 | 0100);
      p32(&p, 0644);
      p32(&p, 0);
      end_msg(c, p);
      break;
    case 5: simple_fid(c, Tclunk, tag, sl->fid); break;
    case 6: walk1(c, tag, 0, sl->fid, name); break;
    default: simple_fid(c, Tremove, tag, sl->fid); break;
    }
    break;
  }
  case OP_READDIR:
    if (sl->step == 0) walk1(c, tag, 0, sl->fid, "dir1000");
    else if (sl->step == 1) lopen(c, tag, sl->fid, 0);
    else if (sl->step == 2) {
      p = begin(c, 16, Treaddir, tag);
      p32(&p, sl->fid);
      p64(&p, sl->off);
      p32(&p, msize - 24);
      end_msg(c, p);
    } else simple_fid(c, Tclunk, tag, sl->fid);
    break;
  }
}

/* ---- latency histogram: bucket i holds latencies in [1.01^i, 1.01^(i+1)) ns ---- */
#define NBUCKETS 2600
static uint64_t hist[NBUCKETS];
static uint64_t done_ops, requests;
static int measuring, stopping, active;

static void record(double seconds) {
  double ns = seconds * 1e9;
  int i = ns <= 1 ? 0 : (int)(log(ns) / log(1.01));
  if (i >= NBUCKETS) i = NBUCKETS - 1;
  hist[i]++;
  done_ops++;
}

static double percentile(double p) {
  uint64_t want = (uint64_t)ceil(p / 100 * done_ops), seen = 0;
  for (int i = 0; i < NBUCKETS; i++) {
    seen += hist[i];
    if (seen >= want && want > 0) return pow(1.01, i + 0.5) / 1e3; /* microseconds */
  }
  return NAN;
}

/* A reply for slot s: advance its chain; returns 1 when the slot should issue its next request. */
static int on_reply(struct conn *c, int s, const uint8_t *f) {
  struct slot *sl = &c->slots[s];
  uint8_t type = f[4];
  if (type == Rlerror) die("%s step %d: Rlerror %u", op_names[op], sl->step, g32(f + 7));
  int op_done = 0;
  switch (op) {
  case OP_GETATTR:
    op_done = 1;
    break;
  case OP_WALK:
    if (sl->step == 0 && g16(f + 7) != 1) die("walk: %u qids", g16(f + 7));
    op_done = sl->step == 1;
    sl->step = op_done ? 0 : 1;
    break;
  case OP_READ:
    if (g32(f + 7) != bytes) die("read: %u bytes, wanted %u", g32(f + 7), bytes);
    sl->off += bytes;
    if (sl->off + bytes > file_size) sl->off = 0;
    op_done = 1;
    break;
  case OP_WRITE:
    if (g32(f + 7) != bytes) die("write: %u bytes, wanted %u", g32(f + 7), bytes);
    sl->off += bytes;
    if (sl->off + bytes > file_size) sl->off = 0;
    op_done = 1;
    break;
  case OP_CREATE:
    if (++sl->step == 5) {
      sl->step = 0;
      sl->seq++;
      op_done = 1;
    }
    break;
  case OP_MIX:
    if (++sl->step == 8) {
      sl->step = 0;
      sl->seq++;
      op_done = 1;
    }
    break;
  case OP_READDIR:
    if (sl->step == 2) {
      uint32_t count = g32(f + 7);
      if (count == 0) {
        if (sl->entries != DIR_ENTRIES) die("readdir: %d entries, wanted %d", sl->entries, DIR_ENTRIES);
        sl->step = 3;
      } else {
        const uint8_t *e = f + 11, *end = f + 11 + count;
        while (e < end) {
          sl->off = g64(e + 13);
          sl->entries++;
          e += 24 + g16(e + 22);
        }
      }
    } else if (sl->step == 3) {
      sl->step = 0;
      sl->off = 0;
      sl->entries = 0;
      op_done = 1;
    } else sl->step++;
    break;
  }
  requests++;
  if (op_done) {
    double t = now();
    if (measuring) record(t - sl->t0);
    if (stopping) {
      active--;
      return 0;
    }
    sl->t0 = t;
  }
  return 1;
}

static void handle_input(struct conn *c) {
  for (;;) {
    if (c->in_cap - c->in_len < 65536) {
      /* keep room for at least one large read */
      c->in_cap *= 2;
      c->in = realloc(c->in, c->in_cap);
      if (!c->in) die("out of memory");
    }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n < 0) {
      if (errno == EAGAIN) break;
      if (errno == EINTR) continue;
      die("read: %s", strerror(errno));
    }
    if (n == 0) die("server closed the connection");
    c->in_len += n;
    size_t off = 0;
    while (c->in_len - off >= 7) {
      uint32_t size = g32(c->in + off);
      if (size < 7) die("bad frame size %u", size);
      if (c->in_len - off < size) break;
      uint16_t tag = g16(c->in + off + 5);
      if (tag >= depth) die("unexpected tag %u", tag);
      if (on_reply(c, tag, c->in + off)) issue(c, tag);
      off += size;
    }
    consume(c, off);
    if ((size_t)n < 65536) break;
  }
}

int main(int argc, char **argv) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const char *k = argv[i], *v = argv[i + 1];
    if (!strcmp(k, "--port")) port = atoi(v);
    else if (!strcmp(k, "--aname")) aname = v;
    else if (!strcmp(k, "--msize")) msize = (uint32_t)strtoul(v, 0, 10);
    else if (!strcmp(k, "--conns")) conns = atoi(v);
    else if (!strcmp(k, "--depth")) depth = atoi(v);
    else if (!strcmp(k, "--secs")) secs = atof(v);
    else if (!strcmp(k, "--warmup")) warmup = atof(v);
    else if (!strcmp(k, "--bytes")) bytes = (uint32_t)strtoul(v, 0, 10);
    else if (!strcmp(k, "--file-size")) file_size = strtoull(v, 0, 10);
    else if (!strcmp(k, "--server-pid")) server_pid = atoi(v);
    else if (!strcmp(k, "--op")) {
      for (int j = 0; j < 7; j++)
        if (!strcmp(v, op_names[j])) op = j;
    } else die("unknown option %s", k);
  }
  if (op < 0 || port <= 0 || conns < 1 || depth < 1 || depth > 256) die("usage: see the comment at the top");
  uint32_t asked = msize;
  payload = malloc(bytes);
  for (uint32_t i = 0; i < bytes; i++) payload[i] = (uint8_t)(i * 131 + 7);
  cs = calloc(conns, sizeof *cs);
  for (int i = 0; i < conns; i++) {
    cs[i].idx = i;
    setup_conn(&cs[i]);
  }
  if ((op == OP_READ || op == OP_WRITE) && bytes > msize - 24) die("--bytes %u above msize %u - 24", bytes, msize);

  int ep = epoll_create1(0);
  for (int i = 0; i < conns; i++) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev);
  }
  double t = now();
  for (int i = 0; i < conns; i++) {
    for (int s = 0; s < depth; s++) {
      cs[i].slots[s].t0 = t;
      issue(&cs[i], s);
    }
    flush_out(&cs[i], 1);
  }
  double start = t + warmup, end = start + secs, cpu0 = 0, srv0 = 0, t_start = 0;
  uint64_t req0 = 0;
  active = conns * depth;
  struct epoll_event evs[64];
  while (active > 0) {
    int n = epoll_wait(ep, evs, 64, 10000);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    if (n == 0) die("no reply for 10 s (%s)", op_names[op]);
    for (int k = 0; k < n; k++) {
      struct conn *c = &cs[evs[k].data.u32];
      handle_input(c);
      flush_out(c, 1);
    }
    if (stopping) continue;
    t = now();
    if (!measuring && t >= start) {
      measuring = 1;
      t_start = t;
      cpu0 = cpu_self();
      if (server_pid) srv0 = cpu_of(server_pid);
      req0 = requests;
    } else if (measuring && t >= end) {
      double cpu = cpu_self() - cpu0;
      double srv = server_pid ? cpu_of(server_pid) - srv0 : 0;
      uint64_t reqs = requests - req0;
      measuring = 0;
      stopping = 1; /* every slot finishes its chain, then stops */
      printf("{\"op\":\"%s\",\"conns\":%d,\"depth\":%d,\"msize\":%u,\"askedMsize\":%u,\"bytes\":%u,"
             "\"ops\":%llu,\"requests\":%llu,\"secs\":%.6f,\"opsPerSec\":%.2f,\"p50us\":%.2f,\"p99us\":%.2f,"
             "\"clientCpu\":%.6f,\"serverCpu\":%.6f}\n",
             op_names[op], conns, depth, msize, asked, bytes, (unsigned long long)done_ops,
             (unsigned long long)reqs, t - t_start, done_ops / (t - t_start), percentile(50), percentile(99), cpu,
             srv);
      fflush(stdout);
    }
  }
  for (int i = 0; i < conns; i++) close(cs[i].fd);
  return 0;
}
