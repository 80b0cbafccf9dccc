/* Checks for a read-only export, mounted read-write by the guest so that every mutation reaches the server.
 * The host prepares the export: file "file" holding "read-only\n", directory "dir" with file "inner",
 * empty directory "empty", symlink "link" -> "file". */
#include "battery.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

static const char CONTENT[] = "read-only\n";

static int check_ro_reads(void) {
  char buf[64];
  ssize_t n = read_file("file", buf, sizeof buf);
  EXPECT(n == (ssize_t)strlen(CONTENT) && memcmp(buf, CONTENT, (size_t)n) == 0, "read file: %zd (%s)", n,
         errname(errno));
  n = readlink("link", buf, sizeof buf);
  EXPECT(n == 4 && memcmp(buf, "file", 4) == 0, "readlink: %zd (%s)", n, errname(errno));
  struct stat st;
  SYS(stat("dir/inner", &st));
  DIR *d = opendir("dir");
  EXPECT(d, "opendir: %s", errname(errno));
  int found = 0;
  for (struct dirent *e; (e = readdir(d));) found += strcmp(e->d_name, "inner") == 0;
  closedir(d);
  EXPECT(found == 1, "readdir listed inner %d times", found);
  int fd = open("file", O_RDONLY);
  SYS(fd);
  SYS(fstat(fd, &st));
  SYS(close(fd));
  return PASS;
}

static int check_ro_create(void) {
  EXPECT_ERRNO(open("new", O_CREAT | O_WRONLY, 0644), EROFS);
  EXPECT_ERRNO(open("new", O_CREAT | O_EXCL | O_RDWR, 0644), EROFS);
  return PASS;
}

static int check_ro_open_write(void) {
  EXPECT_ERRNO(open("file", O_WRONLY), EROFS);
  EXPECT_ERRNO(open("file", O_RDWR), EROFS);
  EXPECT_ERRNO(open("file", O_WRONLY | O_TRUNC), EROFS);
  EXPECT_ERRNO(open("file", O_WRONLY | O_APPEND), EROFS);
  return PASS;
}

static int check_ro_mkdir(void) {
  EXPECT_ERRNO(mkdir("newdir", 0755), EROFS);
  return PASS;
}
static int check_ro_rmdir(void) {
  EXPECT_ERRNO(rmdir("empty"), EROFS);
  return PASS;
}
static int check_ro_unlink(void) {
  EXPECT_ERRNO(unlink("file"), EROFS);
  EXPECT_ERRNO(unlink("link"), EROFS);
  return PASS;
}
static int check_ro_rename(void) {
  EXPECT_ERRNO(rename("file", "renamed"), EROFS);
  EXPECT_ERRNO(rename("dir/inner", "inner2"), EROFS);
  return PASS;
}
static int check_ro_symlink(void) {
  EXPECT_ERRNO(symlink("file", "newlink"), EROFS);
  return PASS;
}
static int check_ro_link(void) {
  EXPECT_ERRNO(link("file", "hardlink"), EROFS);
  return PASS;
}
static int check_ro_mknod(void) {
  EXPECT_ERRNO(mknod("fifo", S_IFIFO | 0644, 0), EROFS);
  return PASS;
}
static int check_ro_chmod(void) {
  EXPECT_ERRNO(chmod("file", 0600), EROFS);
  return PASS;
}
static int check_ro_chown(void) {
  EXPECT_ERRNO(chown("file", 1, 1), EROFS);
  return PASS;
}
static int check_ro_truncate(void) {
  EXPECT_ERRNO(truncate("file", 0), EROFS);
  return PASS;
}
static int check_ro_utimensat(void) {
  struct timespec ts[2] = {{.tv_sec = 1}, {.tv_sec = 1}};
  EXPECT_ERRNO(utimensat(AT_FDCWD, "file", ts, 0), EROFS);
  return PASS;
}
static int check_ro_setxattr(void) {
  EXPECT_ERRNO(setxattr("file", "user.ro", "x", 1, 0), EROFS);
  return PASS;
}

static int check_ro_unchanged(void) {
  char buf[64];
  ssize_t n = read_file("file", buf, sizeof buf);
  EXPECT(n == (ssize_t)strlen(CONTENT) && memcmp(buf, CONTENT, (size_t)n) == 0, "file changed: %zd bytes", n);
  struct stat st;
  SYS(stat("file", &st));
  EXPECT((st.st_mode & 07777) == 0644 && st.st_uid == 0, "file metadata changed: mode %o uid %u", st.st_mode,
         st.st_uid);
  const char *gone[] = {"new", "newdir", "renamed", "newlink", "hardlink", "fifo", "inner2"};
  for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
    EXPECT(lstat(gone[i], &st) < 0 && errno == ENOENT, "%s exists after a refused mutation", gone[i]);
  SYS(stat("empty", &st));
  SYS(stat("dir/inner", &st));
  return PASS;
}

const struct check ro_checks[] = {
    {"ro_reads", check_ro_reads},         {"ro_create", check_ro_create},       {"ro_open_write", check_ro_open_write},
    {"ro_mkdir", check_ro_mkdir},         {"ro_rmdir", check_ro_rmdir},         {"ro_unlink", check_ro_unlink},
    {"ro_rename", check_ro_rename},       {"ro_symlink", check_ro_symlink},     {"ro_link", check_ro_link},
    {"ro_mknod", check_ro_mknod},         {"ro_chmod", check_ro_chmod},         {"ro_chown", check_ro_chown},
    {"ro_truncate", check_ro_truncate},   {"ro_utimensat", check_ro_utimensat}, {"ro_setxattr", check_ro_setxattr},
    {"ro_unchanged", check_ro_unchanged},
};
const size_t ro_checks_count = sizeof ro_checks / sizeof ro_checks[0];
