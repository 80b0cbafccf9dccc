/* The POSIX checks. Each runs in its own process with a fresh, empty working directory on the 9P mount,
 * umask 0, as root. */
#include "battery.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define V9FS_MAGIC 0x01021997

static int expect_content(const char *path, const char *want) {
  char buf[4096];
  ssize_t n = read_file(path, buf, sizeof buf - 1);
  if (n < 0) return fail("read %s: %s", path, errname(errno));
  buf[n] = 0;
  if ((size_t)n != strlen(want) || memcmp(buf, want, (size_t)n) != 0)
    return fail("%s holds \"%s\" (%zd bytes), expected \"%s\"", path, buf, n, want);
  return PASS;
}

/* Waits for a child that reports through fail()/exit status; returns its result. */
static int wait_child(pid_t pid) {
  int st = 0;
  if (waitpid(pid, &st, 0) < 0) return fail("waitpid: %s", errname(errno));
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WTERMSIG(st) == SIGALRM) return fail("child timed out (still blocked?)");
  return fail("child killed by signal %d", WTERMSIG(st));
}

/* ---- open flags ---------------------------------------------------------------------------------------- */

static int check_open_rdonly(void) {
  SYS(write_file("f", "hello", 5, 0644));
  int fd = open("f", O_RDONLY);
  SYS(fd);
  char buf[8] = {0};
  EXPECT(read(fd, buf, sizeof buf) == 5 && memcmp(buf, "hello", 5) == 0, "read back \"%s\"", buf);
  EXPECT_ERRNO(write(fd, "x", 1), EBADF);
  SYS(close(fd));
  return PASS;
}

static int check_open_wronly(void) {
  SYS(write_file("f", "hello", 5, 0644));
  int fd = open("f", O_WRONLY);
  SYS(fd);
  char buf[8];
  EXPECT_ERRNO(read(fd, buf, sizeof buf), EBADF);
  EXPECT(write(fd, "HE", 2) == 2, "write: %s", errname(errno));
  SYS(close(fd));
  return expect_content("f", "HEllo");
}

static int check_open_rdwr(void) {
  int fd = open("f", O_RDWR | O_CREAT, 0644);
  SYS(fd);
  EXPECT(write(fd, "abcdef", 6) == 6, "write: %s", errname(errno));
  char buf[8] = {0};
  EXPECT(pread(fd, buf, 3, 2) == 3 && memcmp(buf, "cde", 3) == 0, "pread got \"%s\"", buf);
  EXPECT(pwrite(fd, "XY", 2, 1) == 2, "pwrite: %s", errname(errno));
  SYS(close(fd));
  return expect_content("f", "aXYdef");
}

static int check_open_creat_mode(void) {
  int fd = open("f", O_WRONLY | O_CREAT, 0640);
  SYS(fd);
  SYS(close(fd));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT(S_ISREG(st.st_mode) && (st.st_mode & 07777) == 0640, "mode %o, expected 100640", st.st_mode);
  EXPECT(st.st_size == 0, "size %lld", (long long)st.st_size);
  EXPECT(st.st_uid == 0 && st.st_gid == 0, "owner %u:%u, expected 0:0", st.st_uid, st.st_gid);
  return PASS;
}

