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

static void mount_if_missing(const char *source, const char *target, const char *type) {
  if (is_mountpoint(target)) return;
  mkdir(target, 0755);
  if (mount(source, target, type, MS_NOSUID | MS_NOEXEC, NULL) != 0)
    logmsg("init: mount %s on %s: %s", type, target, strerror(errno));
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

static void setup_pid1(void) {
  mount_if_missing("proc", "/proc", "proc");
  mount_if_missing("sysfs", "/sys", "sysfs");
  if (!is_mountpoint("/dev")) {
    mkdir("/dev", 0755);
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") != 0)
      logmsg("init: mount devtmpfs on /dev: %s", strerror(errno));
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

static _Noreturn void exec_agent(char *const argv[], const sigset_t *oldmask, int report_read) {
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
    // The kernel passes unknown boot parameters as arguments to PID 1, so only host mode insists on "--".
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
  if (agent == 0) exec_agent(cmd, &oldmask, pipefd[0]);
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
