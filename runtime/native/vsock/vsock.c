// AF_VSOCK for Node: socket syscalls plus a uv_poll readiness watcher on the fd. Node cannot wrap a vsock
// fd in net.Socket (libuv only knows TCP/UDP/pipe families), so the stream logic lives in TypeScript
// (runtime/transport/vsock-socket.ts) and this file stays a thin, non-blocking syscall layer on the event loop.
// It also has the two TCP syscalls Node lacks for port-forwarding into a pod's netns (runtime/transport/netns-tcp.ts).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/netfilter_ipv4.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

// A watched fd. Freed only when both the uv handle has closed and the JS external was collected,
// because either side may go first.
typedef struct {
  uv_poll_t poll;
  napi_env env;
  napi_ref callback;
  napi_async_context async;
  int fd;
  bool in_callback;
  bool uv_closed;
  bool finalized;
} sock_t;

#define CHECK(env, call)                                                \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error((env), "EINTERNAL", "vsock addon: " #call " failed"); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  const char *name = strerrorname_np(err);
  if (name == NULL) name = "UNKNOWN";
  char msg[256];
  snprintf(msg, sizeof msg, "%s %s (%s)", syscall, name, strerror(err));
  napi_value code, message, error, errno_v, syscall_v;
  if (napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message) != napi_ok ||
      napi_create_error(env, code, message, &error) != napi_ok ||
      napi_create_int32(env, -err, &errno_v) != napi_ok ||
      napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_v) != napi_ok ||
      napi_set_named_property(env, error, "errno", errno_v) != napi_ok ||
      napi_set_named_property(env, error, "syscall", syscall_v) != napi_ok) {
    napi_throw_error(env, name, msg);
    return NULL;
  }
  napi_throw(env, error);
  return NULL;
}

static napi_value throw_uv(napi_env env, int uverr, const char *syscall) {
  return throw_errno(env, -uverr, syscall);
}

static napi_value make_int(napi_env env, int64_t v) {
  napi_value out;
  CHECK(env, napi_create_int64(env, v, &out));
  return out;
}

// Reads argc arguments; throws when fewer were passed so every binding can index argv safely.
static bool get_args(napi_env env, napi_callback_info info, size_t argc, napi_value *argv) {
  size_t got = argc;
  if (napi_get_cb_info(env, info, &got, argv, NULL, NULL) != napi_ok) return false;
  if (got < argc) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: missing arguments");
    return false;
  }
  return true;
}

static bool get_u32(napi_env env, napi_value v, uint32_t *out) {
  if (napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a number");
    return false;
  }
  return true;
}

static bool get_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a number");
    return false;
  }
  return true;
}

static bool get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  if (napi_get_buffer_info(env, v, data, len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a Buffer");
    return false;
  }
  return true;
}

// The watched socket behind an external; throws EBADF once it was closed.
static sock_t *get_sock(napi_env env, napi_value v) {
  void *data = NULL;
  if (napi_get_value_external(env, v, &data) != napi_ok || data == NULL) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a socket handle");
    return NULL;
  }
  sock_t *s = data;
  if (s->fd < 0) {
    throw_errno(env, EBADF, "handle");
    return NULL;
  }
  return s;
}

static void on_uv_closed(uv_handle_t *h) {
  sock_t *s = h->data;
  s->uv_closed = true;
  if (s->finalized) free(s);
}

static void release_async(sock_t *s) {
  if (s->async != NULL) {
    napi_async_destroy(s->env, s->async);
    s->async = NULL;
  }
}

