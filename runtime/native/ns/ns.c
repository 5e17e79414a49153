// The pod's persistent ipc and uts namespaces (SetupSandbox) without spawning a process: a short-lived thread
// unshares or joins them (both are per-thread, so the agent's own threads stay where they are), bind-mounts new
// ones onto their files, sets the hostname and writes sysctls from inside them (ipc sysctls are per namespace).
// Under TCG, spawning unshare + sh + hostname took about 300 ms of every sandbox start; this takes a few.
//
// The pod's shared PID namespace cannot persist as a bind mount alone: once its PID 1 exits no process can enter it.
// spawnPidNsInit starts that PID 1 (see js_spawn_pid_ns_init) and waitPid reaps it.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define ADDON_NAME "ns"
#include "napi_errors.h"
#include "memory.h"
#include "netlink.h"

#define MAX_SYSCTLS 256

struct job {
  char *ipc, *uts, *hostname;
  bool create;
  size_t nsysctls;
  char *paths[MAX_SYSCTLS], *values[MAX_SYSCTLS];
  // the first failure: errno and what was being done
  int err;
  char what[512];
};

static void fail(struct job *j, const char *verb, const char *target) {
  j->err = errno;
  snprintf(j->what, sizeof j->what, "%s %s", verb, target);
}

static bool join(struct job *j, const char *file, int type) {
  int fd = open(file, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(j, "open", file);
    return false;
  }
  bool ok = setns(fd, type) == 0;
  if (!ok) fail(j, "setns", file);
  close(fd);
  return ok;
}

static bool write_value(struct job *j, const char *file, const char *value) {
  int fd = open(file, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(j, "open", file);
    return false;
  }
  size_t len = strlen(value);
  char *line = malloc(len + 1);
  if (line == NULL) {
    close(fd);
    fail(j, "allocate for", file);
    return false;
  }
  memcpy(line, value, len);
  line[len] = '\n';
  ssize_t n = write(fd, line, len + 1);
  free(line);
  if (n < 0) fail(j, "write", file);
  else if ((size_t)n != len + 1) {
    errno = EIO;
    fail(j, "short write to", file);
  }
  close(fd);
  return n == (ssize_t)(len + 1);
}

static void *run(void *arg) {
  struct job *j = arg;
  if (j->create) {
    if (unshare(CLONE_NEWIPC | CLONE_NEWUTS) != 0) {
      fail(j, "unshare", "ipc+uts");
      return NULL;
    }
    // Mounted first, so the namespaces persist even if a setting below fails (a retry then joins them).
    if (mount("/proc/thread-self/ns/ipc", j->ipc, NULL, MS_BIND, NULL) != 0) {
      fail(j, "bind-mount the ipc namespace on", j->ipc);
      return NULL;
    }
    if (mount("/proc/thread-self/ns/uts", j->uts, NULL, MS_BIND, NULL) != 0) {
      fail(j, "bind-mount the uts namespace on", j->uts);
      return NULL;
    }
  } else if (!join(j, j->ipc, CLONE_NEWIPC) || !join(j, j->uts, CLONE_NEWUTS)) {
    return NULL;
  }
  if (j->hostname[0] != '\0' && sethostname(j->hostname, strlen(j->hostname)) != 0) {
    fail(j, "sethostname", j->hostname);
    return NULL;
  }
  for (size_t i = 0; i < j->nsysctls; i++)
    if (!write_value(j, j->paths[i], j->values[i])) return NULL;
  return NULL;
}

static void free_job(struct job *j) {
  free(j->ipc);
  free(j->uts);
  free(j->hostname);
  for (size_t i = 0; i < j->nsysctls; i++) {
    free(j->paths[i]);
    free(j->values[i]);
  }
}

