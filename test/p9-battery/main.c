/* p9battery: POSIX checks, read-only checks and benchmarks for a 9P mount, run inside the test guest.
 *
 *   p9battery run DIR [CHECK...]     POSIX battery in DIR (one subdirectory per check)
 *   p9battery ro DIR                 read-only export: reads work, every mutation fails with EROFS
 *   p9battery bench DIR [options]    benchmarks (see bench.c)
 *   p9battery list                   names of the POSIX checks
 *
 * Output, one line per check: "ok NAME", "ok NAME # note", "not ok NAME: detail", "skip NAME: reason",
 * then "summary passed=N failed=N skipped=N". Exit status 0 when nothing failed.
 */
#include "battery.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK_TIMEOUT_S 240

const char *current_check = "";
static int msg_fd = -1; /* pipe to the runner, in the check's process */

static void send_msg(char kind, const char *fmt, va_list ap) {
  char buf[1024];
  buf[0] = kind;
  int n = vsnprintf(buf + 1, sizeof buf - 2, fmt, ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 3) n = sizeof buf - 3;
  for (int i = 1; i <= n; i++)
    if (buf[i] == '\n') buf[i] = ' ';
  buf[n + 1] = '\n';
  if (msg_fd >= 0) (void)!write(msg_fd, buf, (size_t)n + 2);
}

int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  send_msg('F', fmt, ap);
  va_end(ap);
  return FAIL;
}

int skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  send_msg('S', fmt, ap);
  va_end(ap);
  return SKIP;
}

void note(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  send_msg('N', fmt, ap);
  va_end(ap);
}

const char *errname(int e) {
  const char *n = strerrorname_np(e);
  static char buf[32];
  if (n) return n;
  snprintf(buf, sizeof buf, "errno %d", e);
  return buf;
}

double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

uint64_t fnv1a(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

int write_file(const char *path, const void *data, size_t len, int mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
  if (fd < 0) return -1;
  const char *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      close(fd);
      errno = e;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return close(fd);
}

ssize_t read_file(const char *path, void *buf, size_t cap) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return -1;
  size_t got = 0;
  while (got < cap) {
    ssize_t r = read(fd, (char *)buf + got, cap - got);
    if (r < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  close(fd);
  return (ssize_t)got;
}

const char *peer_path(const char *rel) {
  static char buf[4096];
  const char *peer = getenv("P9_PEER");
  if (!peer || !*peer) return NULL;
  snprintf(buf, sizeof buf, "%s/%s/%s", peer, current_check, rel);
  return buf;
}

static int wanted(const char *name, char **filter, int nfilter) {
  if (nfilter == 0) return 1;
  for (int i = 0; i < nfilter; i++)
    if (strcmp(filter[i], name) == 0) return 1;
  return 0;
}

/* Runs one check in a child process; prints its result line. Returns PASS, FAIL or SKIP. */
static int run_one(const struct check *c, const char *dir, int subdirs) {
  char path[4096];
  if (subdirs)
    snprintf(path, sizeof path, "%s/%s", dir, c->name);
  else
    snprintf(path, sizeof path, "%s", dir);
  if (subdirs && mkdir(path, 0755) < 0 && errno != EEXIST) {
    printf("not ok %s: mkdir %s: %s\n", c->name, path, errname(errno));
    fflush(stdout);
    return FAIL;
  }
  int p[2];
  if (pipe(p) < 0) {
    printf("not ok %s: pipe: %s\n", c->name, errname(errno));
    fflush(stdout);
    return FAIL;
  }
  double t0 = now_seconds();
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    msg_fd = p[1];
    umask(0);
    current_check = c->name;
    alarm(CHECK_TIMEOUT_S);
    if (chdir(path) < 0) _exit(fail("chdir %s: %s", path, errname(errno)));
    _exit(c->fn());
  }
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    printf("not ok %s: fork: %s\n", c->name, errname(errno));
    fflush(stdout);
    return FAIL;
  }
  char msgs[8192];
  size_t len = 0;
  for (;;) {
    ssize_t r = read(p[0], msgs + len, sizeof msgs - 1 - len);
    if (r <= 0) break;
    len += (size_t)r;
    if (len >= sizeof msgs - 1) break;
  }
  msgs[len] = 0;
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  double secs = now_seconds() - t0;

  /* First failure or skip message wins; notes are joined. */
  char failmsg[1024] = "", skipmsg[1024] = "", notes[2048] = "";
  for (char *line = strtok(msgs, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == 'F' && !failmsg[0]) snprintf(failmsg, sizeof failmsg, "%s", line + 1);
    if (line[0] == 'S' && !skipmsg[0]) snprintf(skipmsg, sizeof skipmsg, "%s", line + 1);
    if (line[0] == 'N') {
      size_t l = strlen(notes);
      snprintf(notes + l, sizeof notes - l, "%s%s", l ? "; " : "", line + 1);
    }
  }
  int result;
  if (WIFSIGNALED(status)) {
    result = FAIL;
    if (WTERMSIG(status) == SIGALRM)
      snprintf(failmsg, sizeof failmsg, "timed out after %d s", CHECK_TIMEOUT_S);
    else {
      char prev[1024];
      snprintf(prev, sizeof prev, "%s", failmsg);
      snprintf(failmsg, sizeof failmsg, "killed by signal %d (%s)%s%.900s", WTERMSIG(status),
               strsignal(WTERMSIG(status)), prev[0] ? " after: " : "", prev);
    }
  } else {
    result = WEXITSTATUS(status);
    if (result == FAIL && !failmsg[0]) snprintf(failmsg, sizeof failmsg, "failed without a message");
    if (result != PASS && result != FAIL && result != SKIP) {
      result = FAIL;
      snprintf(failmsg, sizeof failmsg, "exit status %d", WEXITSTATUS(status));
    }
  }
  if (result == PASS)
    printf("ok %s # %.2fs%s%s\n", c->name, secs, notes[0] ? "; " : "", notes);
  else if (result == SKIP)
    printf("skip %s: %s\n", c->name, skipmsg[0] ? skipmsg : "no reason given");
  else
    printf("not ok %s: %s\n", c->name, failmsg);
  fflush(stdout);
  return result;
}

int run_checks(const struct check *checks, size_t n, const char *dir, int subdirs, char **filter, int nfilter) {
  int counts[3] = {0, 0, 0};
  for (size_t i = 0; i < n; i++) {
    if (!wanted(checks[i].name, filter, nfilter)) continue;
    counts[run_one(&checks[i], dir, subdirs)]++;
  }
  printf("summary passed=%d failed=%d skipped=%d\n", counts[PASS], counts[FAIL], counts[SKIP]);
  fflush(stdout);
  return counts[FAIL];
}

static int usage(void) {
  fprintf(stderr, "usage: p9battery run DIR [CHECK...] | ro DIR | bench DIR [options] | list\n");
  return 2;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGPIPE, SIG_IGN);
  if (argc < 2) return usage();
  if (strcmp(argv[1], "list") == 0) {
    for (size_t i = 0; i < posix_checks_count; i++) printf("%s\n", posix_checks[i].name);
    return 0;
  }
  if (argc < 3) return usage();
  if (strcmp(argv[1], "run") == 0)
    return run_checks(posix_checks, posix_checks_count, argv[2], 1, argv + 3, argc - 3) ? 1 : 0;
  if (strcmp(argv[1], "ro") == 0) return run_checks(ro_checks, ro_checks_count, argv[2], 0, NULL, 0) ? 1 : 0;
  if (strcmp(argv[1], "bench") == 0) return bench_main(argc - 2, argv + 2);
  return usage();
}