static int check_open_creat_excl(void) {
  int fd = open("f", O_WRONLY | O_CREAT | O_EXCL, 0644);
  SYS(fd);
  SYS(close(fd));
  EXPECT_ERRNO(open("f", O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
  SYS(symlink("f", "l"));
  EXPECT_ERRNO(open("l", O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
  SYS(symlink("missing", "dangling"));
  EXPECT_ERRNO(open("dangling", O_WRONLY | O_CREAT | O_EXCL, 0644), EEXIST);
  return PASS;
}

static int check_open_trunc(void) {
  SYS(write_file("f", "0123456789", 10, 0644));
  int fd = open("f", O_WRONLY | O_TRUNC);
  SYS(fd);
  struct stat st;
  SYS(fstat(fd, &st));
  EXPECT(st.st_size == 0, "size after O_TRUNC is %lld", (long long)st.st_size);
  EXPECT(write(fd, "ab", 2) == 2, "write: %s", errname(errno));
  SYS(close(fd));
  return expect_content("f", "ab");
}

static int check_open_append(void) {
  SYS(write_file("f", "a", 1, 0644));
  int fd1 = open("f", O_WRONLY | O_APPEND);
  SYS(fd1);
  int fd2 = open("f", O_WRONLY | O_APPEND);
  SYS(fd2);
  EXPECT(write(fd1, "b", 1) == 1, "write: %s", errname(errno));
  EXPECT(write(fd2, "c", 1) == 1, "write: %s", errname(errno));
  EXPECT(write(fd1, "d", 1) == 1, "write: %s", errname(errno));
  /* On Linux, pwrite on an O_APPEND descriptor appends too. */
  EXPECT(pwrite(fd2, "e", 1, 0) == 1, "pwrite: %s", errname(errno));
  off_t pos = lseek(fd1, 0, SEEK_CUR);
  SYS(close(fd1));
  SYS(close(fd2));
  EXPECT(pos == 4, "offset after appends %lld, expected 4", (long long)pos);
  return expect_content("f", "abcde");
}

static int check_open_directory_on_file(void) {
  SYS(write_file("f", "x", 1, 0644));
  EXPECT_ERRNO(open("f", O_RDONLY | O_DIRECTORY), ENOTDIR);
  SYS(mkdir("d", 0755));
  int fd = open("d", O_RDONLY | O_DIRECTORY);
  SYS(fd);
  SYS(close(fd));
  EXPECT_ERRNO(open("d", O_WRONLY), EISDIR);
  return PASS;
}

static int check_open_nofollow_symlink(void) {
  SYS(write_file("f", "x", 1, 0644));
  SYS(symlink("f", "l"));
  EXPECT_ERRNO(open("l", O_RDONLY | O_NOFOLLOW), ELOOP);
  int fd = open("l", O_RDONLY | O_NOFOLLOW | O_PATH);
  SYS(fd);
  SYS(close(fd));
  fd = open("f", O_RDONLY | O_NOFOLLOW);
  SYS(fd);
  SYS(close(fd));
  return PASS;
}

static int sync_write(int flag) {
  int fd = open("f", O_RDWR | O_CREAT | flag, 0644);
  SYS(fd);
  int fl = fcntl(fd, F_GETFL);
  SYS(fl);
  EXPECT((fl & flag) == flag, "F_GETFL 0%o lacks 0%o", fl, flag);
  for (int i = 0; i < 16; i++) EXPECT(write(fd, "0123456789abcdef", 16) == 16, "write %d: %s", i, errname(errno));
  char buf[16];
  EXPECT(pread(fd, buf, 16, 240) == 16 && memcmp(buf, "0123456789abcdef", 16) == 0, "pread after write");
  SYS(close(fd));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT(st.st_size == 256, "size %lld", (long long)st.st_size);
  return PASS;
}
static int check_open_sync(void) { return sync_write(O_SYNC); }
static int check_open_dsync(void) { return sync_write(O_DSYNC); }

static int check_open_nonblock(void) {
  int fd = open("f", O_RDWR | O_CREAT | O_NONBLOCK, 0644);
  SYS(fd);
  EXPECT(write(fd, "nb", 2) == 2, "write: %s", errname(errno));
  char buf[4];
  EXPECT(pread(fd, buf, 2, 0) == 2 && memcmp(buf, "nb", 2) == 0, "pread");
  EXPECT(fcntl(fd, F_GETFL) & O_NONBLOCK, "O_NONBLOCK not reported by F_GETFL");
  SYS(close(fd));
  return PASS;
}

static int check_open_noatime(void) {
  SYS(write_file("f", "x", 1, 0644));
  int fd = open("f", O_RDONLY | O_NOATIME);
  SYS(fd); /* permitted: we are the owner (root) */
  char c;
  EXPECT(read(fd, &c, 1) == 1, "read: %s", errname(errno));
  SYS(close(fd));
  /* Not permitted for a non-owner without CAP_FOWNER: EPERM (decided by the guest kernel). */
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(65534) < 0 || setuid(65534) < 0) _exit(fail("setuid: %s", errname(errno)));
    errno = 0;
    int r = open("f", O_RDONLY | O_NOATIME);
    if (r >= 0 || errno != EPERM) _exit(fail("O_NOATIME as non-owner: %s, expected EPERM", r >= 0 ? "ok" : errname(errno)));
    _exit(PASS);
  }
  return wait_child(pid);
}

static int check_open_cloexec(void) {
  int fd = open("f", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  SYS(fd);
  int fdflags = fcntl(fd, F_GETFD);
  EXPECT(fdflags >= 0 && (fdflags & FD_CLOEXEC), "FD_CLOEXEC not set (F_GETFD %d)", fdflags);
  SYS(close(fd));
  fd = open("f", O_RDWR);
  SYS(fd);
  EXPECT((fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0, "FD_CLOEXEC set without O_CLOEXEC");
  SYS(close(fd));
  return PASS;
}

/* ---- links, names ------------------------------------------------------------------------------------- */

static int check_nlink_file(void) {
  SYS(write_file("f", "x", 1, 0644));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT(st.st_nlink == 1, "new file nlink %lu, expected 1", (unsigned long)st.st_nlink);
  SYS(link("f", "g"));
  SYS(stat("f", &st));
  EXPECT(st.st_nlink == 2, "nlink after link() %lu, expected 2", (unsigned long)st.st_nlink);
  SYS(unlink("g"));
  SYS(stat("f", &st));
  EXPECT(st.st_nlink == 1, "nlink after unlink() %lu, expected 1", (unsigned long)st.st_nlink);
  return PASS;
}

static int check_nlink_dir(void) {
  SYS(mkdir("d", 0755));
  struct stat st;
  SYS(stat("d", &st));
  EXPECT(st.st_nlink == 2, "empty dir nlink %lu, expected 2", (unsigned long)st.st_nlink);
  SYS(mkdir("d/a", 0755));
  SYS(mkdir("d/b", 0755));
  SYS(mkdir("d/c", 0755));
  SYS(write_file("d/file", "x", 1, 0644));
  SYS(stat("d", &st));
  EXPECT(st.st_nlink == 5, "dir with 3 subdirs nlink %lu, expected 5", (unsigned long)st.st_nlink);
  return PASS;
}

static int check_hardlink_shared_content(void) {
  SYS(write_file("f", "one", 3, 0644));
  SYS(link("f", "g"));
  struct stat a, b;
  SYS(stat("f", &a));
  SYS(stat("g", &b));
  EXPECT(a.st_ino == b.st_ino, "inode numbers differ: %llu vs %llu", (unsigned long long)a.st_ino,
         (unsigned long long)b.st_ino);
  int fd = open("g", O_WRONLY | O_APPEND);
  SYS(fd);
  EXPECT(write(fd, "two", 3) == 3, "write: %s", errname(errno));
  SYS(close(fd));
  if (expect_content("f", "onetwo") != PASS) return FAIL;
  SYS(unlink("f"));
  return expect_content("g", "onetwo");
}

static int check_rename_replace_file(void) {
  SYS(write_file("a", "AAAA", 4, 0644));
  SYS(write_file("b", "BB", 2, 0644));
  struct stat sa;
  SYS(stat("a", &sa));
  int old = open("b", O_RDONLY);
  SYS(old);
  SYS(rename("a", "b"));
  struct stat st;
  EXPECT_ERRNO(stat("a", &st), ENOENT);
  SYS(stat("b", &st));
  EXPECT(st.st_ino == sa.st_ino, "replaced name has inode %llu, expected %llu", (unsigned long long)st.st_ino,
         (unsigned long long)sa.st_ino);
  if (expect_content("b", "AAAA") != PASS) return FAIL;
  char buf[4] = {0};
  EXPECT(pread(old, buf, 4, 0) == 2 && memcmp(buf, "BB", 2) == 0, "open fd of the replaced file reads \"%s\"", buf);
  SYS(close(old));
  /* Renaming onto itself (hard link to the same inode) is a no-op. */
  SYS(link("b", "c"));
  SYS(rename("b", "c"));
  SYS(stat("b", &st));
  return PASS;
}

static int check_rename_dir(void) {
  SYS(mkdir("d1", 0755));
  SYS(mkdir("d1/sub", 0755));
  SYS(write_file("d1/sub/f", "deep", 4, 0644));
  SYS(rename("d1", "d2"));
  struct stat st;
  EXPECT_ERRNO(stat("d1", &st), ENOENT);
  if (expect_content("d2/sub/f", "deep") != PASS) return FAIL;
  SYS(mkdir("empty", 0755));
  SYS(rename("d2", "empty")); /* over an empty directory: allowed */
  if (expect_content("empty/sub/f", "deep") != PASS) return FAIL;
  SYS(mkdir("other", 0755));
  SYS(rename("empty/sub", "other/moved")); /* across directories */
  if (expect_content("other/moved/f", "deep") != PASS) return FAIL;
  SYS(mkdir("full", 0755));
  SYS(write_file("full/x", "", 0, 0644));
  errno = 0;
  int r = rename("other", "full");
  EXPECT(r < 0 && (errno == ENOTEMPTY || errno == EEXIST), "rename over a non-empty dir: %s, expected ENOTEMPTY",
         r == 0 ? "succeeded" : errname(errno));
  EXPECT_ERRNO(rename("other", "other/moved/inside"), EINVAL);
  return PASS;
}

static int check_unlink_while_open(void) {
  int fd = open("f", O_RDWR | O_CREAT, 0644);
  SYS(fd);
  EXPECT(write(fd, "before", 6) == 6, "write: %s", errname(errno));
  SYS(unlink("f"));
  struct stat st;
  EXPECT_ERRNO(stat("f", &st), ENOENT);
  EXPECT(pwrite(fd, "-after", 6, 6) == 6, "pwrite after unlink: %s", errname(errno));
  char buf[16] = {0};
  EXPECT(pread(fd, buf, sizeof buf, 0) == 12 && memcmp(buf, "before-after", 12) == 0,
         "pread after unlink: \"%s\" (%s)", buf, errname(errno));
  SYS(fstat(fd, &st));
  EXPECT(st.st_size == 12, "fstat after unlink: size %lld", (long long)st.st_size);
  EXPECT(st.st_nlink == 0, "fstat after unlink: nlink %lu, expected 0", (unsigned long)st.st_nlink);
  SYS(ftruncate(fd, 3));
  SYS(fstat(fd, &st));
  EXPECT(st.st_size == 3, "size after ftruncate %lld", (long long)st.st_size);
  SYS(fchmod(fd, 0600));
  SYS(fstat(fd, &st));
  EXPECT((st.st_mode & 07777) == 0600, "mode after fchmod %o", st.st_mode);
  SYS(close(fd));
  return PASS;
}

static int check_mkfifo(void) {
  SYS(mkfifo("p", 0644));
  struct stat st;
  SYS(stat("p", &st));
  EXPECT(S_ISFIFO(st.st_mode), "mode %o is not S_IFIFO", st.st_mode);
  EXPECT((st.st_mode & 07777) == 0644, "permissions %o", st.st_mode & 07777);
  /* The FIFO works as a pipe inside the guest. */
  int r = open("p", O_RDONLY | O_NONBLOCK);
  SYS(r);
  int w = open("p", O_WRONLY | O_NONBLOCK);
  SYS(w);
  EXPECT(write(w, "fifo", 4) == 4, "write: %s", errname(errno));
  char buf[8] = {0};
  EXPECT(read(r, buf, sizeof buf) == 4 && memcmp(buf, "fifo", 4) == 0, "read \"%s\"", buf);
  close(r);
  close(w);
  return PASS;
}

static int check_mknod_fifo(void) {
  SYS(mknod("p", S_IFIFO | 0600, 0));
  struct stat st;
  SYS(lstat("p", &st));
  EXPECT(S_ISFIFO(st.st_mode), "mode %o is not S_IFIFO", st.st_mode);
  SYS(mknod("r", S_IFREG | 0600, 0));
  SYS(lstat("r", &st));
  EXPECT(S_ISREG(st.st_mode) && st.st_size == 0, "mknod S_IFREG gave mode %o", st.st_mode);
  return PASS;
}

static int check_mknod_chr(void) {
  errno = 0;
  if (mknod("c", S_IFCHR | 0600, makedev(1, 3)) < 0) {
    int e = errno;
    if (e == EPERM || e == EACCES || e == EOPNOTSUPP) {
      note("server refused mknod of a char device: %s", errname(e));
      return PASS;
    }
    return fail("mknod S_IFCHR: %s (expected success or a clean EPERM/EACCES/EOPNOTSUPP)", errname(e));
  }
  struct stat st;
  SYS(lstat("c", &st));
  EXPECT(S_ISCHR(st.st_mode), "mode %o is not S_IFCHR", st.st_mode);
  EXPECT(major(st.st_rdev) == 1 && minor(st.st_rdev) == 3, "rdev %u:%u, expected 1:3", major(st.st_rdev),
         minor(st.st_rdev));
  note("server created char device 1:3");
  SYS(unlink("c"));
  return PASS;
}

static int check_symlink_readlink(void) {
  const char *target = "some/where/../target-with-a-long-name";
  SYS(symlink(target, "l"));
  char buf[256];
  ssize_t n = readlink("l", buf, sizeof buf);
  SYS(n);
  EXPECT((size_t)n == strlen(target) && memcmp(buf, target, (size_t)n) == 0, "readlink \"%.*s\"", (int)n, buf);
  struct stat st;
  SYS(lstat("l", &st));
  EXPECT(S_ISLNK(st.st_mode), "lstat mode %o", st.st_mode);
  EXPECT(st.st_size == (off_t)strlen(target), "lstat size %lld", (long long)st.st_size);
  EXPECT_ERRNO(stat("l", &st), ENOENT);
  SYS(write_file("file", "via link", 8, 0644));
  SYS(symlink("file", "good"));
  if (expect_content("good", "via link") != PASS) return FAIL;
  EXPECT_ERRNO(readlink("file", buf, sizeof buf), EINVAL);
  EXPECT_ERRNO(symlink("x", "good"), EEXIST);
  return PASS;
}

static int check_name_max(void) {
  char name[300];
  memset(name, 'n', 255);
  name[255] = 0;
  SYS(write_file(name, "x", 1, 0644));
  struct stat st;
  SYS(stat(name, &st));
  name[255] = 'n';
  name[256] = 0;
  EXPECT_ERRNO(open(name, O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
  return PASS;
}

/* ---- the guest's view of a mapped share ------------------------------------------------------------------
 * The server keeps special files, setuid bits and privileged xattrs in records on the host (the host gets plain
 * files); inside the guest they must behave as usual. These checks leave their objects in place: the test on the
 * host then checks what the host got (battery.test.ts, "host view"). */

static int check_mapped_special_files(void) {
  SYS(mknod("blk", S_IFBLK | 0600, makedev(7, 0)));
  SYS(chmod("blk", 0666));
  struct stat st;
  SYS(lstat("blk", &st));
  EXPECT(S_ISBLK(st.st_mode) && (st.st_mode & 07777) == 0666, "blk mode %o", st.st_mode);
  EXPECT(major(st.st_rdev) == 7 && minor(st.st_rdev) == 0, "blk rdev %u:%u", major(st.st_rdev), minor(st.st_rdev));
  /* A character device made here is the guest's own device: 1:3 is the guest's /dev/null. */
  SYS(mknod("chr", S_IFCHR | 0666, makedev(1, 3)));
  SYS(lstat("chr", &st));
  EXPECT(S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3, "chr mode %o rdev %u:%u",
         st.st_mode, major(st.st_rdev), minor(st.st_rdev));
  int fd = open("chr", O_RDWR);
  SYS(fd);
  EXPECT(write(fd, "discarded", 9) == 9, "write to the guest's null device: %s", errname(errno));
  char b[4];
  EXPECT(read(fd, b, sizeof b) == 0, "read from the guest's null device");
  SYS(close(fd));
  SYS(mkfifo("fifo", 0640));
  SYS(lstat("fifo", &st));
  EXPECT(S_ISFIFO(st.st_mode) && (st.st_mode & 07777) == 0640, "fifo mode %o", st.st_mode);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  SYS(s);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  strcpy(addr.sun_path, "sock");
  SYS(bind(s, (struct sockaddr *)&addr, sizeof addr));
  SYS(close(s));
  SYS(lstat("sock", &st));
  EXPECT(S_ISSOCK(st.st_mode), "sock mode %o", st.st_mode);
  /* Renames and hard links keep the type (the record belongs to the inode). */
  SYS(rename("fifo", "fifo2"));
  SYS(link("blk", "blk-link"));
  SYS(lstat("fifo2", &st));
  EXPECT(S_ISFIFO(st.st_mode), "renamed fifo mode %o", st.st_mode);
  SYS(lstat("blk-link", &st));
  EXPECT(S_ISBLK(st.st_mode) && st.st_nlink == 2, "linked blk mode %o nlink %lu", st.st_mode,
         (unsigned long)st.st_nlink);
  return PASS;
}

static int check_mapped_setuid(void) {
  int fd = open("suid", O_CREAT | O_WRONLY, 04755);
  SYS(fd);
  SYS(close(fd));
  struct stat st;
  SYS(stat("suid", &st));
  EXPECT((st.st_mode & 07777) == 04755, "created with 04755, mode %o", st.st_mode & 07777);
  SYS(write_file("sgid", "x", 1, 0755));
  SYS(chown("sgid", 0, 0));
  SYS(chmod("sgid", 02755));
  SYS(stat("sgid", &st));
  EXPECT((st.st_mode & 07777) == 02755, "chmod 02755, mode %o", st.st_mode & 07777);
  SYS(mkdir("shared", 0775));
  SYS(chmod("shared", 02775));
  SYS(stat("shared", &st));
  EXPECT(S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 02775, "setgid directory mode %o", st.st_mode & 07777);
  SYS(write_file("mine", "x", 1, 0644));
  SYS(chown("mine", 1000, 1000));
  SYS(chmod("mine", 06755));
  SYS(stat("mine", &st));
  EXPECT(st.st_uid == 1000 && st.st_gid == 1000 && (st.st_mode & 07777) == 06755, "mine %u:%u %o", st.st_uid,
         st.st_gid, st.st_mode & 07777);
  return PASS;
}

static int check_mapped_privileged_xattrs(void) {
  /* vfs_cap_data v2, effective, cap_setuid + cap_setgid: what `setcap cap_setuid,cap_setgid=ep` writes. */
  unsigned char cap[20] = {0x01, 0x00, 0x00, 0x02, 0xc0, 0, 0, 0};
  SYS(write_file("capbin", "x", 1, 0755));
  SYS(setxattr("capbin", "security.capability", cap, sizeof cap, 0));
  unsigned char got[64];
  ssize_t n = getxattr("capbin", "security.capability", got, sizeof got);
  SYS(n);
  EXPECT(n == (ssize_t)sizeof cap && memcmp(got, cap, sizeof cap) == 0, "security.capability read back %zd bytes", n);
  SYS(mkdir("opaque", 0755));
  SYS(setxattr("opaque", "trusted.overlay.opaque", "y", 1, 0));
  char v[8];
  n = getxattr("opaque", "trusted.overlay.opaque", v, sizeof v);
  EXPECT(n == 1 && v[0] == 'y', "trusted.overlay.opaque read back %zd", n);
  SYS(setxattr("capbin", "user.plain", "u", 1, 0));
  char list[1024];
  n = listxattr("capbin", list, sizeof list);
  SYS(n);
  int seen_cap = 0, seen_user = 0, seen_ours = 0;
  for (char *p = list; p < list + n; p += strlen(p) + 1) {
    if (strcmp(p, "security.capability") == 0) seen_cap++;
    if (strcmp(p, "user.plain") == 0) seen_user++;
    if (strncmp(p, "user.lcow.", 10) == 0) seen_ours++;
  }
  EXPECT(seen_cap == 1 && seen_user == 1 && seen_ours == 0, "listxattr: cap %d user %d server-internal %d", seen_cap,
         seen_user, seen_ours);
  SYS(removexattr("capbin", "user.plain"));
  return PASS;
}

/* ---- xattrs ------------------------------------------------------------------------------------------- */

static int check_xattr_set_get(void) {
  SYS(write_file("f", "", 0, 0644));
  SYS(setxattr("f", "user.test", "value-1", 7, 0));
  char buf[8192];
  ssize_t n = getxattr("f", "user.test", NULL, 0);
  EXPECT(n == 7, "size query returned %zd (%s)", n, errname(errno));
  n = getxattr("f", "user.test", buf, sizeof buf);
  EXPECT(n == 7 && memcmp(buf, "value-1", 7) == 0, "getxattr returned %zd", n);
  EXPECT_ERRNO(getxattr("f", "user.test", buf, 3), ERANGE);
  SYS(setxattr("f", "user.test", "v2", 2, 0)); /* overwrite */
  n = getxattr("f", "user.test", buf, sizeof buf);
  EXPECT(n == 2 && memcmp(buf, "v2", 2) == 0, "after overwrite getxattr returned %zd", n);
  char big[2048];
  for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7);
  SYS(setxattr("f", "user.big", big, sizeof big, 0));
  n = getxattr("f", "user.big", buf, sizeof buf);
  EXPECT(n == (ssize_t)sizeof big && memcmp(buf, big, sizeof big) == 0, "2 KiB value read back %zd bytes", n);
  /* No empty value: 9P2000.L cannot tell setxattr(name, "", 0) from removexattr (a 0-byte Txattrcreate). */
  EXPECT_ERRNO(getxattr("f", "user.missing", buf, sizeof buf), ENODATA);
  return PASS;
}

static int check_xattr_list(void) {
  SYS(write_file("f", "", 0, 0644));
  SYS(setxattr("f", "user.one", "1", 1, 0));
  SYS(setxattr("f", "user.two", "22", 2, 0));
  char buf[4096];
  ssize_t n = listxattr("f", NULL, 0);
  SYS(n);
  n = listxattr("f", buf, sizeof buf);
  SYS(n);
  int one = 0, two = 0;
  for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) {
    if (strcmp(buf + i, "user.one") == 0) one++;
    if (strcmp(buf + i, "user.two") == 0) two++;
  }
  EXPECT(one == 1 && two == 1, "listxattr saw user.one %d times, user.two %d times", one, two);
  SYS(mkdir("d", 0755));
  SYS(setxattr("d", "user.dir", "d", 1, 0));
  n = getxattr("d", "user.dir", buf, sizeof buf);
  EXPECT(n == 1 && buf[0] == 'd', "xattr on a directory read back %zd", n);
  return PASS;
}

static int check_xattr_remove(void) {
  SYS(write_file("f", "", 0, 0644));
  SYS(setxattr("f", "user.gone", "x", 1, 0));
  SYS(removexattr("f", "user.gone"));
  char buf[16];
  EXPECT_ERRNO(getxattr("f", "user.gone", buf, sizeof buf), ENODATA);
  EXPECT_ERRNO(removexattr("f", "user.gone"), ENODATA);
  int fd = open("f", O_RDWR);
  SYS(fd);
  SYS(fsetxattr(fd, "user.fd", "y", 1, 0));
  EXPECT(fgetxattr(fd, "user.fd", buf, sizeof buf) == 1, "fgetxattr: %s", errname(errno));
  SYS(fremovexattr(fd, "user.fd"));
  EXPECT_ERRNO(fgetxattr(fd, "user.fd", buf, sizeof buf), ENODATA);
  SYS(close(fd));
  return PASS;
}

static int check_xattr_create_existing(void) {
  SYS(write_file("f", "", 0, 0644));
  SYS(setxattr("f", "user.x", "1", 1, XATTR_CREATE));
  EXPECT_ERRNO(setxattr("f", "user.x", "2", 1, XATTR_CREATE), EEXIST);
  char buf[4];
  EXPECT(getxattr("f", "user.x", buf, sizeof buf) == 1 && buf[0] == '1', "value changed by a failed XATTR_CREATE");
  return PASS;
}

static int check_xattr_replace_missing(void) {
  SYS(write_file("f", "", 0, 0644));
  EXPECT_ERRNO(setxattr("f", "user.none", "1", 1, XATTR_REPLACE), ENODATA);
  SYS(setxattr("f", "user.some", "1", 1, 0));
  SYS(setxattr("f", "user.some", "2", 1, XATTR_REPLACE));
  char buf[4];
  EXPECT(getxattr("f", "user.some", buf, sizeof buf) == 1 && buf[0] == '2', "XATTR_REPLACE did not replace");
  return PASS;
}

/* ---- locks: between two processes on one mount, and across two mounts (two 9P connections) --------------- */

/* pa: the holder's path; pb: the same file as the other process sees it. */
static int fcntl_conflict(const char *pa, const char *pb, int cross) {
  SYS(write_file(pa, "0123456789", 10, 0644));
  int fd = open(pa, O_RDWR);
  SYS(fd);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 5};
  SYS(fcntl(fd, F_SETLK, &fl));
  pid_t holder = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    int fd2 = open(pb, O_RDWR);
    if (fd2 < 0) _exit(fail("open %s: %s", pb, errname(errno)));
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
    if (fcntl(fd2, F_GETLK, &q) < 0) _exit(fail("F_GETLK: %s", errname(errno)));
    if (q.l_type != F_WRLCK) _exit(fail("F_GETLK reports type %d, expected F_WRLCK (the holder's lock)", q.l_type));
    if (q.l_start != 0 || q.l_len != 5)
      _exit(fail("F_GETLK reports range %lld+%lld, expected 0+5", (long long)q.l_start, (long long)q.l_len));
    if (!cross && q.l_pid != holder) _exit(fail("F_GETLK reports pid %d, expected %d", q.l_pid, holder));
    struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 2, .l_len = 2};
    errno = 0;
    if (fcntl(fd2, F_SETLK, &w) == 0) _exit(fail("F_SETLK on a locked range succeeded"));
    if (errno != EAGAIN && errno != EACCES) _exit(fail("F_SETLK conflict: %s, expected EAGAIN", errname(errno)));
    struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 4, .l_len = 1};
    errno = 0;
    if (fcntl(fd2, F_SETLK, &r) == 0) _exit(fail("F_RDLCK on a write-locked byte succeeded"));
    struct flock other = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 5};
    if (fcntl(fd2, F_SETLK, &other) < 0)
      _exit(fail("F_SETLK on the unlocked range 5+5: %s (byte ranges not honoured?)", errname(errno)));
    _exit(PASS);
  }
  int r = wait_child(pid);
  if (r != PASS) return r;
  fl.l_type = F_UNLCK;
  SYS(fcntl(fd, F_SETLK, &fl));
  pid = fork();
  if (pid == 0) {
    int fd2 = open(pb, O_RDWR);
    struct flock all = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fd2 < 0 || fcntl(fd2, F_SETLK, &all) < 0) _exit(fail("F_SETLK after unlock: %s", errname(errno)));
    _exit(PASS);
  }
  r = wait_child(pid);
  close(fd);
  return r;
}

