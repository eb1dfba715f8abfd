/* Copied unchanged from the project's shared benchmark kit (/work/shared/bench/echo.c); built by run.ts into ~/.cache/quiclb/bench. */
/* echo.c - UDP echo backend (recvmmsg/sendmmsg), one thread, one or more
 * listening addresses in the same process (or run several processes).
 * usage: echo -a 127.0.0.2:9000 [-a 127.0.0.3:9000 ...] [-b 64]
 * SIGTERM/SIGINT: prints packets echoed to stderr and exits. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXB 256
#define MAXSZ 2048
static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

int main(int argc, char **argv) {
  int batch = 64, opt, nfd = 0, fds[64], ep = epoll_create1(0);
  while ((opt = getopt(argc, argv, "a:b:")) != -1) {
    if (opt == 'b') { batch = atoi(optarg); if (batch < 1 || batch > MAXB) return 2; continue; }
    if (opt != 'a' || nfd == 64) { fprintf(stderr, "usage: echo -a ip:port [-a ...] [-b batch]\n"); return 2; }
    char h[64]; const char *c = strrchr(optarg, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (!c || c - optarg >= 64) return 2;
    memcpy(h, optarg, c - optarg); h[c - optarg] = 0;
    a.sin_port = htons(atoi(c + 1));
    if (inet_pton(AF_INET, h, &a.sin_addr) != 1) return 2;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), sz = 4 << 20, one = 1;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror(optarg); return 1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = nfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    fds[nfd++] = fd;
  }
  if (!nfd) { fprintf(stderr, "usage: echo -a ip:port [-a ...] [-b batch]\n"); return 2; }
  signal(SIGTERM, on_sig); signal(SIGINT, on_sig);
  static char buf[MAXB][MAXSZ];
  static struct mmsghdr m[MAXB];
  static struct iovec iov[MAXB];
  static struct sockaddr_in peer[MAXB];
  unsigned long echoed = 0, dropped = 0;
  struct epoll_event evs[64];
  while (!stop) {
    int n = epoll_wait(ep, evs, 64, 200);
    for (int e = 0; e < n; e++) {
      int fd = fds[evs[e].data.u32];
      for (int rounds = 0; rounds < 8; rounds++) {
        for (int i = 0; i < batch; i++) {
          iov[i] = (struct iovec){buf[i], MAXSZ};
          m[i].msg_hdr = (struct msghdr){.msg_name = &peer[i], .msg_namelen = sizeof peer[i], .msg_iov = &iov[i], .msg_iovlen = 1};
        }
        int r = recvmmsg(fd, m, batch, MSG_DONTWAIT, NULL);
        if (r <= 0) break;
        for (int i = 0; i < r; i++) iov[i].iov_len = m[i].msg_len;
        for (int done = 0; done < r;) {
          int s = sendmmsg(fd, m + done, r - done, MSG_DONTWAIT);
          if (s <= 0) { dropped += r - done; break; }
          done += s; echoed += s;
        }
        if (r < batch) break;
      }
    }
  }
  fprintf(stderr, "echo: echoed=%lu dropped=%lu\n", echoed, dropped);
  return 0;
}