static bool read_sysctls(napi_env env, napi_value list, struct job *j) {
  uint32_t n;
  if (napi_get_array_length(env, list, &n) != napi_ok || n % 2 != 0 || n / 2 > MAX_SYSCTLS) {
    napi_throw_type_error(env, "EINVAL", "ns addon: sysctls must be an array of path, value pairs (at most 256)");
    return false;
  }
  for (uint32_t i = 0; i < n; i += 2) {
    napi_value p, v;
    if (napi_get_element(env, list, i, &p) != napi_ok || napi_get_element(env, list, i + 1, &v) != napi_ok)
      return false;
    char *path = get_string(env, p, "a sysctl path");
    if (path == NULL) return false;
    char *value = get_string(env, v, "a sysctl value");
    if (value == NULL) {
      free(path);
      return false;
    }
    j->paths[j->nsysctls] = path;
    j->values[j->nsysctls] = value;
    j->nsysctls++;
  }
  return true;
}

// setup(ipcFile, utsFile, create, hostname, [path, value, ...]): create=true makes new namespaces and mounts them
// on the two (existing, empty) files; false joins the ones mounted there. Then hostname ("" keeps it) and sysctls.
static napi_value js_setup(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  struct job *j = alloc_or_throw(env, sizeof *j);
  if (j == NULL) return NULL;
  napi_value result = NULL;
  if ((j->ipc = get_string(env, argv[0], "ipcFile")) == NULL || (j->uts = get_string(env, argv[1], "utsFile")) == NULL)
    goto out;
  if (napi_get_value_bool(env, argv[2], &j->create) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "ns addon: create must be a boolean");
    goto out;
  }
  if ((j->hostname = get_string(env, argv[3], "hostname")) == NULL || !read_sysctls(env, argv[4], j)) goto out;

  pthread_t t;
  int rc = pthread_create(&t, NULL, run, j);
  if (rc != 0) {
    throw_errno(env, rc, "pthread_create");
    goto out;
  }
  pthread_join(t, NULL);
  if (j->err != 0) {
    throw_errno(env, j->err, j->what);
    goto out;
  }
  napi_get_undefined(env, &result);
out:
  free_job(j);
  free(j);
  return result;
}

// A call on one path argument (named name) that returns 0, or -1 and errno; its error says what_fmt of the path.
static napi_value path_call(napi_env env, napi_callback_info info, const char *name, int (*op)(const char *),
                            const char *what_fmt) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char *path = get_string(env, argv[0], name);
  if (path == NULL) return NULL;
  napi_value result = NULL;
  if (op(path) != 0) {
    char what[600];
    snprintf(what, sizeof what, what_fmt, path);
    throw_errno(env, errno, what);
  } else {
    napi_get_undefined(env, &result);
  }
  free(path);
  return result;
}

// unmount(file): detaches a namespace bind mount (pod teardown).
static int detach(const char *file) { return umount2(file, UMOUNT_NOFOLLOW); }
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  return path_call(env, info, "file", detach, "umount %s");
}

// mount(source, target, fstype, flags, data): mount(2) for PID 1's own mounts (the share, the pod's /etc files),
// which spawned mount(8) at about 0.1 s apiece under TCG before the agent could serve. flags are MS_* bits; data
// ("" for none) goes to the file system as is.
static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  uint32_t flags;
  if (napi_get_value_uint32(env, argv[3], &flags) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "ns addon: flags must be a number");
    return NULL;
  }
  char *src = NULL, *target = NULL, *fstype = NULL, *data = NULL;
  napi_value result = NULL;
  if ((src = get_string(env, argv[0], "source")) == NULL || (target = get_string(env, argv[1], "target")) == NULL ||
      (fstype = get_string(env, argv[2], "fstype")) == NULL || (data = get_string(env, argv[4], "data")) == NULL)
    goto out;
  if (mount(src, target, fstype, flags, data[0] ? data : NULL) != 0) {
    char what[600];
    snprintf(what, sizeof what, "mount %s on %s (%s)", src, target, fstype[0] ? fstype : "bind");
    throw_errno(env, errno, what);
  } else {
    napi_get_undefined(env, &result);
  }
out:
  free(src);
  free(target);
  free(fstype);
  free(data);
  return result;
}