// uv_close before close(fd): libuv must drop the fd from epoll before the number can be reused.
static void sock_close(sock_t *s) {
  if (s->fd < 0) return;
  uv_close((uv_handle_t *)&s->poll, on_uv_closed);
  close(s->fd);
  s->fd = -1;
  napi_delete_reference(s->env, s->callback);
  s->callback = NULL;
  // Destroying the async context inside its own callback would free it under napi_make_callback.
  if (!s->in_callback) release_async(s);
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sock_t *s = h->data;
  if (s->fd < 0) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, recv, argv[2], result;
  if (napi_get_reference_value(env, s->callback, &cb) == napi_ok && cb != NULL &&
      napi_get_global(env, &recv) == napi_ok && napi_create_int32(env, status, &argv[0]) == napi_ok &&
      napi_create_int32(env, events, &argv[1]) == napi_ok) {
    s->in_callback = true;
    napi_status st = napi_make_callback(env, s->async, recv, cb, 2, argv, &result);
    s->in_callback = false;
    if (st == napi_pending_exception) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
    }
  }
  if (s->fd < 0) release_async(s);
  napi_close_handle_scope(env, scope);
}

static void finalize_sock(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  sock_t *s = data;
  s->finalized = true;
  sock_close(s);
  if (s->uv_closed) free(s);
}

// watch(fd, cb(status, events)) -> handle. Takes ownership of fd: close(handle) closes it, as does a failure here.
static napi_value js_watch(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t fd;
  if (!get_i32(env, argv[0], &fd)) return NULL;
  uv_loop_t *loop;
  CHECK(env, napi_get_uv_event_loop(env, &loop));
  sock_t *s = calloc(1, sizeof *s);
  if (s == NULL) {
    close(fd);
    return throw_errno(env, ENOMEM, "watch");
  }
  int r = uv_poll_init_socket(loop, &s->poll, fd);
  if (r != 0) {
    free(s);
    close(fd);
    return throw_uv(env, r, "watch");
  }
  s->poll.data = s;
  s->env = env;
  s->fd = fd;
  napi_value resource, name, ext;
  if (napi_create_reference(env, argv[1], 1, &s->callback) != napi_ok ||
      napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "VsockHandle", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &s->async) != napi_ok ||
      napi_create_external(env, s, finalize_sock, NULL, &ext) != napi_ok) {
    // Not yet owned by JS: close here (the uv close callback frees it).
    s->finalized = true;
    sock_close(s);
    napi_throw_error(env, "EINTERNAL", "vsock addon: creating a socket handle failed");
    return NULL;
  }
  return ext;
}

// setEvents(handle, UV_READABLE|UV_WRITABLE bits); 0 stops watching.
static napi_value js_set_events(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  int32_t events;
  if (s == NULL || !get_i32(env, argv[1], &events)) return NULL;
  int r = events == 0 ? uv_poll_stop(&s->poll) : uv_poll_start(&s->poll, events, on_poll);
  if (r != 0) return throw_uv(env, r, "poll");
  return NULL;
}

static napi_value js_set_ref(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  bool ref;
  if (s == NULL) return NULL;
  CHECK(env, napi_get_value_bool(env, argv[1], &ref));
  if (ref)
    uv_ref((uv_handle_t *)&s->poll);
  else
    uv_unref((uv_handle_t *)&s->poll);
  return NULL;
}

// read(handle, buf) -> bytes read, 0 on EOF, -1 when nothing is available yet.
static napi_value js_read(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  void *data;
  size_t len;
  if (s == NULL || !get_buffer(env, argv[1], &data, &len)) return NULL;
  ssize_t n;
  do n = read(s->fd, data, len);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
    return throw_errno(env, errno, "read");
  }
  return make_int(env, n);
}

// write(handle, buf) -> bytes written, -1 when the socket buffer is full.
static napi_value js_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  void *data;
  size_t len;
  if (s == NULL || !get_buffer(env, argv[1], &data, &len)) return NULL;
  ssize_t n;
  // MSG_NOSIGNAL: a peer that went away must give EPIPE, not kill the process.
  do n = send(s->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return make_int(env, -1);
    return throw_errno(env, errno, "write");
  }
  return make_int(env, n);
}

static napi_value js_shutdown(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  if (s == NULL) return NULL;
  if (shutdown(s->fd, SHUT_WR) != 0) return throw_errno(env, errno, "shutdown");
  return NULL;
}

// Pending socket error (SO_ERROR), e.g. the outcome of a non-blocking connect; 0 when none.
static napi_value js_socket_error(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  if (s == NULL) return NULL;
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return throw_errno(env, errno, "getsockopt");
  return make_int(env, err);
}

