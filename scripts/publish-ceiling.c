// The least work a broker must do to confirm a durable publish, on this machine: how
// many 1 KiB publishes per second can be confirmed behind an fsync, over loopback TCP,
// with a window of outstanding confirms, when nothing else is done (issue 15's 10x
// target is judged against it, docs/BENCHMARKS.md).
//
//   cc -O2 -pthread -o /tmp/publish-ceiling scripts/publish-ceiling.c
//   /tmp/publish-ceiling DIR [SIZE=1024] [WINDOW=1000] [SECONDS=5] [PRODUCERS=1]
//
// Each producer is a thread with its own connection, writing frames of
// [u32 length][SIZE bytes] while fewer than WINDOW are unconfirmed, and reading the
// confirms (a u64: how many of its frames are durable). Each connection has a reader
// thread that reads 256 KiB at a time and appends the whole frames it got to its own file
// with one write(), and a syncer thread beside it: one fdatasync covers everything
// appended before it began (group commit), then one confirm goes back, while the reader
// goes on. No parsing beyond the length, no routing, no index, no copy but the kernel's:
// a broker cannot confirm faster than this with the same fsync rule, so it is an upper
// bound on this machine, not a design.
//
// Variants, to measure what a design choice costs on this disk (docs/BENCHMARKS.md,
// spub5):
//   CEILING_FILE=grow (default) appends to a growing file; =zeroed writes PREALLOC
//   bytes (default 4 GiB) of zeros and fsyncs them before the run, so the run
//   overwrites allocated blocks and the file's size never changes; =fallocated
//   reserves them with fallocate (unwritten extents) instead. Preparing is not timed.
//   CEILING_SERIAL=1 makes the write and the fdatasync take turns (one lock), as a
//   writer thread that writes a group and then fsyncs it does.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static size_t size = 1024;
static long window = 1000;
static double seconds = 5;
static const char *dir;
static volatile int stop;
static volatile int ready; // connections whose file is prepared
static pthread_mutex_t io_turn = PTHREAD_MUTEX_INITIALIZER; // CEILING_SERIAL's one lock
static int serial;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) die("write");
    p += w;
    n -= (size_t)w;
  }
}

struct server {
  int sock;
  int index;
  int file;
  pthread_mutex_t lock;
  pthread_cond_t more;
  long long at;      // where the next frames go in the file
  uint64_t written; // frames appended to the file (not yet durable)
  int closed;
};

// The syncer of one connection: one fdatasync covers every frame appended before it
// began (group commit), then one confirm says how many are durable. It runs beside the
// reader, so the next frames are read and appended while the disk syncs.
static void *sync_loop(void *arg) {
  struct server *s = arg;
  uint64_t durable = 0;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    while (s->written == durable && !s->closed) pthread_cond_wait(&s->more, &s->lock);
    uint64_t target = s->written;
    int closed = s->closed;
    pthread_mutex_unlock(&s->lock);
    if (target == durable && closed) break;
    if (serial) pthread_mutex_lock(&io_turn);
    if (fdatasync(s->file) != 0) die("fdatasync");
    if (serial) pthread_mutex_unlock(&io_turn);
    durable = target;
    write_all(s->sock, (const char *)&durable, sizeof durable);
  }
  return NULL;
}

// Makes the file CEILING_FILE says (see the top): growing, zeroed or fallocated.
static void prepare(int file) {
  const char *how = getenv("CEILING_FILE") ? getenv("CEILING_FILE") : "grow";
  long long bytes = getenv("PREALLOC") ? atoll(getenv("PREALLOC")) : 4LL << 30;
  if (!strcmp(how, "zeroed")) {
    char *zeros = calloc(1, 1 << 20);
    for (long long o = 0; o < bytes; o += 1 << 20) write_all(file, zeros, 1 << 20);
    free(zeros);
    if (fsync(file) != 0) die("fsync");
  } else if (!strcmp(how, "fallocated")) {
    if (fallocate(file, 0, 0, bytes) != 0 || fsync(file) != 0) die("fallocate");
  } else if (strcmp(how, "grow")) {
    fprintf(stderr, "CEILING_FILE is grow, zeroed or fallocated\n");
    exit(2);
  }
}

