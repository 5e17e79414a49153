// The guest's PID 1: starts the agent (vmm-task) and reaps every process. Node cannot be PID 1 itself: libuv
// only waits for the children it spawned, and a waitpid(-1) in Node would steal libuv's exit statuses. Container
// processes are orphaned when `runc create` exits, so they end up here; each reaped orphan is reported to the
// agent on fd 3 as "<pid> <raw wait status>\n".
//
// Not PID 1 (host tests): becomes a child subreaper, runs `init -- <cmd> <args...>` and exits with its status.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// The pipeline overrides this with -D'INIT_AGENT_ARGV="/usr/bin/node","/path/to/agent.js"'.
#ifndef INIT_AGENT_ARGV
#define INIT_AGENT_ARGV "/usr/bin/node", "/usr/lib/vmm-task/vmm-task.js"
#endif

#define REPORT_FD 3
// Tells the agent which fd carries the exit reports, so it can tell a real init pipe from a stray fd 3.
#define REPORT_ENV "KUASAR_INIT_EXIT_FD=3"
// Reports queue here while the agent is not reading; beyond this they are dropped (and counted) so that
// reaping never stops.
#define QUEUE_MAX (1 << 20)

static char *const default_argv[] = {INIT_AGENT_ARGV, NULL};
static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2};

static char queue[QUEUE_MAX];
static size_t queued;
static unsigned long dropped;
static int report_fd = -1;

static void logmsg(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof buf - 2) n = sizeof buf - 2;
  buf[n++] = '\n';
  // Best effort: stderr is the console as PID 1, and nothing else is left to tell when it fails.
  ssize_t w = write(STDERR_FILENO, buf, (size_t)n);
  (void)w;
}

// A path is a mount point when it sits on a different device than its parent.
static int is_mountpoint(const char *path) {
  char parent[64];
  struct stat a, b;
  snprintf(parent, sizeof parent, "%s/..", path);
  if (stat(path, &a) != 0 || stat(parent, &b) != 0) return 0;
  return a.st_dev != b.st_dev;
}

// The kernel hands PID 1 /dev/console as stdio only if it could open it; before devtmpfs it may be missing.
static void ensure_stdio(void) {
  if (fcntl(STDIN_FILENO, F_GETFD) >= 0 && fcntl(STDOUT_FILENO, F_GETFD) >= 0 && fcntl(STDERR_FILENO, F_GETFD) >= 0)
    return;
  int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) fd = open("/dev/null", O_RDWR);
  if (fd < 0) return;
  for (int i = 0; i < 3; i++)
    if (fcntl(i, F_GETFD) < 0) dup2(fd, i);
  if (fd > 2) close(fd);
}

// The guest's fixed mounts, in order, with the options the agent's pid1.ts would use. Mounted here with mount(2)
// because the agent would spawn mount(8) for each, which costs ~0.1 s apiece under TCG before it can serve; the
// agent skips every mount point that is already there, and still mounts what depends on the kernel command line.
static const struct {
  const char *source, *target, *type;
  unsigned long flags;
  const char *data;
} fixed_mounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"},
    {"shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777"},
    {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL},
};

static void setup_pid1(void) {
  for (size_t i = 0; i < sizeof fixed_mounts / sizeof fixed_mounts[0]; i++) {
    if (is_mountpoint(fixed_mounts[i].target)) continue;
    mkdir(fixed_mounts[i].target, 0755);
    if (mount(fixed_mounts[i].source, fixed_mounts[i].target, fixed_mounts[i].type, fixed_mounts[i].flags,
              fixed_mounts[i].data) != 0)
      logmsg("init: mount %s on %s: %s", fixed_mounts[i].type, fixed_mounts[i].target, strerror(errno));
  }
  // /dev/ptmx must be the devpts instance's own, as the agent's mountDevPts makes it.
  struct stat st;
  if (lstat("/dev/ptmx", &st) != 0 || !S_ISLNK(st.st_mode)) {
    unlink("/dev/ptmx");
    if (symlink("pts/ptmx", "/dev/ptmx") != 0) logmsg("init: symlink /dev/ptmx: %s", strerror(errno));
  }
  ensure_stdio();
  setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
}

static void enqueue(pid_t pid, int status) {
  if (report_fd < 0) return;
  char line[32];
  int n = snprintf(line, sizeof line, "%d %d\n", (int)pid, status);
  if (queued + (size_t)n > sizeof queue) {
    if (dropped++ == 0) logmsg("init: the agent is not reading exit reports on fd %d; dropping them", REPORT_FD);
    return;
  }
  memcpy(queue + queued, line, (size_t)n);
  queued += (size_t)n;
}

// Writes what the pipe takes without blocking; the rest waits for POLLOUT.
static void flush_queue(void) {
  size_t off = 0;
  while (report_fd >= 0 && off < queued) {
    ssize_t w = write(report_fd, queue + off, queued - off);
    if (w > 0) {
      off += (size_t)w;
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN) {
      break;
    } else {
      // EPIPE: the agent closed its end; reports have nobody to go to.
      close(report_fd);
      report_fd = -1;
      off = queued;
    }
  }
  memmove(queue, queue + off, queued - off);
  queued -= off;
}

static void describe_status(int status, char *buf, size_t len) {
  if (WIFEXITED(status))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(buf, len, "ended with wait status %d", status);
}