static napi_value js_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  void *data = NULL;
  CHECK(env, napi_get_value_external(env, argv[0], &data));
  sock_close(data);
  return NULL;
}

static bool set_u32(napi_env env, napi_value obj, const char *key, uint32_t v) {
  napi_value val;
  return napi_create_uint32(env, v, &val) == napi_ok && napi_set_named_property(env, obj, key, val) == napi_ok;
}

static napi_value vsock_address(napi_env env, const struct sockaddr_vm *a) {
  napi_value obj;
  CHECK(env, napi_create_object(env, &obj));
  if (!set_u32(env, obj, "cid", a->svm_cid) || !set_u32(env, obj, "port", a->svm_port)) return NULL;
  return obj;
}

// accept(handle) -> { fd, cid?, port? } (cid/port for AF_VSOCK peers) or null when none is pending.
static napi_value js_accept(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  sock_t *s = get_sock(env, argv[0]);
  if (s == NULL) return NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int fd;
  do fd = accept4(s->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  napi_value obj;
  if (fd < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return throw_errno(env, errno, "accept");
    CHECK(env, napi_get_null(env, &obj));
    return obj;
  }
  const struct sockaddr_vm *vm = (const struct sockaddr_vm *)&ss;
  bool ok = napi_create_object(env, &obj) == napi_ok && set_u32(env, obj, "fd", (uint32_t)fd) &&
            (ss.ss_family != AF_VSOCK || (set_u32(env, obj, "cid", vm->svm_cid) && set_u32(env, obj, "port", vm->svm_port)));
  if (!ok) {
    close(fd);
    napi_throw_error(env, "EINTERNAL", "vsock addon: building the accept result failed");
    return NULL;
  }
  return obj;
}

static napi_value fail_fd(napi_env env, int fd, const char *syscall) {
  int err = errno;
  close(fd);
  return throw_errno(env, err, syscall);
}

static void vsock_sockaddr(struct sockaddr_vm *a, uint32_t cid, uint32_t port) {
  memset(a, 0, sizeof *a);
  a->svm_family = AF_VSOCK;
  a->svm_cid = cid;
  a->svm_port = port;
}

// vsockListen(cid, port, backlog) -> listening non-blocking fd.
static napi_value js_vsock_listen(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t cid, port;
  int32_t backlog;
  if (!get_args(env, info, 3, argv) || !get_u32(env, argv[0], &cid) || !get_u32(env, argv[1], &port) ||
      !get_i32(env, argv[2], &backlog))
    return NULL;
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  struct sockaddr_vm a;
  vsock_sockaddr(&a, cid, port);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) return fail_fd(env, fd, "bind");
  if (listen(fd, backlog) != 0) return fail_fd(env, fd, "listen");
  return make_int(env, fd);
}

// Privileged source ports, tried from the top down (like bindresvport). Linux lets only CAP_NET_BIND_SERVICE in the
// initial user namespace bind an AF_VSOCK port <= 1023, so the guest agent takes such a port as proof that the
// peer is the root daemon and not any local user or container.
#define PRIVILEGED_PORT_HIGH 1023
#define PRIVILEGED_PORT_LOW 1

// Binds fd to the highest free privileged port. EACCES (not privileged) ends the search at once; EADDRINUSE is
// returned only when every port in the range is taken. Returns 0 or an errno.
static int bind_privileged_port(int fd) {
  for (uint32_t port = PRIVILEGED_PORT_HIGH; port >= PRIVILEGED_PORT_LOW; port--) {
    struct sockaddr_vm a;
    vsock_sockaddr(&a, VMADDR_CID_ANY, port);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0) return 0;
    if (errno != EADDRINUSE) return errno;
  }
  return EADDRINUSE;
}