// readonlyTree(target): makes the mount at target and every mount below it read-only in one mount_setattr(2) call
// (AT_RECURSIVE, Linux 5.12), for OCI's "rro". No submount's path is resolved, so a symbolic link in the tree is
// never followed; target's own last component is not followed either. Called through syscall(2): the glibc wrapper
// would make the addon need glibc 2.36.
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
struct mount_attr_v0 {
  uint64_t attr_set, attr_clr, propagation, userns_fd;
};
static int readonly_tree(const char *target) {
  struct mount_attr_v0 attr = {.attr_set = 0x1 /* MOUNT_ATTR_RDONLY */};
  return (int)syscall(SYS_mount_setattr, AT_FDCWD, target, AT_RECURSIVE | AT_SYMLINK_NOFOLLOW, &attr, sizeof attr);
}
static napi_value js_readonly_tree(napi_env env, napi_callback_info info) {
  return path_call(env, info, "target", readonly_tree, "making %s and the mounts below it read-only");
}

// ---- The guest clock (SyncClock): Node reads the time in whole milliseconds and cannot set it.
#include <time.h>

static napi_value bigint_ns(napi_env env, const struct timespec *ts) {
  napi_value out;
  if (napi_create_bigint_int64(env, (int64_t)ts->tv_sec * 1000000000 + ts->tv_nsec, &out) != napi_ok) return NULL;
  return out;
}

// clockRealtime(): CLOCK_REALTIME in nanoseconds since the epoch, as a bigint.
static napi_value js_clock_realtime(napi_env env, napi_callback_info info) {
  (void)info;
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return throw_errno(env, errno, "clock_gettime CLOCK_REALTIME");
  return bigint_ns(env, &ts);
}

// clockStep(deltaNs): moves CLOCK_REALTIME by deltaNs (a bigint; negative steps back). Read and set back to back, so
// the step is exact to the nanosecond. Returns the new time in nanoseconds.
static napi_value js_clock_step(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int64_t delta;
  bool lossless;
  if (napi_get_value_bigint_int64(env, argv[0], &delta, &lossless) != napi_ok || !lossless) {
    napi_throw_type_error(env, "EINVAL", "ns addon: deltaNs must be a bigint of at most 64 bits");
    return NULL;
  }
  struct timespec ts;
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return throw_errno(env, errno, "clock_gettime CLOCK_REALTIME");
  int64_t target;
  if (__builtin_add_overflow((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, delta, &target) || target < 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "ns addon: stepping the clock by %lld ns would leave 1970..2262", (long long)delta);
    napi_throw_range_error(env, "ERANGE", msg);
    return NULL;
  }
  ts.tv_sec = target / 1000000000;
  ts.tv_nsec = target % 1000000000;
  if (clock_settime(CLOCK_REALTIME, &ts) != 0) return throw_errno(env, errno, "clock_settime CLOCK_REALTIME");
  return bigint_ns(env, &ts);
}

#define MAX_INIT_ARGS 16
#define INIT_STACK_SIZE (64 * 1024)

struct init_job {
  char *file;
  char *argv[MAX_INIT_ARGS + 1];
  // Written by the child (it shares our memory until it execs): the step that failed and its errno.
  volatile int err;
  const char *volatile step;
};

static _Noreturn void init_fail(struct init_job *j, const char *step) {
  j->err = errno;
  j->step = step;
  _exit(127);
}

// Runs in the child, on its own stack, in our memory until execve (CLONE_VM | CLONE_VFORK, as posix_spawn does; our
// thread waits meanwhile): only plain system calls here.
static int init_child(void *arg) {
  struct init_job *j = arg;
  // Killed with the agent, so no init outlives the pod's agent (on a host under test above all).
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) init_fail(j, "prctl(PR_SET_PDEATHSIG)");
  // The agent's handlers must never run here; every disposition is reset before any signal is let through.
  struct sigaction dfl = {.sa_handler = SIG_DFL};
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
  // Ignored SIGCHLD survives execve and makes the kernel reap every child at once: the orphans of the pod's
  // processes, which the namespace's PID 1 inherits, never linger as zombies.
  struct sigaction ign = {.sa_handler = SIG_IGN};
  if (sigaction(SIGCHLD, &ign, NULL) != 0) init_fail(j, "sigaction(SIGCHLD, SIG_IGN)");
  if (setsid() < 0) init_fail(j, "setsid");
  if (chdir("/") != 0) init_fail(j, "chdir /");
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0) init_fail(j, "open /dev/null");
  for (int fd = 0; fd < 3; fd++)
    if (dup2(null, fd) < 0) init_fail(j, "dup2 /dev/null");
  // Nothing of the agent's (vsock connections, init's exit report pipe) stays open in the pod's PID 1.
  if (syscall(SYS_close_range, 3, ~0U, 0) != 0) init_fail(j, "close_range");
  sigset_t none;
  sigemptyset(&none);
  if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) init_fail(j, "sigprocmask");
  char *const envp[] = {NULL};
  execve(j->file, j->argv, envp);
  init_fail(j, "execve");
}

