// The few syscalls vmm-task needs that Node lacks: receiving the pty master runc sends over its console socket
// (SCM_RIGHTS), opening a pty for the debug shell, resizing a pty, and real pipes for container stdio (libuv's
// stdio "pipes" are socketpairs, on which `echo > /dev/stdout` fails with ENXIO).
// Every fd returned is O_CLOEXEC so other children of the agent never inherit it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#define ADDON_NAME "pty"
#include "napi_errors.h"

static bool get_int(napi_env env, napi_value v, int32_t *out, const char *name) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "pty addon: %s must be a number", name);
    napi_throw_type_error(env, "EINVAL", msg);
    return false;
  }
  return true;
}

static napi_value make_int(napi_env env, int32_t v) {
  napi_value out;
  if (napi_create_int32(env, v, &out) != napi_ok) return NULL;
  return out;
}

static napi_value make_pair(napi_env env, int a, int b) {
  napi_value arr;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok) return NULL;
  if (napi_set_element(env, arr, 0, make_int(env, a)) != napi_ok ||
      napi_set_element(env, arr, 1, make_int(env, b)) != napi_ok)
    return NULL;
  return arr;
}

static int set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// pipe(): [readFd, writeFd], both blocking (they are handed to children; Node sets its own end non-blocking).
static napi_value js_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return throw_errno(env, errno, "pipe2");
  return make_pair(env, fds[0], fds[1]);
}

// dup(fd): a second O_CLOEXEC descriptor for the same open file, so two owners can close independently.
static napi_value js_dup(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !get_int(env, argv[0], &fd, "fd")) return NULL;
  int out = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (out < 0) return throw_errno(env, errno, "fcntl(F_DUPFD_CLOEXEC)");
  return make_int(env, out);
}

// listenUnix(path): a listening unix stream socket for runc's --console-socket.
static napi_value js_listen_unix(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], addr.sun_path, sizeof addr.sun_path, &len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "pty addon: listenUnix path must be a string");
    return NULL;
  }
  if (len >= sizeof addr.sun_path - 1) {
    napi_throw_range_error(env, "ENAMETOOLONG", "pty addon: unix socket path longer than 107 bytes");
    return NULL;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket(AF_UNIX)");
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0) {
    int err = errno;
    close(fd);
    char what[160];
    snprintf(what, sizeof what, "bind/listen %s", addr.sun_path);
    return throw_errno(env, err, what);
  }
  return make_int(env, fd);
}

// recvFd(listenFd, timeoutMs): accepts one connection and returns the fd sent on it with SCM_RIGHTS, made
// non-blocking. runc sends the pty master before `runc create` / `runc exec -d` exit, so callers invoke this
// after runc succeeded and the timeout only guards against a peer that connected but never sent.
static napi_value js_recv_fd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t lfd, timeout;
  if (!get_args(env, info, 2, argv) || !get_int(env, argv[0], &lfd, "listenFd") ||
      !get_int(env, argv[1], &timeout, "timeoutMs"))
    return NULL;
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  int r;
  do r = poll(&p, 1, timeout);
  while (r < 0 && errno == EINTR);
  if (r < 0) return throw_errno(env, errno, "poll on the console socket");
  if (r == 0) return throw_errno(env, ETIMEDOUT, "waiting for runc to connect to the console socket");
  int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
  if (conn < 0) return throw_errno(env, errno, "accept on the console socket");
  struct timeval tv = {.tv_sec = timeout / 1000, .tv_usec = (timeout % 1000) * 1000};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  char name[256];
  struct iovec iov = {.iov_base = name, .iov_len = sizeof name};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * 4)];
  } control;
  memset(&control, 0, sizeof control);
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  ssize_t n;
  do n = recvmsg(conn, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(conn);
  if (n < 0) return throw_errno(env, err, "recvmsg on the console socket");

  int got = -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int fds[4];
    memcpy(fds, CMSG_DATA(c), count * sizeof(int));
    for (size_t i = 0; i < count; i++) {
      if (got < 0)
        got = fds[i];
      else
        close(fds[i]);  // runc sends exactly one; never leak extras
    }
  }
  if (got < 0) return throw_errno(env, EBADMSG, "the console socket peer sent no file descriptor");
  if (set_nonblock(got) != 0) {
    err = errno;
    close(got);
    return throw_errno(env, err, "fcntl(O_NONBLOCK) on the received pty master");
  }
  return make_int(env, got);
}

// openPty(): { master, slave, path } — a new pty pair; the master is non-blocking, the slave is not our ctty.
static napi_value js_open_pty(napi_env env, napi_callback_info info) {
  (void)info;
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return throw_errno(env, errno, "posix_openpt (is devpts mounted on /dev/pts?)");
  char path[128];
  int err = 0;
  const char *step = NULL;
  if (grantpt(master) != 0)
    step = "grantpt";
  else if (unlockpt(master) != 0)
    step = "unlockpt";
  else if ((err = ptsname_r(master, path, sizeof path)) != 0)
    step = "ptsname_r";
  else if (set_nonblock(master) != 0)
    step = "fcntl(O_NONBLOCK)";
  if (step != NULL) {
    if (err == 0) err = errno;
    close(master);
    return throw_errno(env, err, step);
  }
  int slave = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    err = errno;
    close(master);
    return throw_errno(env, err, path);
  }
  napi_value out, path_v;
  if (napi_create_object(env, &out) != napi_ok || napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &path_v) != napi_ok ||
      napi_set_named_property(env, out, "master", make_int(env, master)) != napi_ok ||
      napi_set_named_property(env, out, "slave", make_int(env, slave)) != napi_ok ||
      napi_set_named_property(env, out, "path", path_v) != napi_ok) {
    close(master);
    close(slave);
    return NULL;
  }
  return out;
}

// setWinsize(fd, rows, cols): TIOCSWINSZ; on a master the kernel also signals SIGWINCH to the foreground group.
static napi_value js_set_winsize(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, rows, cols;
  if (!get_args(env, info, 3, argv) || !get_int(env, argv[0], &fd, "fd") || !get_int(env, argv[1], &rows, "rows") ||
      !get_int(env, argv[2], &cols, "cols"))
    return NULL;
  if (rows < 0 || rows > 0xffff || cols < 0 || cols > 0xffff) {
    napi_throw_range_error(env, "EINVAL", "pty addon: rows and cols must be within 0..65535");
    return NULL;
  }
  struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
  if (ioctl(fd, TIOCSWINSZ, &ws) != 0) return throw_errno(env, errno, "ioctl(TIOCSWINSZ)");
  return NULL;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"pipe", NULL, js_pipe, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dup", NULL, js_dup, NULL, NULL, NULL, napi_enumerable, NULL},
      {"listenUnix", NULL, js_listen_unix, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvFd", NULL, js_recv_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openPty", NULL, js_open_pty, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setWinsize", NULL, js_set_winsize, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