#define HOLD_SECONDS 1.0
#define MAX_WAIT_SECONDS 5.0

/* The holder keeps a whole-file write lock for HOLD_SECONDS after the waiter blocked; the waiter's F_SETLKW (or
 * flock LOCK_EX) must be granted promptly after the release. */
static int blocking_lock(const char *pa, const char *pb, int use_flock) {
  SYS(write_file(pa, "lock", 4, 0644));
  int fd = open(pa, O_RDWR);
  SYS(fd);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
  if (use_flock)
    SYS(flock(fd, LOCK_EX));
  else
    SYS(fcntl(fd, F_SETLK, &fl));
  int sync[2], res[2];
  SYS(pipe(sync));
  SYS(pipe(res));
  pid_t pid = fork();
  if (pid == 0) {
    alarm(90);
    int fd2 = open(pb, O_RDWR);
    if (fd2 < 0) _exit(fail("open %s: %s", pb, errname(errno)));
    if (use_flock) {
      errno = 0;
      if (flock(fd2, LOCK_EX | LOCK_NB) == 0) _exit(fail("flock LOCK_EX|LOCK_NB on a locked file succeeded"));
      if (errno != EWOULDBLOCK) _exit(fail("flock LOCK_NB conflict: %s, expected EWOULDBLOCK", errname(errno)));
    } else {
      struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
      errno = 0;
      if (fcntl(fd2, F_SETLK, &w) == 0) _exit(fail("F_SETLK on a locked file succeeded"));
    }
    (void)!write(sync[1], "r", 1);
    double t0 = now_seconds();
    int rc;
    if (use_flock) {
      rc = flock(fd2, LOCK_EX);
    } else {
      struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
      rc = fcntl(fd2, F_SETLKW, &w);
    }
    double waited = now_seconds() - t0;
    if (rc < 0) _exit(fail("blocking lock: %s after %.2f s", errname(errno), waited));
    (void)!write(res[1], &waited, sizeof waited);
    _exit(PASS);
  }
  close(sync[1]);
  close(res[1]);
  char c;
  if (read(sync[0], &c, 1) != 1) return wait_child(pid) == PASS ? fail("waiter exited early") : FAIL;
  usleep((useconds_t)(HOLD_SECONDS * 1e6));
  if (use_flock)
    SYS(flock(fd, LOCK_UN));
  else {
    fl.l_type = F_UNLCK;
    SYS(fcntl(fd, F_SETLK, &fl));
  }
  int r = wait_child(pid);
  if (r != PASS) return r;
  double waited = -1;
  if (read(res[0], &waited, sizeof waited) != sizeof waited) return fail("waiter reported nothing");
  note("waited %.2f s for a lock released after %.1f s", waited, HOLD_SECONDS);
  EXPECT(waited >= HOLD_SECONDS * 0.8, "waiter got the lock after %.2f s, before the holder released it", waited);
  EXPECT(waited < MAX_WAIT_SECONDS, "waiter got the lock %.2f s after blocking (holder released after %.1f s)",
         waited, HOLD_SECONDS);
  close(fd);
  return PASS;
}

