/* p9battery bench DIR [--seq-mib N] [--rand-secs S] [--meta N] [--tree N]
 * (readdir: listings of the --meta directory for rand-secs/2 seconds)
 * Prints "bench NAME VALUE UNIT" lines, then "bench-done". Everything it creates under DIR is removed. */
#include "battery.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define IO_SIZE (1024 * 1024)

static void report(const char *name, double value, const char *unit) {
  printf("bench %s %.2f %s\n", name, value, unit);
  fflush(stdout);
}

static int die(const char *what) {
  printf("bench-error %s: %s\n", what, errname(errno));
  fflush(stdout);
  return 1;
}

int bench_main(int argc, char **argv) {
  const char *dir = argv[0];
  int seq_mib = 256, meta = 1000, tree = 2000;
  double rand_secs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--seq-mib") == 0) seq_mib = atoi(argv[i + 1]);
    if (strcmp(argv[i], "--rand-secs") == 0) rand_secs = atof(argv[i + 1]);
    if (strcmp(argv[i], "--meta") == 0) meta = atoi(argv[i + 1]);
    if (strcmp(argv[i], "--tree") == 0) tree = atoi(argv[i + 1]);
  }
  if (chdir(dir) < 0) return die("chdir");
  char *buf = malloc(IO_SIZE);
  if (!buf) return die("malloc");
  for (size_t i = 0; i < IO_SIZE; i++) buf[i] = (char)(i * 131 + 7);

  /* Sequential write then read, 1 MiB per call. */
  int fd = open("seq", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return die("create seq");
  double t0 = now_seconds();
  for (int i = 0; i < seq_mib; i++)
    if (write(fd, buf, IO_SIZE) != IO_SIZE) return die("write seq");
  if (fsync(fd) < 0) return die("fsync seq");
  close(fd);
  report("seq_write_1m", seq_mib / (now_seconds() - t0), "MiB/s");
  fd = open("seq", O_RDONLY);
  if (fd < 0) return die("open seq");
  t0 = now_seconds();
  long long total = 0;
  for (ssize_t r; (r = read(fd, buf, IO_SIZE)) > 0;) total += r;
  report("seq_read_1m", (double)total / (1024.0 * 1024.0) / (now_seconds() - t0), "MiB/s");

  /* 4 KiB random reads over the same file, for rand_secs. */
  uint64_t x = 88172645463325252ULL;
  long long blocks = total / 4096, ops = 0;
  t0 = now_seconds();
  double t;
  do {
    for (int k = 0; k < 64; k++) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      if (pread(fd, buf, 4096, (off_t)(x % (uint64_t)blocks) * 4096) != 4096) return die("pread");
      ops++;
    }
    t = now_seconds() - t0;
  } while (t < rand_secs);
  report("rand_read_4k", (double)ops / t, "ops/s");
  close(fd);
  unlink("seq");

  /* Metadata: create, stat, unlink of empty files in one directory. */
  if (mkdir("meta", 0755) < 0) return die("mkdir meta");
  char name[64];
  t0 = now_seconds();
  for (int i = 0; i < meta; i++) {
    snprintf(name, sizeof name, "meta/f%d", i);
    int f = open(name, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (f < 0) return die("create");
    close(f);
  }
  report("create", meta / (now_seconds() - t0), "ops/s");
  /* Listing the directory just filled (cache=none: every listing reads it from the server). */
  long listings = 0;
  t0 = now_seconds();
  do {
    DIR *d = opendir("meta");
    if (!d) return die("opendir meta");
    int entries = 0;
    while (readdir(d) != NULL) entries++;
    closedir(d);
    if (entries != meta + 2) return die("readdir meta count");
    listings++;
  } while (now_seconds() - t0 < rand_secs / 2);
  report("readdir", listings / (now_seconds() - t0), "listings/s");
  struct stat st;
  t0 = now_seconds();
  for (int i = 0; i < meta; i++) {
    snprintf(name, sizeof name, "meta/f%d", i);
    if (stat(name, &st) < 0) return die("stat");
  }
  report("stat", meta / (now_seconds() - t0), "ops/s");
  t0 = now_seconds();
  for (int i = 0; i < meta; i++) {
    snprintf(name, sizeof name, "meta/f%d", i);
    if (unlink(name) < 0) return die("unlink");
  }
  report("unlink", meta / (now_seconds() - t0), "ops/s");
  rmdir("meta");

  /* Small-file tree: `tree` files of 4 KiB in directories of 100, created then read back. */
  if (mkdir("tree", 0755) < 0) return die("mkdir tree");
  t0 = now_seconds();
  for (int i = 0; i < tree; i++) {
    if (i % 100 == 0) {
      snprintf(name, sizeof name, "tree/d%d", i / 100);
      if (mkdir(name, 0755) < 0) return die("mkdir tree/d");
    }
    snprintf(name, sizeof name, "tree/d%d/f%d", i / 100, i);
    int f = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (f < 0 || write(f, buf, 4096) != 4096) return die("tree write");
    close(f);
  }
  report("tree_create_4k", tree / (now_seconds() - t0), "files/s");
  t0 = now_seconds();
  for (int i = 0; i < tree; i++) {
    snprintf(name, sizeof name, "tree/d%d/f%d", i / 100, i);
    int f = open(name, O_RDONLY);
    if (f < 0 || read(f, buf, IO_SIZE) != 4096) return die("tree read");
    close(f);
  }
  report("tree_read_4k", tree / (now_seconds() - t0), "files/s");
  for (int i = 0; i < tree; i++) {
    snprintf(name, sizeof name, "tree/d%d/f%d", i / 100, i);
    unlink(name);
    if (i % 100 == 99 || i == tree - 1) {
      snprintf(name, sizeof name, "tree/d%d", i / 100);
      rmdir(name);
    }
  }
  rmdir("tree");
  printf("bench-done\n");
  fflush(stdout);
  free(buf);
  return 0;
}