// vsockConnect(cid, port, timeoutMs, privileged) -> fd with a connect in progress; completion shows as
// writability + SO_ERROR. With privileged, the source port is bound first (a failure there has syscall "bind").
static napi_value js_vsock_connect(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint32_t cid, port, timeout_ms;
  bool privileged;
  if (!get_args(env, info, 4, argv) || !get_u32(env, argv[0], &cid) || !get_u32(env, argv[1], &port) ||
      !get_u32(env, argv[2], &timeout_ms))
    return NULL;
  if (napi_get_value_bool(env, argv[3], &privileged) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a boolean");
    return NULL;
  }
  int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  // The kernel's own connect timeout (2 s by default) would otherwise cut a longer caller timeout short.
  struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
  if (setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv) != 0)
    return fail_fd(env, fd, "setsockopt");
  if (privileged) {
    int err = bind_privileged_port(fd);
    if (err != 0) {
      close(fd);
      return throw_errno(env, err, "bind");
    }
  }
  struct sockaddr_vm a;
  vsock_sockaddr(&a, cid, port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) return fail_fd(env, fd, "connect");
  return make_int(env, fd);
}

// vsockLocalAddress(fd) -> { cid, port } as bound (resolves VMADDR_PORT_ANY).
static napi_value js_vsock_local_address(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !get_i32(env, argv[0], &fd)) return NULL;
  struct sockaddr_vm a;
  socklen_t len = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &len) != 0) return throw_errno(env, errno, "getsockname");
  return vsock_address(env, &a);
}

static napi_value js_local_cid(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open /dev/vsock");
  unsigned int cid = 0;
  if (ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) != 0) return fail_fd(env, fd, "ioctl IOCTL_VM_SOCKETS_GET_LOCAL_CID");
  close(fd);
  return make_int(env, cid);
}

// A listener made inside another network namespace: what the thread did and where it failed.
typedef struct {
  char path[PATH_MAX];
  uint32_t port;
  int32_t backlog;
  int fd;
  int err;
  const char *syscall;
} netns_listen_t;

static void *netns_listen_thread(void *arg) {
  netns_listen_t *j = arg;
  // O_NONBLOCK: a FIFO named by mistake must fail at setns, not block the daemon's event loop in open.
  int ns = open(j->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (ns < 0) {
    j->err = errno;
    j->syscall = "open";
    return NULL;
  }
  // Only this thread moves; it exits right after, and the socket stays in the namespace it was created in.
  int r = setns(ns, CLONE_NEWNET);
  j->err = errno;
  close(ns);
  if (r != 0) {
    j->syscall = "setns";
    return NULL;
  }
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    j->err = errno;
    j->syscall = "socket";
    return NULL;
  }
  int one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)j->port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    j->syscall = "setsockopt";
  else if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
    j->syscall = "bind";
  else if (listen(fd, j->backlog) != 0)
    j->syscall = "listen";
  else {
    j->fd = fd;
    return NULL;
  }
  j->err = errno;
  close(fd);
  return NULL;
}

// tcpListenInNetns(nsPath, port, backlog) -> non-blocking TCP fd listening on 127.0.0.1:port (0: the kernel picks)
// inside the network namespace nsPath. Network namespaces are per thread, so a short-lived thread joins it and the
// daemon's own threads never leave the host's. Errors name the failing syscall (open, setns, socket, bind, ...).
static napi_value js_tcp_listen_in_netns(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  netns_listen_t *j = calloc(1, sizeof *j);
  if (j == NULL) return throw_errno(env, ENOMEM, "tcpListenInNetns");
  j->fd = -1;
  napi_value result = NULL;
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], j->path, sizeof j->path, &len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a path");
    goto out;
  }
  if (len >= sizeof j->path - 1) {
    throw_errno(env, ENAMETOOLONG, "open");
    goto out;
  }
  // open() would stop at an embedded NUL and use a different path than the caller named.
  if (strlen(j->path) != len) {
    throw_errno(env, EINVAL, "open");
    goto out;
  }
  if (!get_u32(env, argv[1], &j->port) || !get_i32(env, argv[2], &j->backlog)) goto out;
  if (j->port > 65535) {
    throw_errno(env, EINVAL, "bind");
    goto out;
  }
  pthread_t t;
  int rc = pthread_create(&t, NULL, netns_listen_thread, j);
  if (rc != 0) {
    throw_errno(env, rc, "pthread_create");
    goto out;
  }
  pthread_join(t, NULL);
  if (j->fd < 0) {
    throw_errno(env, j->err, j->syscall);
    goto out;
  }
  result = make_int(env, j->fd);
  if (result == NULL) close(j->fd);