static int check_lock_fcntl_conflict(void) { return fcntl_conflict("f", "f", 0); }
static int check_lock_setlkw_prompt(void) { return blocking_lock("f", "f", 0); }
static int check_lock_flock_ex(void) { return blocking_lock("f", "f", 1); }

static const char *need_peer(const char *rel) {
  const char *p = peer_path(rel);
  return p ? strdup(p) : NULL;
}
static int check_lock_crossmount_conflict(void) {
  const char *pb = need_peer("f");
  if (!pb) return skip("no second mount of the export (P9_PEER unset)");
  return fcntl_conflict("f", pb, 1);
}
static int check_lock_crossmount_setlkw_prompt(void) {
  const char *pb = need_peer("f");
  if (!pb) return skip("no second mount of the export (P9_PEER unset)");
  return blocking_lock("f", pb, 0);
}
static int check_lock_crossmount_flock_ex(void) {
  const char *pb = need_peer("f");
  if (!pb) return skip("no second mount of the export (P9_PEER unset)");
  return blocking_lock("f", pb, 1);
}

/* Two mounts of one export (two 9P connections, cache=none) see each other's changes at once: data written
 * through one is read through the other, also through a file the other had open before; creates, renames,
 * mode changes and unlinks show up in lookups and listings. Nothing the server keeps per connection (fds,
 * directory reading) may hide them. */
