/*
 * The loopback ceiling for a stream replay: how many bytes per second one TCP
 * connection on 127.0.0.1 carries between two processes on this machine, with a writer
 * that sends one buffer over and over and a reader that only reads into one buffer.
 * No broker, no framing, no parsing: what is left is the kernel's two copies and its
 * TCP path, so a replay over loopback cannot beat this figure.
 *
 *   cc -O2 -o /tmp/loopback-ceiling scripts/loopback-ceiling.c
 *   /tmp/loopback-ceiling [seconds=5] [write_bytes=65536] [read_bytes=65536] [sockbuf=0] [source_bytes]
 *
 * The writer sends successive slices of a source region of source_bytes (default: one
 * write's worth, always hot in the CPU's caches); a replay reads bodies from a segment
 * much larger than the caches, so give a source of a GB or so for its ceiling.
 * sockbuf > 0 sets SO_SNDBUF on the writer and SO_RCVBUF on the reader (0 leaves the
 * kernel's autotuning). Prints one line: bytes moved, GB/s, and each side's CPU in
 * cores (user + system, from getrusage), so a side that is the bottleneck shows.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_secs(int who) {
  struct rusage u;
  getrusage(who, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 5;
  size_t wlen = argc > 2 ? strtoul(argv[2], 0, 10) : 65536;
  size_t rlen = argc > 3 ? strtoul(argv[3], 0, 10) : 65536;
  int sockbuf = argc > 4 ? atoi(argv[4]) : 0;
  size_t slen = argc > 5 ? strtoul(argv[5], 0, 10) : wlen;
  if (slen < wlen) slen = wlen;

  int lis = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (lis < 0 || bind(lis, (void *)&a, sizeof a) || listen(lis, 1) ||
      getsockname(lis, (void *)&a, &al))
    die("listen");

  pid_t child = fork();
  if (child < 0) die("fork");
  if (child == 0) {
    /* The reader: reads into one buffer until the writer closes. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (sockbuf > 0) setsockopt(s, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof sockbuf);
    if (connect(s, (void *)&a, sizeof a)) die("connect");
    char *buf = malloc(rlen);
    unsigned long long total = 0;
    double t0 = 0, c0 = 0;
    for (;;) {
      ssize_t n = read(s, buf, rlen);
      if (n < 0) die("read");
      if (n == 0) break;
      if (total == 0) {
        t0 = now();
        c0 = cpu_secs(RUSAGE_SELF);
      }
      total += n;
    }
    double dt = now() - t0;
    printf("reader: %.3f GB in %.2f s: %.2f GB/s, reader %.2f cores\n", total / 1e9, dt,
           total / dt / 1e9, (cpu_secs(RUSAGE_SELF) - c0) / dt);
    fflush(stdout);
    _exit(0);
  }
  int s = accept(lis, 0, 0);
  if (s < 0) die("accept");
  if (sockbuf > 0) setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof sockbuf);
  char *buf = malloc(slen);
  memset(buf, 'x', slen);
  size_t at = 0;
  unsigned long long total = 0;
  double c0 = cpu_secs(RUSAGE_SELF), t0 = now(), t;
  unsigned long calls = 0;
  while ((t = now()) - t0 < secs) {
    if (at + wlen > slen) at = 0;
    ssize_t n = write(s, buf + at, wlen);
    if (n < 0) die("write");
    at += n;
    total += n;
    calls++;
  }
  double wcpu = (cpu_secs(RUSAGE_SELF) - c0) / (t - t0);
  close(s);
  int st;
  waitpid(child, &st, 0);
  printf("writer: %.3f GB in %.2f s: %.2f GB/s, %lu writes of %zu B from %zu B, writer %.2f cores\n",
         total / 1e9, t - t0, total / (t - t0) / 1e9, calls, wlen, slen, wcpu);
  return 0;
}