static _Noreturn void power_off(int status) {
  char what[96];
  describe_status(status, what, sizeof what);
  logmsg("init: vmm-task %s; powering off", what);
  sync();
  reboot(RB_POWER_OFF);
  // PID 1 must never exit (the kernel panics), so wait here if the power-off request failed.
  logmsg("init: power off failed: %s", strerror(errno));
  for (;;) pause();
}

// Host mode: mirror the agent's outcome to our parent, re-raising a fatal signal so it sees the same one.
static _Noreturn void exit_like(int status) {
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
  }
  _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

// QEMU's TCG (software emulation) names itself in the hypervisor CPUID leaf.
static int under_tcg(void) {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 31))) return 0;
  __cpuid(0x40000000, a, b, c, d);
  char vendor[13];
  memcpy(vendor, &b, 4);
  memcpy(vendor + 4, &c, 4);
  memcpy(vendor + 8, &d, 4);
  vendor[12] = 0;
  return strcmp(vendor, "TCGTCGTCGTCG") == 0;
#else
  return 0;
#endif
}

static _Noreturn void exec_agent(char *const argv[], const sigset_t *oldmask, int report_read, int pid1) {
  // Back to a normal process: default dispositions and the mask init started with.
  for (int sig = 1; sig < NSIG; sig++) signal(sig, SIG_DFL);
  sigprocmask(SIG_SETMASK, oldmask, NULL);
  if (report_read == REPORT_FD) {
    fcntl(REPORT_FD, F_SETFD, 0);
  } else if (dup2(report_read, REPORT_FD) < 0) {
    logmsg("init: dup2 of the exit report pipe: %s", strerror(errno));
    _exit(127);
  }
  putenv(REPORT_ENV);
  // Under TCG every piece of code V8's JIT writes is translated again by QEMU, which costs more than it saves: with
  // --jitless the agent served ~0.7 s sooner and relayed container stdio ~40% faster (measured on this project's
  // 2-core TCG host). A hardware hypervisor keeps node's JIT; a NODE_OPTIONS given on the kernel command line wins.
  if (pid1 && under_tcg()) setenv("NODE_OPTIONS", "--jitless", 0);
  execvp(argv[0], argv);
  logmsg("init: cannot execute %s: %s", argv[0], strerror(errno));
  _exit(127);
}

int main(int argc, char **argv) {
  int pid1 = getpid() == 1;
  char *const *cmd = default_argv;
  int i = 1;
  while (i < argc && strcmp(argv[i], "--") != 0) i++;
  if (i + 1 < argc) {
    cmd = argv + i + 1;
  } else if (!pid1) {
    // As PID 1 the arguments are the kernel's: unknown boot parameters and what followed its "--", which the kernel
    // keeps to itself, so they never select a command there; only a PID 1 started by hand with "--" does.
    fprintf(stderr, "usage: %s -- <command> [args...]\n(runs the command as a child subreaper and reports reaped orphans on fd 3)\n",
            argv[0]);
    return 2;
  }

  if (pid1)
    setup_pid1();
  else if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    logmsg("init: PR_SET_CHILD_SUBREAPER: %s; orphans will not be reported", strerror(errno));

  // Block before forking so no SIGCHLD or forwarded signal can be lost; they are read from a signalfd.
  sigset_t mask, oldmask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  for (size_t k = 0; k < sizeof forwarded / sizeof forwarded[0]; k++) sigaddset(&mask, forwarded[k]);
  sigprocmask(SIG_BLOCK, &mask, &oldmask);
  signal(SIGPIPE, SIG_IGN);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sfd < 0) {
    logmsg("init: signalfd: %s", strerror(errno));
    return 1;
  }

  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    logmsg("init: pipe: %s", strerror(errno));
    return 1;
  }
  pid_t agent = fork();
  if (agent < 0) {
    logmsg("init: fork: %s", strerror(errno));
    if (pid1) power_off(W_EXITCODE(1, 0));
    return 1;
  }
  if (agent == 0) exec_agent(cmd, &oldmask, pipefd[0], pid1);
  close(pipefd[0]);
  report_fd = pipefd[1];
  fcntl(report_fd, F_SETFL, O_NONBLOCK);

  for (;;) {
    struct pollfd fds[2] = {{.fd = sfd, .events = POLLIN}, {.fd = report_fd, .events = POLLOUT}};
    nfds_t nfds = report_fd >= 0 && queued > 0 ? 2 : 1;
    if (poll(fds, nfds, -1) < 0) {
      if (errno != EINTR) logmsg("init: poll: %s", strerror(errno));
      continue;
    }
    struct signalfd_siginfo si[16];
    ssize_t n;
    int agent_status = -1;
    while ((n = read(sfd, si, sizeof si)) > 0) {
      for (size_t k = 0; k < (size_t)n / sizeof si[0]; k++) {
        int sig = (int)si[k].ssi_signo;
        if (sig != SIGCHLD && agent > 0) kill(agent, sig);
      }
    }
    // SIGCHLDs coalesce, so reap everything that is ready on any wakeup.
    for (;;) {
      int status;
      pid_t pid = waitpid(-1, &status, WNOHANG);
      if (pid <= 0) break;
      if (pid == agent) {
        agent_status = status;
        agent = -1;
      } else {
        enqueue(pid, status);
      }
    }
    flush_queue();
    if (agent_status != -1) {
      if (pid1) power_off(agent_status);
      exit_like(agent_status);
    }
  }
}