static int dir_lists(const char *dir, const char *name) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *e;
  int found = 0;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, name) == 0) found = 1;
  closedir(d);
  return found;
}

static int check_crossmount_coherence(void) {
  const char *pf = need_peer("f"), *pg = need_peer("g"), *pd = need_peer("d"), *pdir = need_peer("");
  if (!pf || !pg || !pd || !pdir) return skip("no second mount of the export (P9_PEER unset)");
  char buf[64];
  struct stat st;
  SYS(write_file("f", "one", 3, 0644));
  if (expect_content(pf, "one") != PASS) return FAIL;
  int a = open("f", O_RDONLY); /* open on this mount before the other one changes the file */
  SYS(a);
  SYS(write_file(pf, "two!!", 5, 0644));
  if (expect_content("f", "two!!") != PASS) return FAIL;
  int b = open(pf, O_WRONLY);
  SYS(b);
  EXPECT(pwrite(b, "3", 1, 5) == 1, "pwrite on the peer: %s", errname(errno));
  SYS(close(b));
  ssize_t n = pread(a, buf, sizeof buf, 0);
  EXPECT(n == 6 && memcmp(buf, "two!!3", 6) == 0, "the file open before read %zd bytes \"%.*s\"", n, (int)(n > 0 ? n : 0), buf);
  SYS(fstat(a, &st));
  EXPECT(st.st_size == 6, "fstat of the file open before: size %lld, expected 6", (long long)st.st_size);
  SYS(mkdir(pd, 0755));
  SYS(stat("d", &st));
  EXPECT(S_ISDIR(st.st_mode), "a directory made on the peer is not a directory here (mode %o)", st.st_mode);
  EXPECT(dir_lists(".", "d") == 1, "a directory made on the peer is not listed here");
  SYS(rename("f", "g"));
  EXPECT_ERRNO(stat(pf, &st), ENOENT);
  SYS(stat(pg, &st));
  EXPECT(st.st_size == 6, "the renamed file on the peer: size %lld", (long long)st.st_size);
  EXPECT(dir_lists(pdir, "g") == 1 && dir_lists(pdir, "f") == 0, "the peer's listing does not show the rename");
  SYS(chmod(pg, 0600));
  SYS(stat("g", &st));
  EXPECT((st.st_mode & 07777) == 0600, "mode %o after a chmod on the peer, expected 600", st.st_mode & 07777);
  struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 0}, {.tv_sec = 1000000000, .tv_nsec = 0}};
  SYS(utimensat(AT_FDCWD, "d", ts, 0));
  SYS(stat(pd, &st));
  EXPECT(st.st_mtim.tv_sec == 1000000000, "the peer sees mtime %lld after utimensat here", (long long)st.st_mtim.tv_sec);
  SYS(unlink(pg));
  n = pread(a, buf, sizeof buf, 0);
  EXPECT(n == 6 && memcmp(buf, "two!!3", 6) == 0, "the open file after its unlink on the peer read %zd bytes", n);
  /* Once closed, its dentry goes (cache=none keeps no unused dentry): the lookup asks the server. */
  SYS(close(a));
  EXPECT_ERRNO(stat("g", &st), ENOENT);
  EXPECT(dir_lists(".", "g") == 0, "a file unlinked on the peer is still listed here");
  return PASS;
}

