// The agent's own memory: malloc's free pages handed back, and node's private copy of its V8 startup data replaced
// by the same bytes mapped from a file of the image (so every VM shares them through the host's page cache).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define ADDON_NAME "ns"
#include "memory.h"
#include "napi_errors.h"

// trimHeap(): hands the free pages of malloc's heap back to the kernel (malloc_trim(0) releases free chunks inside
// the heap too, not only its top). Returns whether any memory was released.
static napi_value js_trim_heap(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_get_boolean(env, malloc_trim(0) == 1, &out);
  return out;
}

// Reads len bytes of this process's memory at addr through /proc/self/mem (mem), without touching it directly: memory
// another thread unmapped meanwhile, or that V8 keeps behind a protection key, is a failed read here instead of a
// SIGSEGV. (Not process_vm_readv: the guest kernel is built without CROSS_MEMORY_ATTACH.)
static bool peek(int mem, uintptr_t addr, void *buf, size_t len) {
  return pread(mem, buf, len, (off_t)addr) == (ssize_t)len;
}

// Whether memory at `at` holds the file's bytes [offset, offset + len). The file is read, not mapped: faulting in
// each of its pages cost more under TCG than copying them. buf holds 2 * cap bytes.
static bool same_as_file(int mem, uintptr_t at, int fd, size_t offset, size_t len, char *buf, size_t cap) {
  for (size_t done = 0; done < len;) {
    size_t want = len - done < cap ? len - done : cap;
    if (pread(fd, buf, want, (off_t)(offset + done)) != (ssize_t)want || !peek(mem, at + done, buf + cap, want) ||
        memcmp(buf, buf + cap, want) != 0)
      return false;
    done += want;
  }
  return true;
}

// Where in this process a private anonymous mapping holds exactly the file's bytes [offset, offset + len) at
// `offset` into one of its pages: the start of that page, or 0. The kernel merges neighbouring anonymous mappings, so
// the copy may start at any page of one; only resident pages are looked at (mincore), so untouched memory (thread
// stacks) is not faulted in, and only those whose first bytes match are compared in full.
static uintptr_t find_copy(int fd, size_t offset, size_t len, size_t page) {
  char head[64], seen[64];
  size_t hlen = len < sizeof head ? len : sizeof head;
  if (pread(fd, head, hlen, (off_t)offset) != (ssize_t)hlen) return 0;
  FILE *maps = fopen("/proc/self/maps", "re");
  int mem = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
  if (maps == NULL || mem < 0) {
    if (maps != NULL) fclose(maps);
    if (mem >= 0) close(mem);
    return 0;
  }
  const size_t cap = 65536;
  char *buf = malloc(2 * cap);
  size_t span = (offset + len + page - 1) / page;
  uintptr_t found = 0;
  char *line = NULL;
  size_t linecap = 0;
  while (buf != NULL && found == 0 && getline(&line, &linecap, maps) > 0) {
    uintptr_t start, end;
    char perms[5];
    unsigned long inode;
    int rest = 0;
    if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %4s %*x %*x:%*x %lu %n", &start, &end, perms, &inode, &rest) < 4)
      continue;
    // Anonymous: no inode and no name (not [heap], [stack] or a file).
    size_t pages = (end - start) / page;
    if (strcmp(perms, "rw-p") != 0 || inode != 0 || line[rest] != '\0' || pages < span) continue;
    unsigned char *resident = malloc(pages);
    if (resident != NULL && mincore((void *)start, end - start, resident) == 0) {
      for (size_t i = 0; i + span <= pages && found == 0; i++) {
        uintptr_t at = start + i * page + offset;
        if ((resident[i] & 1) && peek(mem, at, seen, hlen) && memcmp(seen, head, hlen) == 0 &&
            same_as_file(mem, at, fd, offset, len, buf, cap))
          found = start + i * page;
      }
    }
    free(resident);
  }
  free(line);
  free(buf);
  fclose(maps);
  close(mem);
  return found;
}

struct remap {
  napi_async_work work;
  napi_deferred deferred;
  char *path;
  uint32_t offset;
  size_t replaced;
  int err;  // errno of the failure, 0 when none
  char what[600];
};