out:
  free(j);
  return result;
}

// tcpOriginalDst(fd) -> { address, port }: where an accepted IPv4 connection was headed before netfilter NAT
// (iptables REDIRECT) sent it to us; for a connection that was not NATed, our own address.
static napi_value js_tcp_original_dst(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!get_args(env, info, 1, argv) || !get_i32(env, argv[0], &fd)) return NULL;
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &a, &len) != 0) return throw_errno(env, errno, "getsockopt");
  if (len < sizeof a || a.sin_family != AF_INET) return throw_errno(env, EAFNOSUPPORT, "getsockopt");
  char text[INET_ADDRSTRLEN];
  if (inet_ntop(AF_INET, &a.sin_addr, text, sizeof text) == NULL) return throw_errno(env, errno, "inet_ntop");
  napi_value obj, address;
  CHECK(env, napi_create_object(env, &obj));
  CHECK(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &address));
  CHECK(env, napi_set_named_property(env, obj, "address", address));
  if (!set_u32(env, obj, "port", ntohs(a.sin_port))) return NULL;
  return obj;
}

// Test hooks: the same handle code over AF_UNIX, so stream semantics are testable where vsock has no peer.
static bool unix_sockaddr(napi_env env, napi_value v, struct sockaddr_un *a) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  size_t len;
  if (napi_get_value_string_utf8(env, v, a->sun_path, sizeof a->sun_path, &len) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "vsock addon: expected a path");
    return false;
  }
  if (len >= sizeof a->sun_path - 1) {
    throw_errno(env, ENAMETOOLONG, "bind");
    return false;
  }
  return true;
}

static napi_value js_unix_listen(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un a;
  int32_t backlog;
  if (!get_args(env, info, 2, argv) || !unix_sockaddr(env, argv[0], &a) || !get_i32(env, argv[1], &backlog))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) return fail_fd(env, fd, "bind");
  if (listen(fd, backlog) != 0) return fail_fd(env, fd, "listen");
  return make_int(env, fd);
}

static napi_value js_unix_connect(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un a;
  if (!get_args(env, info, 1, argv) || !unix_sockaddr(env, argv[0], &a)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) return fail_fd(env, fd, "connect");
  return make_int(env, fd);
}

static napi_value js_socketpair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
    return throw_errno(env, errno, "socketpair");
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || napi_create_int32(env, sv[0], &a) != napi_ok ||
      napi_create_int32(env, sv[1], &b) != napi_ok || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok) {
    close(sv[0]);
    close(sv[1]);
    return NULL;
  }
  return arr;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"watch", NULL, js_watch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setEvents", NULL, js_set_events, NULL, NULL, NULL, napi_enumerable, NULL},
      {"setRef", NULL, js_set_ref, NULL, NULL, NULL, napi_enumerable, NULL},
      {"read", NULL, js_read, NULL, NULL, NULL, napi_enumerable, NULL},
      {"write", NULL, js_write, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shutdown", NULL, js_shutdown, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketError", NULL, js_socket_error, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"accept", NULL, js_accept, NULL, NULL, NULL, napi_enumerable, NULL},
      {"vsockListen", NULL, js_vsock_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"vsockConnect", NULL, js_vsock_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"vsockLocalAddress", NULL, js_vsock_local_address, NULL, NULL, NULL, napi_enumerable, NULL},
      {"localCid", NULL, js_local_cid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tcpListenInNetns", NULL, js_tcp_listen_in_netns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tcpOriginalDst", NULL, js_tcp_original_dst, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unixListen", NULL, js_unix_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unixConnect", NULL, js_unix_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketpair", NULL, js_socketpair, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