/* ---- sizes, times, modes ------------------------------------------------------------------------------ */

static int check_truncate_grow_shrink(void) {
  SYS(write_file("f", "abcdef", 6, 0644));
  SYS(truncate("f", 100000));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT(st.st_size == 100000, "size after truncate grow %lld", (long long)st.st_size);
  static char buf[100001];
  ssize_t n = read_file("f", buf, sizeof buf);
  EXPECT(n == 100000, "read %zd bytes", n);
  EXPECT(memcmp(buf, "abcdef", 6) == 0, "data before the hole changed");
  for (int i = 6; i < 100000; i++) EXPECT(buf[i] == 0, "byte %d of the grown region is %d, expected 0", i, buf[i]);
  SYS(truncate("f", 3));
  if (expect_content("f", "abc") != PASS) return FAIL;
  int fd = open("f", O_RDWR);
  SYS(fd);
  SYS(ftruncate(fd, 5000));
  SYS(fstat(fd, &st));
  EXPECT(st.st_size == 5000, "size after ftruncate grow %lld", (long long)st.st_size);
  SYS(ftruncate(fd, 1));
  SYS(fstat(fd, &st));
  EXPECT(st.st_size == 1, "size after ftruncate shrink %lld", (long long)st.st_size);
  SYS(ftruncate(fd, 0));
  SYS(close(fd));
  SYS(stat("f", &st));
  EXPECT(st.st_size == 0, "size after ftruncate 0 %lld", (long long)st.st_size);
  return PASS;
}

static int check_sparse_large_offset(void) {
  int fd = open("f", O_RDWR | O_CREAT, 0644);
  SYS(fd);
  const off_t off = 5LL * 1024 * 1024 * 1024 + 123; /* beyond 4 GiB */
  EXPECT(pwrite(fd, "tail", 4, off) == 4, "pwrite at 5 GiB: %s", errname(errno));
  struct stat st;
  SYS(fstat(fd, &st));
  EXPECT(st.st_size == off + 4, "size %lld, expected %lld", (long long)st.st_size, (long long)(off + 4));
  char buf[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  EXPECT(pread(fd, buf, 4, off) == 4 && memcmp(buf, "tail", 4) == 0, "pread at 5 GiB");
  EXPECT(pread(fd, buf, 8, 4096) == 8, "pread in the hole");
  for (int i = 0; i < 8; i++) EXPECT(buf[i] == 0, "hole byte %d is %d", i, buf[i]);
  EXPECT(lseek(fd, 0, SEEK_END) == off + 4, "SEEK_END");
  SYS(close(fd));
  return PASS;
}

/* v9fs leaves the superblock's time granularity at 1 s, so the guest VFS truncates utimensat times to whole
 * seconds before they reach the server: accept the exact nanoseconds or 0 (and say which). */
static int same_time(const struct timespec *got, const struct timespec *want, int *truncated) {
  if (got->tv_sec != want->tv_sec) return 0;
  if (got->tv_nsec == want->tv_nsec) return 1;
  if (got->tv_nsec == 0) {
    *truncated = 1;
    return 1;
  }
  return 0;
}

static int check_utimensat_explicit(void) {
  int truncated = 0;
  SYS(write_file("f", "x", 1, 0644));
  struct timespec ts[2] = {{.tv_sec = 1000000000, .tv_nsec = 123456789}, {.tv_sec = 1234567890, .tv_nsec = 987654321}};
  SYS(utimensat(AT_FDCWD, "f", ts, 0));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT(same_time(&st.st_atim, &ts[0], &truncated), "atime %lld.%09ld, expected %lld.%09ld",
         (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec, (long long)ts[0].tv_sec, ts[0].tv_nsec);
  EXPECT(same_time(&st.st_mtim, &ts[1], &truncated), "mtime %lld.%09ld, expected %lld.%09ld",
         (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (long long)ts[1].tv_sec, ts[1].tv_nsec);
  /* On a symlink itself, and through an fd. */
  SYS(symlink("f", "l"));
  struct timespec lts[2] = {{.tv_sec = 2000000, .tv_nsec = 0}, {.tv_sec = 3000000, .tv_nsec = 0}};
  SYS(utimensat(AT_FDCWD, "l", lts, AT_SYMLINK_NOFOLLOW));
  SYS(lstat("l", &st));
  EXPECT(st.st_mtim.tv_sec == 3000000, "symlink mtime %lld", (long long)st.st_mtim.tv_sec);
  SYS(stat("f", &st));
  EXPECT(st.st_mtim.tv_sec == ts[1].tv_sec, "AT_SYMLINK_NOFOLLOW changed the target");
  int fd = open("f", O_RDWR);
  SYS(fd);
  struct timespec fts[2] = {{.tv_sec = 1500000000, .tv_nsec = 5}, {.tv_sec = 1600000000, .tv_nsec = 7}};
  SYS(futimens(fd, fts));
  SYS(fstat(fd, &st));
  EXPECT(same_time(&st.st_mtim, &fts[1], &truncated), "futimens mtime %lld.%09ld", (long long)st.st_mtim.tv_sec,
         st.st_mtim.tv_nsec);
  SYS(close(fd));
  if (truncated) note("nanoseconds truncated to whole seconds (guest v9fs time granularity)");
  return PASS;
}

static int check_utimensat_now_omit(void) {
  SYS(write_file("f", "x", 1, 0644));
  struct timespec old[2] = {{.tv_sec = 1000000000, .tv_nsec = 0}, {.tv_sec = 1000000000, .tv_nsec = 0}};
  SYS(utimensat(AT_FDCWD, "f", old, 0));
  struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_NOW}};
  SYS(utimensat(AT_FDCWD, "f", ts, 0));
  struct stat st;
  SYS(stat("f", &st));
  time_t now = time(NULL);
  EXPECT(st.st_atim.tv_sec == 1000000000, "UTIME_OMIT changed atime to %lld", (long long)st.st_atim.tv_sec);
  EXPECT(llabs((long long)(st.st_mtim.tv_sec - now)) < 120, "UTIME_NOW set mtime %lld, now is %lld",
         (long long)st.st_mtim.tv_sec, (long long)now);
  struct timespec ts2[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
  time_t mtime = st.st_mtim.tv_sec;
  SYS(utimensat(AT_FDCWD, "f", ts2, 0));
  SYS(stat("f", &st));
  EXPECT(llabs((long long)(st.st_atim.tv_sec - now)) < 120, "UTIME_NOW set atime %lld", (long long)st.st_atim.tv_sec);
  EXPECT(st.st_mtim.tv_sec == mtime, "UTIME_OMIT changed mtime");
  SYS(utimensat(AT_FDCWD, "f", NULL, 0)); /* both now */
  return PASS;
}

static int check_mtime_on_write(void) {
  SYS(write_file("f", "x", 1, 0644));
  struct timespec old[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
  SYS(utimensat(AT_FDCWD, "f", old, 0));
  int fd = open("f", O_WRONLY | O_APPEND);
  SYS(fd);
  EXPECT(write(fd, "y", 1) == 1, "write");
  SYS(close(fd));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT(st.st_mtim.tv_sec > 1000000000, "mtime not updated by write (%lld)", (long long)st.st_mtim.tv_sec);
  return PASS;
}

static int check_chmod_chown(void) {
  SYS(write_file("f", "x", 1, 0644));
  SYS(chmod("f", 0600));
  struct stat st;
  SYS(stat("f", &st));
  EXPECT((st.st_mode & 07777) == 0600, "mode after chmod %o", st.st_mode & 07777);
  SYS(chmod("f", 04755));
  SYS(stat("f", &st));
  EXPECT((st.st_mode & 07777) == 04755, "mode after chmod 4755: %o", st.st_mode & 07777);
  SYS(chown("f", 1234, 5678));
  SYS(stat("f", &st));
  EXPECT(st.st_uid == 1234 && st.st_gid == 5678, "owner after chown %u:%u", st.st_uid, st.st_gid);
  int fd = open("f", O_RDONLY);
  SYS(fd);
  SYS(fchmod(fd, 0640));
  SYS(fchown(fd, 0, 4321));
  SYS(fstat(fd, &st));
  EXPECT((st.st_mode & 07777) == 0640 && st.st_uid == 0 && st.st_gid == 4321, "after fchmod/fchown %o %u:%u",
         st.st_mode & 07777, st.st_uid, st.st_gid);
  SYS(close(fd));
  SYS(symlink("f", "l"));
  SYS(lchown("l", 42, 43));
  SYS(lstat("l", &st));
  EXPECT(st.st_uid == 42 && st.st_gid == 43, "symlink owner after lchown %u:%u", st.st_uid, st.st_gid);
  SYS(stat("f", &st));
  EXPECT(st.st_uid == 0 && st.st_gid == 4321, "lchown changed the target");
  SYS(mkdir("d", 0700));
  SYS(chmod("d", 01777));
  SYS(stat("d", &st));
  EXPECT((st.st_mode & 07777) == 01777, "dir mode after chmod 1777: %o", st.st_mode & 07777);
  return PASS;
}

/* ---- directories -------------------------------------------------------------------------------------- */

#define NDIRENT 5000

static int check_readdir_5000(void) {
  SYS(mkdir("d", 0755));
  char name[64];
  double t0 = now_seconds();
  for (int i = 0; i < NDIRENT; i++) {
    snprintf(name, sizeof name, "d/entry-%05d", i);
    int fd = open(name, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0) return fail("create %s: %s", name, errname(errno));
    close(fd);
  }
  double t1 = now_seconds();
  static unsigned char seen[NDIRENT];
  for (int pass = 0; pass < 2; pass++) {
    memset(seen, 0, sizeof seen);
    int dots = 0, dotdots = 0;
    DIR *d = opendir("d");
    EXPECT(d, "opendir: %s", errname(errno));
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0) {
        dots++;
        continue;
      }
      if (strcmp(e->d_name, "..") == 0) {
        dotdots++;
        continue;
      }
      int idx;
      char tail;
      if (sscanf(e->d_name, "entry-%5d%c", &idx, &tail) != 1 || idx < 0 || idx >= NDIRENT)
        return fail("unexpected entry \"%s\"", e->d_name);
      if (seen[idx]++) return fail("entry %s seen twice (pass %d)", e->d_name, pass);
      if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN) return fail("%s has d_type %d", e->d_name, e->d_type);
    }
    if (errno) return fail("readdir: %s", errname(errno));
    closedir(d);
    for (int i = 0; i < NDIRENT; i++) EXPECT(seen[i] == 1, "entry-%05d not listed (pass %d)", i, pass);
    EXPECT(dots == 1 && dotdots == 1, "'.' listed %d times, '..' %d times", dots, dotdots);
  }
  double t2 = now_seconds();
  for (int i = 0; i < NDIRENT; i++) {
    snprintf(name, sizeof name, "d/entry-%05d", i);
    SYS(unlink(name));
  }
  double t3 = now_seconds();
  SYS(rmdir("d"));
  note("create %.1f/s, unlink %.1f/s, 2 listings %.2f s", NDIRENT / (t1 - t0), NDIRENT / (t3 - t2), t2 - t1);
  return PASS;
}

