/* From the project's shared benchmark kit (/work/shared/bench/gen.c), plus -g (UDP GSO sends) and the pcts_us list in its output; built by run.ts into ~/.cache/quiclb/bench. */
/* gen.c - QUIC-shaped UDP load generator (sendmmsg/recvmmsg, single thread).
 *
 * Sends short-header QUIC-like datagrams from N client sockets (distinct
 * source ports) to a target, at a fixed rate or open loop (-r 0), counts the
 * echoed replies and prints one JSON line with rates, loss and latency.
 *
 * Datagram layout (size bytes total):
 *   [0]            0x40 | random 6 bits           (short header, fixed bit set)
 *   [1..cidlen]    DCID, per client socket; DCID[0] top 3 bits = config id
 *   [off..off+7]   u64 send time, CLOCK_MONOTONIC ns      (off = 1+cidlen)
 *   [off+8..+11]   u32 sequence number
 *   [off+12..+13]  u16 client socket index (reply must come back to it)
 *   [off+14..+15]  u16 magic 0x5143
 *   rest           filler
 *
 * usage: gen -t 127.0.0.1:8443 [-n 32] [-s 1200] [-c 8] [-i 1] [-r 20000]
 *            [-d 3] [-D 0.3] [-b 32] [-B 127.0.0.1] [-f DCIDS] [-g 8]
 * Latency: p50_us, p99_us, p999_us, and pcts_us, the percentiles 50, 75, 90, 95, 97, 98, 99, 99.5 and 99.9 in us
 *          (where two distributions part: a shift of the whole body, or a tail of its own).
 *   -f DCIDS: a file of hex DCIDs, one a line (e.g. real QUIC-LB connection IDs); client socket i
 *             uses line i mod N, and -c becomes the length of those DCIDs (all lines equal length).
 *   -g N: send with UDP GSO (UDP_SEGMENT), up to N datagrams per sendmsg (a train of one client socket's
 *         datagrams, as a QUIC stack sending with GSO does); 0/1: one datagram per message (default).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <netinet/udp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXB 256
#define MAXSZ 2048
#define MAXSOCK 1024
#define HIST_US 1000000 /* 1 us buckets up to 1 s, then overflow */
#define MAGIC 0x5143
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}
static uint64_t rng = 88172645463325252ull;
static uint64_t xr(void) { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng; }

static int parse_addr(const char *s, struct sockaddr_in *a) {
  char h[64]; const char *c = strrchr(s, ':');
  if (!c || c - s >= (int)sizeof h) return -1;
  memcpy(h, s, c - s); h[c - s] = 0;
  memset(a, 0, sizeof *a); a->sin_family = AF_INET; a->sin_port = htons(atoi(c + 1));
  return inet_pton(AF_INET, h, &a->sin_addr) == 1 ? 0 : -1;
}

static uint32_t hist[HIST_US + 1];
static uint64_t pct(uint64_t total, double p) { /* percentile in us */
  uint64_t want = (uint64_t)(p * total), acc = 0;
  if (want >= total) want = total - 1;
  for (int i = 0; i <= HIST_US; i++) { acc += hist[i]; if (acc > want) return i; }
  return HIST_US;
}