static void remap(struct remap *r) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  int fd = open(r->path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    r->err = errno;
    snprintf(r->what, sizeof r->what, "opening %s", r->path);
  } else if (r->offset >= page || (size_t)st.st_size <= r->offset) {
    r->err = EINVAL;
    snprintf(r->what, sizeof r->what, "%s: %lld bytes, but its data starts at %u (below the page size, %zu)", r->path,
             (long long)st.st_size, r->offset, page);
  } else {
    size_t size = (size_t)st.st_size;
    uintptr_t copy = find_copy(fd, r->offset, size - r->offset, page);
    // Whole pages only: the first holds malloc's header, the last may hold what follows the copy.
    uintptr_t from = copy + (r->offset > 0 ? page : 0), to = copy + size / page * page;
    if (copy != 0 && to > from) {
      void *at = mmap((void *)from, to - from, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, (off_t)(from - copy));
      if (at == MAP_FAILED) {
        r->err = errno;
        snprintf(r->what, sizeof r->what, "mapping %s over its copy at %#" PRIxPTR, r->path, from);
      } else {
        r->replaced = to - from;
      }
    }
    // The comparison read the file through the page cache when the root is a disk rather than the DAX NVDIMM; its
    // pages need not stay in the guest's RAM, as the mapping reads them again only if V8 ever does.
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  }
  if (fd >= 0) close(fd);
}

// On one of libuv's threads, at idle priority while it works: the guest's one vCPU compares the 3.3 MiB only when
// nothing else wants it (about 30 ms of CPU under TCG), instead of delaying the host's first calls.
static void remap_execute(napi_env env, void *data) {
  (void)env;
  int policy = sched_getscheduler(0);
  struct sched_param before, idle = {0};
  bool lowered = policy >= 0 && sched_getparam(0, &before) == 0 && sched_setscheduler(0, SCHED_IDLE, &idle) == 0;
  remap(data);
  if (lowered) sched_setscheduler(0, policy, &before);
}

static void remap_complete(napi_env env, napi_status status, void *data) {
  struct remap *r = data;
  napi_value v = NULL;
  if (status == napi_ok && r->err == 0) {
    napi_create_double(env, (double)r->replaced, &v);
    napi_resolve_deferred(env, r->deferred, v);
  } else {
    char msg[768];
    v = errno_error(env, r->err ? r->err : ECANCELED, r->err ? r->what : "mapFileOverCopy", msg, sizeof msg);
    if (v == NULL) {
      napi_value message;
      napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
      napi_create_error(env, NULL, message, &v);
    }
    napi_reject_deferred(env, r->deferred, v);
  }
  napi_delete_async_work(env, r->work);
  free(r->path);
  free(r);
}

// mapFileOverCopy(path, offset): the file holds some bytes at `offset` into its first page (zeros before them). If
// this process keeps a private copy of those bytes laid out the same way (an mmap'd allocation of glibc's starts 16
// bytes into its first page), the copy's whole pages are replaced by the file's: a private mapping of the same bytes
// at the same addresses, so readers see no change and a write would still copy the page. Resolves to the bytes
// replaced, 0 when no such copy exists; rejects when the file cannot be read.
static napi_value js_map_file_over_copy(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  struct remap *r = alloc_or_throw(env, sizeof *r);
  if (r == NULL) return NULL;
  napi_value promise, name;
  if (napi_get_value_uint32(env, argv[1], &r->offset) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "ns addon: offset must be a number");
  } else if ((r->path = get_string(env, argv[0], "path")) != NULL &&
             napi_create_string_utf8(env, "mapFileOverCopy", NAPI_AUTO_LENGTH, &name) == napi_ok &&
             napi_create_async_work(env, NULL, name, remap_execute, remap_complete, r, &r->work) == napi_ok &&
             napi_create_promise(env, &r->deferred, &promise) == napi_ok &&
             napi_queue_async_work(env, r->work) == napi_ok) {
    return promise;
  }
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, "EFAULT", "ns addon: mapFileOverCopy could not be queued");
  if (r->work != NULL) napi_delete_async_work(env, r->work);
  free(r->path);
  free(r);
  return NULL;
}

napi_status memory_register(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"trimHeap", NULL, js_trim_heap, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mapFileOverCopy", NULL, js_map_file_over_copy, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