static int check_rmdir_errors(void) {
  SYS(mkdir("d", 0755));
  SYS(write_file("d/f", "", 0, 0644));
  errno = 0;
  int r = rmdir("d");
  EXPECT(r < 0 && (errno == ENOTEMPTY || errno == EEXIST), "rmdir of a non-empty dir: %s, expected ENOTEMPTY",
         r == 0 ? "succeeded" : errname(errno));
  EXPECT_ERRNO(rmdir("d/f"), ENOTDIR);
  EXPECT_ERRNO(unlink("d"), EISDIR);
  EXPECT_ERRNO(mkdir("d", 0755), EEXIST);
  EXPECT_ERRNO(rmdir("missing"), ENOENT);
  EXPECT_ERRNO(open("missing/f", O_RDONLY), ENOENT);
  EXPECT_ERRNO(open("d/f/x", O_RDONLY), ENOTDIR);
  SYS(unlink("d/f"));
  SYS(rmdir("d"));
  return PASS;
}

/* ---- data paths --------------------------------------------------------------------------------------- */

static void fill_pattern(unsigned char *buf, size_t len, uint64_t seed) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 1;
  for (size_t i = 0; i < len; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(buf + i, &x, len - i < 8 ? len - i : 8);
  }
}

static int check_mmap_read(void) {
  const size_t len = 3 * 1024 * 1024 + 1000;
  unsigned char *data = malloc(len);
  EXPECT(data, "malloc");
  fill_pattern(data, len, 7);
  SYS(write_file("f", data, len, 0644));
  int fd = open("f", O_RDONLY);
  SYS(fd);
  void *shared = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
  EXPECT(shared != MAP_FAILED, "mmap MAP_SHARED PROT_READ: %s", errname(errno));
  EXPECT(memcmp(shared, data, len) == 0, "MAP_SHARED mapping differs from the file");
  munmap(shared, len);
  void *priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  EXPECT(priv != MAP_FAILED, "mmap MAP_PRIVATE: %s", errname(errno));
  EXPECT(memcmp(priv, data, len) == 0, "MAP_PRIVATE mapping differs from the file");
  ((unsigned char *)priv)[0] ^= 0xff; /* private copy: must not reach the file */
  munmap(priv, len);
  SYS(close(fd));
  unsigned char first;
  EXPECT(read_file("f", &first, 1) == 1 && first == data[0], "MAP_PRIVATE write reached the file");
  free(data);
  return PASS;
}

#define LARGE_MIB 64