// One connection's reader: read 256 KiB at a time, append the whole frames with one write.
static void *serve(void *arg) {
  struct server *s = arg;
  char path[4096];
  snprintf(path, sizeof path, "%s/ceiling-%d.log", dir, s->index);
  s->file = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (s->file < 0) die("open");
  unlink(path); // the space goes back when the program exits, however it exits
  prepare(s->file);
  s->at = 0;
  __sync_fetch_and_add(&ready, 1);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->more, NULL);
  s->written = 0;
  s->closed = 0;
  pthread_t syncer;
  pthread_create(&syncer, NULL, sync_loop, s);
  size_t cap = 256 * 1024 + size + 4, have = 0;
  char *buf = malloc(cap);
  for (;;) {
    ssize_t r = read(s->sock, buf + have, cap - have);
    if (r <= 0) break;
    have += (size_t)r;
    size_t at = 0;
    uint64_t frames = 0;
    while (have - at >= 4) {
      uint32_t len;
      memcpy(&len, buf + at, 4);
      if (have - at < 4 + (size_t)len) break;
      at += 4 + len;
      frames++;
    }
    if (frames == 0) continue;
    if (serial) pthread_mutex_lock(&io_turn);
    for (size_t done = 0; done < at;) {
      ssize_t w = pwrite(s->file, buf + done, at - done, s->at);
      if (w < 0) die("pwrite");
      done += (size_t)w;
      s->at += w;
    }
    if (serial) pthread_mutex_unlock(&io_turn);
    pthread_mutex_lock(&s->lock);
    s->written += frames;
    pthread_cond_signal(&s->more);
    pthread_mutex_unlock(&s->lock);
    memmove(buf, buf + at, have - at);
    have -= at;
  }
  pthread_mutex_lock(&s->lock);
  s->closed = 1;
  pthread_cond_signal(&s->more);
  pthread_mutex_unlock(&s->lock);
  pthread_join(syncer, NULL);
  close(s->file);
  return NULL;
}

struct producer {
  int sock;
  uint64_t confirmed;
  char pending[8];
  size_t filled;
};

// Reads what confirms have arrived (all of them when `wait`, else none is waited for);
// a confirm cut by TCP is finished by the next call.
static void read_confirms(struct producer *p, int wait) {
  for (;;) {
    ssize_t r = recv(p->sock, p->pending + p->filled, sizeof p->pending - p->filled,
                     wait ? 0 : MSG_DONTWAIT);
    if (r <= 0) {
      if (wait) die("recv");
      return;
    }
    p->filled += (size_t)r;
    if (p->filled == sizeof p->pending) {
      memcpy(&p->confirmed, p->pending, sizeof p->confirmed);
      p->filled = 0;
      wait = 0;
    }
  }
}

// One producer: frames while the window allows, confirms as they come.
static void *produce(void *arg) {
  struct producer *p = arg;
  size_t frame = 4 + size, batch = 64;
  char *out = malloc(frame * batch);
  for (size_t i = 0; i < batch; i++) {
    uint32_t len = (uint32_t)size;
    memcpy(out + i * frame, &len, 4);
    memset(out + i * frame + 4, 'x', size);
  }
  uint64_t sent = 0;
  while (!stop) {
    long room = window - (long)(sent - p->confirmed);
    if (room > 0) {
      size_t n = (size_t)room < batch ? (size_t)room : batch;
      write_all(p->sock, out, n * frame);
      sent += n;
    }
    read_confirms(p, room <= 0);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [SIZE] [WINDOW] [SECONDS] [PRODUCERS]\n", argv[0]);
    return 2;
  }
  dir = argv[1];
  serial = getenv("CEILING_SERIAL") != NULL;
  if (argc > 2) size = (size_t)atol(argv[2]);
  if (argc > 3) window = atol(argv[3]);
  if (argc > 4) seconds = atof(argv[4]);
  int producers = argc > 5 ? atoi(argv[5]) : 1;

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof addr;
  if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 16) ||
      getsockname(listener, (struct sockaddr *)&addr, &alen))
    die("listen");

  pthread_t servers[64], clients[64];
  struct server srv[64];
  struct producer prod[64];
  for (int i = 0; i < producers; i++) {
    prod[i].sock = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(prod[i].sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(prod[i].sock, (struct sockaddr *)&addr, sizeof addr)) die("connect");
    prod[i].confirmed = 0;
    prod[i].filled = 0;
    srv[i].sock = accept(listener, NULL, NULL);
    srv[i].index = i;
    pthread_create(&servers[i], NULL, serve, &srv[i]);
  }
  while (ready < producers) usleep(1000);
  double start = now();
  for (int i = 0; i < producers; i++) pthread_create(&clients[i], NULL, produce, &prod[i]);
  usleep((useconds_t)(seconds * 1e6));
  uint64_t total = 0;
  for (int i = 0; i < producers; i++) total += prod[i].confirmed;
  double took = now() - start;
  stop = 1;
  printf("%d producer(s), %zu B, window %ld: %.1fk confirmed/s, %.0f MB/s durable\n", producers,
         size, window, total / took / 1e3, total * (double)(size + 4) / took / 1e6);
  fflush(stdout);
  _exit(0);
}
