// The pod's persistent ipc and uts namespaces (SetupSandbox) without spawning a process: a short-lived thread
// unshares or joins them (both are per-thread, so the agent's own threads stay where they are), bind-mounts new
// ones onto their files, sets the hostname and writes sysctls from inside them (ipc sysctls are per namespace).
// Under TCG, spawning unshare + sh + hostname took about 300 ms of every sandbox start; this takes a few.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#define ADDON_NAME "ns"
#include "napi_errors.h"

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

static char *get_string(napi_env env, napi_value v, const char *name) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    char msg[128];
    snprintf(msg, sizeof msg, "ns addon: %s must be a string", name);
    napi_throw_type_error(env, "EINVAL", msg);
    return NULL;
  }
  char *s = malloc(len + 1);
  if (s == NULL || napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    napi_throw_error(env, "ENOMEM", "ns addon: out of memory");
    return NULL;
  }
  return s;
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
  struct job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    napi_throw_error(env, "ENOMEM", "ns addon: out of memory");
    return NULL;
  }
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

// unmount(file): detaches a namespace bind mount (pod teardown).
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  char *file = get_string(env, argv[0], "file");
  if (file == NULL) return NULL;
  napi_value result = NULL;
  if (umount2(file, UMOUNT_NOFOLLOW) != 0) {
    char what[300];
    snprintf(what, sizeof what, "umount %s", file);
    throw_errno(env, errno, what);
  } else {
    napi_get_undefined(env, &result);
  }
  free(file);
  return result;
}

NAPI_MODULE_INIT() {
  const napi_property_descriptor props[] = {
      {"setup", NULL, js_setup, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unmount", NULL, js_unmount, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}
