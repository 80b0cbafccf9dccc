/* connect-fd: mount a 9P export inside a guest over a TCP connection.
 *
 *   connect-fd fd  HOST PORT TARGET OPTIONS   connect a TCP socket to HOST:PORT and mount it with trans=fd
 *   connect-fd tcp HOST PORT TARGET OPTIONS   let the kernel connect (trans=tcp,port=PORT)
 *   connect-fd listen ADDR PORT TARGET OPTIONS  listen on ADDR:PORT, accept one connection (the host dials in,
 *                                             e.g. through QEMU hostfwd) and mount it with trans=fd
 *
 * OPTIONS are the remaining 9P mount options (version=9p2000.L,msize=...,aname=...); "ro" in them is turned
 * into MS_RDONLY. With trans=fd the socket must be an fd of the process that calls mount(2): the kernel takes
 * its own references to the file, so this process may exit once mount returns.
 * Build: gcc -static -O2 -o connect-fd connect-fd.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned long take_flags(char *opts) {
  /* Remove "ro"/"rw" from the comma list, returning mount flags. */
  unsigned long flags = 0;
  char out[4096] = "";
  char *save = NULL;
  for (char *tok = strtok_r(opts, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    if (strcmp(tok, "ro") == 0) {
      flags |= MS_RDONLY;
      continue;
    }
    if (strcmp(tok, "rw") == 0) continue;
    if (out[0]) strncat(out, ",", sizeof out - strlen(out) - 1);
    strncat(out, tok, sizeof out - strlen(out) - 1);
  }
  strcpy(opts, out);
  return flags;
}

int main(int argc, char **argv) {
  if (argc != 6 || (strcmp(argv[1], "fd") != 0 && strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "listen") != 0)) {
    fprintf(stderr, "usage: connect-fd fd|tcp|listen HOST PORT TARGET OPTIONS\n");
    return 2;
  }
  const char *mode = argv[1], *host = argv[2], *port = argv[3], *target = argv[4];
  char opts[4096];
  snprintf(opts, sizeof opts, "%s", argv[5]);
  unsigned long flags = take_flags(opts);
  char data[4600];

  if (strcmp(mode, "tcp") == 0) {
    snprintf(data, sizeof data, "trans=tcp,port=%s%s%s", port, opts[0] ? "," : "", opts);
    if (mount(host, target, "9p", flags, data) < 0) {
      fprintf(stderr, "connect-fd: mount %s (%s): %s\n", target, data, strerror(errno));
      return 1;
    }
    return 0;
  }

  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port))};
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
    fprintf(stderr, "connect-fd: bad IPv4 address %s\n", host);
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    perror("connect-fd: socket");
    return 1;
  }
  int one = 1;
  if (strcmp(mode, "listen") == 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 1) < 0) {
      fprintf(stderr, "connect-fd: listen %s:%s: %s\n", host, port, strerror(errno));
      return 1;
    }
    int conn;
    while ((conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC)) < 0 && errno == EINTR) {
    }
    if (conn < 0) {
      fprintf(stderr, "connect-fd: accept %s:%s: %s\n", host, port, strerror(errno));
      return 1;
    }
    close(fd);
    fd = conn;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  } else {
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
      fprintf(stderr, "connect-fd: connect %s:%s: %s\n", host, port, strerror(errno));
      return 1;
    }
  }
  snprintf(data, sizeof data, "trans=fd,rfdno=%d,wfdno=%d%s%s", fd, fd, opts[0] ? "," : "", opts);
  if (mount("9p", target, "9p", flags, data) < 0) {
    fprintf(stderr, "connect-fd: mount %s (%s): %s\n", target, data, strerror(errno));
    return 1;
  }
  close(fd);
  return 0;
}
