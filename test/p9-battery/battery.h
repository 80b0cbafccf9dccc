/* Shared helpers of the 9P POSIX battery (run inside the test guest against a 9P mount). */
#ifndef P9_BATTERY_H
#define P9_BATTERY_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

/* A check returns PASS, FAIL (after fail()) or SKIP (after skip()). It runs in its own process, with a fresh,
 * empty working directory on the mount. */
enum { PASS = 0, FAIL = 1, SKIP = 2 };

struct check {
  const char *name;
  int (*fn)(void);
};

/* Record why a check failed / was skipped, or a note for a passing check; returns FAIL / SKIP / PASS. */
int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Name of the check running in this process. */
extern const char *current_check;
/* The same path on a second mount of the same export (env P9_PEER names the battery directory there), or NULL. */
const char *peer_path(const char *rel);

/* Symbolic errno name ("ENOENT"), for messages. */
const char *errname(int e);
double now_seconds(void);

/* Run checks[0..n) in dir (each in its own new subdirectory when subdirs is set); only those named in filter
 * (if nfilter > 0). Returns the number of failures. */
int run_checks(const struct check *checks, size_t n, const char *dir, int subdirs, char **filter, int nfilter);

/* Small file helpers: return 0 or -1 with errno set. */
int write_file(const char *path, const void *data, size_t len, int mode);
/* Reads up to cap bytes; returns the length read or -1. */
ssize_t read_file(const char *path, void *buf, size_t cap);
/* 64-bit FNV-1a, chainable. */
uint64_t fnv1a(uint64_t h, const void *data, size_t len);
#define FNV_INIT 0xcbf29ce484222325ULL

/* The call must succeed (non-negative result), else the check fails with the call's text and errno. */
#define SYS(call)                                                                                \
  do {                                                                                           \
    if ((long)(call) < 0) return fail("%s: %s (line %d)", #call, errname(errno), __LINE__);     \
  } while (0)

/* The call must fail with errno e. */
#define EXPECT_ERRNO(call, e)                                                                    \
  do {                                                                                           \
    errno = 0;                                                                                   \
    long r_ = (long)(call);                                                                      \
    if (r_ >= 0) return fail("%s: succeeded, expected %s (line %d)", #call, errname(e), __LINE__); \
    if (errno != (e))                                                                            \
      return fail("%s: %s, expected %s (line %d)", #call, errname(errno), errname(e), __LINE__); \
  } while (0)

#define EXPECT(cond, ...)                  \
  do {                                     \
    if (!(cond)) return fail(__VA_ARGS__); \
  } while (0)

extern const struct check posix_checks[];
extern const size_t posix_checks_count;
extern const struct check ro_checks[];
extern const size_t ro_checks_count;
int bench_main(int argc, char **argv);

#endif
