/*
 * What receiving one datagram per wake-up costs the receiver, by how it waits and reads (bench/dataplane/README.md,
 * "Where the default mode's tail comes from"). A child on CPU 0 sends 80 000 datagrams of 64 B at 20 000/s over
 * loopback; the receiver on CPU 1 sleeps in epoll_wait, wakes for each, reads it, and prints its CPU time per
 * datagram (user + system: the split is tick-sampled, the sum is not).
 *
 *   cc -O2 -o /tmp/rx-wakeup-cost bench/dataplane/rx-wakeup-cost.c
 *   /tmp/rx-wakeup-cost READ GRO NESTED     READ 0: recvmsg, 1: recvmmsg asking 64, 2: recvmmsg asking 1
 *                                           GRO 1: UDP_GRO on the socket; NESTED 1: the socket in an epoll set that
 *                                           sits in the epoll set slept on (the addon's layout under libuv)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#define COUNT 80000
#define RATE 20000.0

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  sched_setaffinity(0, sizeof s, &s);
}

static void send_paced(const struct sockaddr_in *to) {
  pin(0);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  connect(fd, (const struct sockaddr *)to, sizeof *to);
  char msg[64] = {1};
  double t0 = now();
  for (int i = 0; i < COUNT; i++) {
    double due = t0 + i / RATE;
    for (double left; (left = due - now()) > 0;)
      if (left > 50e-6) nanosleep(&(struct timespec){0, (long)(left * 0.8e9)}, NULL);
    send(fd, msg, sizeof msg, 0);
  }
  msg[0] = 0; /* the last one says stop */
  usleep(20000);
  send(fd, msg, sizeof msg, 0);
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s READ(0|1|2) GRO(0|1) NESTED(0|1)\n", argv[0]);
    return 2;
  }
  int read_mode = atoi(argv[1]), gro = atoi(argv[2]), nested = atoi(argv[3]), one = 1, rcvbuf = 4 << 20;
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t alen = sizeof addr;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  if (gro && setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof one) < 0) perror("UDP_GRO");
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || getsockname(fd, (struct sockaddr *)&addr, &alen) < 0) {
    perror("bind");
    return 1;
  }
  pid_t child = fork();
  if (child == 0) send_paced(&addr);
  pin(1);
  struct epoll_event ev = {.events = EPOLLIN};
  int outer = epoll_create1(0), inner = -1;
  if (nested) {
    inner = epoll_create1(0);
    epoll_ctl(inner, EPOLL_CTL_ADD, fd, &ev);
    epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev);
  } else {
    epoll_ctl(outer, EPOLL_CTL_ADD, fd, &ev);
  }
  static char bufs[64][2048], cmsg[64][64];
  struct mmsghdr msgs[64];
  struct iovec iov[64];
  struct sockaddr_storage from[64];
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  long got = 0;
  for (int done = 0; !done;) {
    struct epoll_event out[8];
    int ready = epoll_wait(outer, out, 8, 1000);
    if (ready == 0) break; /* the stop datagram was lost: a second without any ends the run */
    if (ready < 0) continue;
    if (nested) epoll_wait(inner, out, 8, 0);
    int ask = read_mode == 1 ? 64 : 1;
    for (int k = 0; k < ask; k++) {
      iov[k] = (struct iovec){bufs[k], sizeof bufs[k]};
      memset(&msgs[k].msg_hdr, 0, sizeof msgs[k].msg_hdr);
      msgs[k].msg_hdr.msg_iov = &iov[k];
      msgs[k].msg_hdr.msg_iovlen = 1;
      msgs[k].msg_hdr.msg_name = &from[k];
      msgs[k].msg_hdr.msg_namelen = sizeof from[k];
      if (gro) {
        msgs[k].msg_hdr.msg_control = cmsg[k];
        msgs[k].msg_hdr.msg_controllen = sizeof cmsg[k];
      }
    }
    int n = read_mode == 0 ? (recvmsg(fd, &msgs[0].msg_hdr, MSG_DONTWAIT) >= 0 ? 1 : 0)
                           : recvmmsg(fd, msgs, (unsigned)ask, MSG_DONTWAIT | MSG_TRUNC, NULL);
    for (int k = 0; k < n; k++, got++)
      if (bufs[k][0] == 0) done = 1;
  }
  getrusage(RUSAGE_SELF, &r1);
  waitpid(child, NULL, 0);
  double cpu = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) +
               ((r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) + (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec)) / 1e6;
  printf("read %d gro %d nested %d: %ld datagrams, %.2f us CPU per datagram\n", read_mode, gro, nested, got, cpu / got * 1e6);
  return 0;
}