static void free_init_job(struct init_job *j) {
  free(j->file);
  for (size_t i = 0; i < MAX_INIT_ARGS && j->argv[i] != NULL; i++) free(j->argv[i]);
}

// spawnPidNsInit(file, argv): starts file as PID 1 of a new PID namespace and returns its pid (in ours). The
// namespace lives as long as that process: /proc/<pid>/ns/pid is what containers join.
static napi_value js_spawn_pid_ns_init(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  struct init_job j = {0};
  napi_value result = NULL;
  uint32_t n;
  if ((j.file = get_string(env, argv[0], "file")) == NULL) goto out;
  if (napi_get_array_length(env, argv[1], &n) != napi_ok || n == 0 || n > MAX_INIT_ARGS) {
    napi_throw_type_error(env, "EINVAL", "ns addon: argv must be an array of 1 to 16 strings");
    goto out;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok) goto out;
    if ((j.argv[i] = get_string(env, v, "an argv entry")) == NULL) goto out;
  }

  void *stack = mmap(NULL, INIT_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) {
    throw_errno(env, errno, "mmap of the PID namespace init's stack");
    goto out;
  }
  // Blocked across the clone, so no signal reaches the child before its handlers are reset.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t pid = clone(init_child, (char *)stack + INIT_STACK_SIZE, CLONE_VM | CLONE_VFORK | CLONE_NEWPID | SIGCHLD, &j);
  int clone_err = errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  munmap(stack, INIT_STACK_SIZE);
  if (pid < 0) {
    throw_errno(env, clone_err, "clone(CLONE_NEWPID) for the pod's PID namespace");
    goto out;
  }
  if (j.step != NULL) {
    waitpid(pid, NULL, 0);
    char what[320];
    snprintf(what, sizeof what, "starting %s as the PID namespace's init: %s", j.file, j.step);
    throw_errno(env, j.err, what);
    goto out;
  }
  napi_create_int32(env, pid, &result);
out:
  free_init_job(&j);
  return result;
}

// waitPid(pid, block): the raw wait status once the child exited (reaped), else undefined (block=false only).
static napi_value js_wait_pid(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  int32_t pid;
  bool block;
  if (napi_get_value_int32(env, argv[0], &pid) != napi_ok || pid <= 0 ||
      napi_get_value_bool(env, argv[1], &block) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "ns addon: waitPid takes a positive pid and a boolean");
    return NULL;
  }
  int status;
  pid_t r;
  do r = waitpid(pid, &status, block ? 0 : WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r < 0) {
    char what[64];
    snprintf(what, sizeof what, "waitpid %d", pid);
    return throw_errno(env, errno, what);
  }
  napi_value result = NULL;
  if (r == 0) napi_get_undefined(env, &result);
  else napi_create_int32(env, status, &result);
  return result;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"setup", NULL, js_setup, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unmount", NULL, js_unmount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mount", NULL, js_mount, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readonlyTree", NULL, js_readonly_tree, NULL, NULL, NULL, napi_enumerable, NULL},
      {"spawnPidNsInit", NULL, js_spawn_pid_ns_init, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitPid", NULL, js_wait_pid, NULL, NULL, NULL, napi_enumerable, NULL},
      {"clockRealtime", NULL, js_clock_realtime, NULL, NULL, NULL, napi_enumerable, NULL},
      {"clockStep", NULL, js_clock_step, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok ||
      netlink_register(env, exports) != napi_ok || memory_register(env, exports) != napi_ok)
    return NULL;
  return exports;
}