static int check_large_file_64m(void) {
  const size_t chunk = 1024 * 1024;
  unsigned char *buf = malloc(chunk);
  EXPECT(buf, "malloc");
  int fd = open("big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
  SYS(fd);
  uint64_t h = FNV_INIT;
  double t0 = now_seconds();
  for (int i = 0; i < LARGE_MIB; i++) {
    fill_pattern(buf, chunk, (uint64_t)i + 1);
    h = fnv1a(h, buf, chunk);
    size_t off = 0;
    while (off < chunk) {
      ssize_t w = write(fd, buf + off, chunk - off);
      if (w <= 0) return fail("write MiB %d: %s", i, w < 0 ? errname(errno) : "0 bytes");
      off += (size_t)w;
    }
  }
  SYS(fsync(fd));
  SYS(close(fd));
  double t1 = now_seconds();
  struct stat st;
  SYS(stat("big", &st));
  EXPECT(st.st_size == (off_t)LARGE_MIB * 1024 * 1024, "size %lld", (long long)st.st_size);
  fd = open("big", O_RDONLY);
  SYS(fd);
  uint64_t h2 = FNV_INIT;
  size_t total = 0;
  for (;;) {
    ssize_t r = read(fd, buf, chunk);
    if (r < 0) return fail("read at %zu: %s", total, errname(errno));
    if (r == 0) break;
    h2 = fnv1a(h2, buf, (size_t)r);
    total += (size_t)r;
  }
  SYS(close(fd));
  double t2 = now_seconds();
  EXPECT(total == (size_t)LARGE_MIB * 1024 * 1024, "read back %zu bytes", total);
  EXPECT(h == h2, "checksum mismatch: wrote %016llx, read %016llx", (unsigned long long)h, (unsigned long long)h2);
  note("write %.1f MB/s, read %.1f MB/s", LARGE_MIB * 1.048576 / (t1 - t0), LARGE_MIB * 1.048576 / (t2 - t1));
  SYS(unlink("big"));
  free(buf);
  return PASS;
}

static int check_statfs(void) {
  struct statfs sf;
  SYS(statfs(".", &sf));
  /* v9fs passes the server's type through: diod answers V9FS_MAGIC, QEMU the host filesystem's magic. */
  EXPECT(sf.f_type != 0, "f_type 0");
  if (sf.f_type != V9FS_MAGIC) note("f_type 0x%lx (the host filesystem's), not V9FS_MAGIC", (unsigned long)sf.f_type);
  EXPECT(sf.f_bsize > 0 && sf.f_blocks > 0, "f_bsize %ld f_blocks %llu", (long)sf.f_bsize,
         (unsigned long long)sf.f_blocks);
  EXPECT(sf.f_bfree <= sf.f_blocks && sf.f_bavail <= sf.f_blocks, "free %llu avail %llu > blocks %llu",
         (unsigned long long)sf.f_bfree, (unsigned long long)sf.f_bavail, (unsigned long long)sf.f_blocks);
  EXPECT(sf.f_namelen >= 255, "f_namelen %ld", (long)sf.f_namelen);
  int fd = open(".", O_RDONLY | O_DIRECTORY);
  SYS(fd);
  struct statfs sf2;
  SYS(fstatfs(fd, &sf2));
  SYS(close(fd));
  return PASS;
}

static int check_fsync_fdatasync(void) {
  int fd = open("f", O_RDWR | O_CREAT, 0644);
  SYS(fd);
  EXPECT(write(fd, "data", 4) == 4, "write");
  SYS(fsync(fd));
  EXPECT(write(fd, "more", 4) == 4, "write");
  SYS(fdatasync(fd));
  SYS(close(fd));
  fd = open("f", O_RDONLY);
  SYS(fd);
  SYS(fsync(fd)); /* on a read-only descriptor: allowed */
  SYS(close(fd));
  int dfd = open(".", O_RDONLY | O_DIRECTORY);
  SYS(dfd);
  SYS(fsync(dfd));
  SYS(close(dfd));
  sync();
  return expect_content("f", "datamore");
}

static int check_access(void) {
  SYS(write_file("f", "secret", 6, 0600));
  SYS(write_file("pub", "public", 6, 0644));
  SYS(write_file("x", "#!/bin/sh\n", 10, 0755));
  SYS(access("f", R_OK | W_OK));
  EXPECT_ERRNO(access("f", X_OK), EACCES); /* root needs an x bit */
  SYS(access("x", X_OK));
  EXPECT_ERRNO(access("missing", F_OK), ENOENT);
  SYS(mkdir("closed", 0700));
  SYS(chmod(".", 0755));
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(65534) < 0 || setuid(65534) < 0) _exit(fail("setuid: %s", errname(errno)));
    errno = 0;
    if (open("f", O_RDONLY) >= 0 || errno != EACCES) _exit(fail("open 0600 root file as nobody: %s", errname(errno)));
    if (access("f", R_OK) == 0 || errno != EACCES) _exit(fail("access 0600 root file as nobody: %s", errname(errno)));
    if (open("pub", O_WRONLY) >= 0 || errno != EACCES) _exit(fail("open 0644 for write as nobody: %s", errname(errno)));
    char b[8];
    if (read_file("pub", b, sizeof b) != 6) _exit(fail("read 0644 file as nobody: %s", errname(errno)));
    if (open("new", O_CREAT | O_WRONLY, 0644) >= 0 || errno != EACCES)
      _exit(fail("create in a 0755 root dir as nobody: %s", errname(errno)));
    struct stat st;
    if (stat("closed/x", &st) == 0 || errno != EACCES) _exit(fail("lookup in a 0700 dir as nobody: %s", errname(errno)));
    if (unlink("pub") == 0 || errno != EACCES) _exit(fail("unlink in a 0755 root dir as nobody: %s", errname(errno)));
    _exit(PASS);
  }
  return wait_child(pid);
}

const struct check posix_checks[] = {
    {"open_rdonly", check_open_rdonly},
    {"open_wronly", check_open_wronly},
    {"open_rdwr", check_open_rdwr},
    {"open_creat_mode", check_open_creat_mode},
    {"open_creat_excl", check_open_creat_excl},
    {"open_trunc", check_open_trunc},
    {"open_append", check_open_append},
    {"open_directory_on_file", check_open_directory_on_file},
    {"open_nofollow_symlink", check_open_nofollow_symlink},
    {"open_sync", check_open_sync},
    {"open_dsync", check_open_dsync},
    {"open_nonblock", check_open_nonblock},
    {"open_noatime", check_open_noatime},
    {"open_cloexec", check_open_cloexec},
    {"nlink_file", check_nlink_file},
    {"nlink_dir", check_nlink_dir},
    {"hardlink_shared_content", check_hardlink_shared_content},
    {"rename_replace_file", check_rename_replace_file},
    {"rename_dir", check_rename_dir},
    {"unlink_while_open", check_unlink_while_open},
    {"mkfifo", check_mkfifo},
    {"mknod_fifo", check_mknod_fifo},
    {"mknod_chr", check_mknod_chr},
    {"symlink_readlink", check_symlink_readlink},
    {"name_max", check_name_max},
    {"xattr_set_get", check_xattr_set_get},
    {"xattr_list", check_xattr_list},
    {"xattr_remove", check_xattr_remove},
    {"xattr_create_existing", check_xattr_create_existing},
    {"xattr_replace_missing", check_xattr_replace_missing},
    {"lock_fcntl_conflict", check_lock_fcntl_conflict},
    {"lock_setlkw_prompt", check_lock_setlkw_prompt},
    {"lock_flock_ex", check_lock_flock_ex},
    {"lock_crossmount_conflict", check_lock_crossmount_conflict},
    {"lock_crossmount_setlkw_prompt", check_lock_crossmount_setlkw_prompt},
    {"lock_crossmount_flock_ex", check_lock_crossmount_flock_ex},
    {"crossmount_coherence", check_crossmount_coherence},
    {"truncate_grow_shrink", check_truncate_grow_shrink},
    {"sparse_large_offset", check_sparse_large_offset},
    {"utimensat_explicit", check_utimensat_explicit},
    {"utimensat_now_omit", check_utimensat_now_omit},
    {"mtime_on_write", check_mtime_on_write},
    {"chmod_chown", check_chmod_chown},
    {"readdir_5000", check_readdir_5000},
    {"rmdir_errors", check_rmdir_errors},
    {"mmap_read", check_mmap_read},
    {"large_file_64m", check_large_file_64m},
    {"statfs", check_statfs},
    {"fsync_fdatasync", check_fsync_fdatasync},
    {"access", check_access},
    {"mapped_special_files", check_mapped_special_files},
    {"mapped_setuid", check_mapped_setuid},
    {"mapped_privileged_xattrs", check_mapped_privileged_xattrs},
};
const size_t posix_checks_count = sizeof posix_checks / sizeof posix_checks[0];