int main(int argc, char **argv) {
  struct sockaddr_in dst, src;
  const char *target = "127.0.0.1:8443", *bindip = "127.0.0.1", *cidfile = NULL;
  int nsock = 32, size = 1200, cidlen = 8, cfgid = 1, batch = 32, gso = 0, opt;
  double rate = 20000, dur = 3, drain = 0.3;
  while ((opt = getopt(argc, argv, "t:n:s:c:i:r:d:D:b:B:f:g:")) != -1) switch (opt) {
    case 't': target = optarg; break;      case 'n': nsock = atoi(optarg); break;
    case 's': size = atoi(optarg); break;  case 'c': cidlen = atoi(optarg); break;
    case 'i': cfgid = atoi(optarg); break; case 'r': rate = atof(optarg); break;
    case 'd': dur = atof(optarg); break;   case 'D': drain = atof(optarg); break;
    case 'b': batch = atoi(optarg); break; case 'B': bindip = optarg; break;
    case 'f': cidfile = optarg; break;      case 'g': gso = atoi(optarg); break;
    default: fprintf(stderr, "bad option, see header of gen.c\n"); return 2;
  }
  static uint8_t filecids[MAXSOCK][20];
  int nfile = 0;
  if (cidfile) { /* hex DCIDs, one a line; all the same length */
    FILE *f = fopen(cidfile, "r"); char line[128];
    if (!f) { perror(cidfile); return 2; }
    while (nfile < MAXSOCK && fgets(line, sizeof line, f)) {
      int n = 0; unsigned v;
      for (char *q = line; n < 20 && sscanf(q, "%2x", &v) == 1; q += 2) filecids[nfile][n++] = v;
      if (n == 0) continue;
      if (nfile == 0) cidlen = n; else if (n != cidlen) { fprintf(stderr, "DCIDs differ in length\n"); return 2; }
      nfile++;
    }
    fclose(f);
    if (!nfile) { fprintf(stderr, "no DCIDs in %s\n", cidfile); return 2; }
  }
  int off = 1 + cidlen;
  if (parse_addr(target, &dst) || cidlen < 1 || cidlen > 20 || size < off + 16 || size > MAXSZ ||
      nsock < 1 || nsock > MAXSOCK || batch < 1 || batch > MAXB || cfgid < 0 || cfgid > 7 || gso < 0 || gso > 64) {
    fprintf(stderr, "invalid arguments (size >= 17+cidlen, cidlen 1..20, cfgid 0..7, -g 0..64)\n"); return 2;
  }
  prctl(PR_SET_TIMERSLACK, 1000UL); /* 1 us timer slack for pacing */
  rng ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ull ^ now_ns();

  int ep = epoll_create1(0), fds[MAXSOCK];
  static uint8_t cids[MAXSOCK][20];
  memset(&src, 0, sizeof src); src.sin_family = AF_INET; inet_pton(AF_INET, bindip, &src.sin_addr);
  for (int i = 0; i < nsock; i++) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) { perror("bind"); return 1; }
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    fds[i] = fd;
    if (nfile) { memcpy(cids[i], filecids[i % nfile], cidlen); continue; }
    for (int k = 0; k < cidlen; k++) cids[i][k] = xr();
    cids[i][0] = (cfgid << 5) | (cids[i][0] & 0x1f);
  }

  static uint8_t sbuf[MAXB][MAXSZ], rbuf[MAXB][MAXSZ];
  static struct mmsghdr smsg[MAXB], rmsg[MAXB], gmsg[MAXB];
  static struct iovec siov[MAXB], riov[MAXB];
  static char gcbuf[MAXB][CMSG_SPACE(sizeof(uint16_t))];
  static int gsegs[MAXB];
  for (int k = 0; k < batch; k++) {
    memset(sbuf[k], 0xab, size);
    siov[k] = (struct iovec){sbuf[k], size};
    smsg[k].msg_hdr = (struct msghdr){.msg_name = &dst, .msg_namelen = sizeof dst, .msg_iov = &siov[k], .msg_iovlen = 1};
    riov[k] = (struct iovec){rbuf[k], MAXSZ};
    rmsg[k].msg_hdr = (struct msghdr){.msg_iov = &riov[k], .msg_iovlen = 1};
  }

  uint64_t sent = 0, recv = 0, bad = 0, misrouted = 0, send_err = 0, seq = 0;
  int cur = 0;
  uint64_t t0 = now_ns(), tend = t0 + (uint64_t)(dur * 1e9), tstop = tend + (uint64_t)(drain * 1e9);
  struct epoll_event evs[64];
  for (;;) {
    uint64_t now = now_ns(), timeout_ns;
    if (now < tend) {
      int64_t due = rate > 0 ? (int64_t)((now - t0) * rate / 1e9) + 1 - (int64_t)sent : batch;
      int rounds = 0;
      while (due > 0 && rounds++ < 64) { /* rounds cap keeps receiving going */
        int k = due < batch ? (int)due : batch;
        for (int j = 0; j < k; j++) {
          uint8_t *p = sbuf[j];
          p[0] = 0x40 | (xr() & 0x3f);
          memcpy(p + 1, cids[cur], cidlen);
          uint32_t sq = seq++; uint16_t idx = cur, mg = MAGIC;
          memcpy(p + off, &now, 8); memcpy(p + off + 8, &sq, 4);
          memcpy(p + off + 12, &idx, 2); memcpy(p + off + 14, &mg, 2);
        }
        int r;
        if (gso > 1) { /* the k datagrams as trains of up to gso datagrams, one UDP_SEGMENT message each */
          int nm = 0;
          for (int j = 0; j < k; j += gso, nm++) {
            int cnt = k - j < gso ? k - j : gso;
            gmsg[nm].msg_hdr = (struct msghdr){.msg_name = &dst, .msg_namelen = sizeof dst, .msg_iov = &siov[j], .msg_iovlen = cnt};
            gsegs[nm] = cnt;
            if (cnt > 1) {
              gmsg[nm].msg_hdr.msg_control = gcbuf[nm];
              gmsg[nm].msg_hdr.msg_controllen = sizeof gcbuf[nm];
              struct cmsghdr *cm = CMSG_FIRSTHDR(&gmsg[nm].msg_hdr);
              cm->cmsg_level = SOL_UDP; cm->cmsg_type = UDP_SEGMENT; cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
              uint16_t g = size; memcpy(CMSG_DATA(cm), &g, sizeof g);
            }
          }
          int m = sendmmsg(fds[cur], gmsg, nm, MSG_DONTWAIT);
          r = m < 0 ? -1 : 0;
          for (int j = 0; j < m; j++) r += gsegs[j];
        } else r = sendmmsg(fds[cur], smsg, k, MSG_DONTWAIT);
        if (r < 0) { send_err++; break; }
        sent += r; due -= r;
        cur = (cur + 1) % nsock;
        if (r < k) { send_err++; break; }
        if (rate <= 0) break;
      }
      if (rate > 0) {
        uint64_t next = t0 + (uint64_t)((sent) * 1e9 / rate);
        now = now_ns();
        timeout_ns = next > now ? next - now : 0;
        if (now + timeout_ns > tend) timeout_ns = tend > now ? tend - now : 0;
      } else timeout_ns = 0;
    } else if (now < tstop) timeout_ns = tstop - now;
    else break;

    struct timespec to = {timeout_ns / 1000000000ull, timeout_ns % 1000000000ull};
    int n = epoll_pwait2(ep, evs, 64, &to, NULL);
    for (int e = 0; e < n; e++) {
      int i = evs[e].data.u32;
      for (int rounds = 0; rounds < 4; rounds++) {
        int r = recvmmsg(fds[i], rmsg, batch, MSG_DONTWAIT, NULL);
        if (r <= 0) break;
        uint64_t t = now_ns();
        for (int j = 0; j < r; j++) {
          uint8_t *p = rbuf[j]; uint64_t ts; uint16_t idx, mg;
          if (rmsg[j].msg_len < (unsigned)(off + 16)) { bad++; continue; }
          memcpy(&ts, p + off, 8); memcpy(&idx, p + off + 12, 2); memcpy(&mg, p + off + 14, 2);
          if (mg != MAGIC) { bad++; continue; }
          if (idx != i) misrouted++;
          uint64_t us = (t - ts) / 1000;
          hist[us > HIST_US ? HIST_US : us]++;
          recv++;
        }
        if (r < batch) break;
      }
    }
  }
  struct rusage ru; getrusage(RUSAGE_SELF, &ru);
  double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  double loss = sent ? 100.0 * (double)(sent - (recv < sent ? recv : sent)) / sent : 0;
  printf("{\"target_pps\":%.0f,\"size\":%d,\"cidlen\":%d,\"clients\":%d,\"dur\":%.3f,\"sent\":%lu,\"recv\":%lu,"
         "\"sent_pps\":%.0f,\"recv_pps\":%.0f,\"loss_pct\":%.3f,\"p50_us\":%lu,\"p99_us\":%lu,\"p999_us\":%lu,"
         "\"pcts_us\":[%lu,%lu,%lu,%lu,%lu,%lu,%lu,%lu,%lu],\"bad\":%lu,\"misrouted\":%lu,\"send_err\":%lu,\"gen_cpu_s\":%.3f}\n",
         rate, size, cidlen, nsock, dur, sent, recv, sent / dur, recv / dur, loss,
         recv ? pct(recv, 0.50) : 0, recv ? pct(recv, 0.99) : 0, recv ? pct(recv, 0.999) : 0,
         recv ? pct(recv, 0.50) : 0, recv ? pct(recv, 0.75) : 0, recv ? pct(recv, 0.90) : 0, recv ? pct(recv, 0.95) : 0,
         recv ? pct(recv, 0.97) : 0, recv ? pct(recv, 0.98) : 0, recv ? pct(recv, 0.99) : 0, recv ? pct(recv, 0.995) : 0,
         recv ? pct(recv, 0.999) : 0,
         bad, misrouted, send_err, cpu);
  return 0;
}
