/*
 * udp-gso-peer: a UDP socket driven over stdin/stdout for the UDP GRO tests (node:dgram cannot set UDP_SEGMENT).
 * Built by test/dataplane/gso-peer.ts with cc. usage: udp-gso-peer HOST (binds HOST:0)
 *   stdout: "port N" once bound; then "recv PORT HEX" per datagram received (one per datagram: no UDP_GRO here),
 *           "sent N" per send line (N: bytes sent, or -errno).
 *   stdin:  "send HOST PORT SEG HEX": sends the bytes in one sendmsg; SEG > 0 adds a UDP_SEGMENT cmsg (the kernel
 *           sends it as a GSO train of SEG-byte datagrams, the last possibly shorter). EOF exits.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

static int addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len) {
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof *a6;
    return AF_INET6;
  }
  return -1;
}

static int unhex(const char *h, uint8_t *out, size_t cap) {
  size_t n = 0;
  unsigned v;
  while (h[0] && h[1] && n < cap && sscanf(h, "%2x", &v) == 1) {
    out[n++] = (uint8_t)v;
    h += 2;
  }
  return (int)n;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  struct sockaddr_storage ss;
  socklen_t len;
  int fam = addr(argv[1], 0, &ss, &len);
  if (fam < 0) return 2;
  int fd = socket(fam, SOCK_DGRAM, 0), sz = 8 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  if (fd < 0 || bind(fd, (struct sockaddr *)&ss, len) < 0) { perror("bind"); return 1; }
  getsockname(fd, (struct sockaddr *)&ss, &len);
  printf("port %d\n", ntohs(fam == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port));
  fflush(stdout);
  static uint8_t buf[70000];
  static char hex[2 * sizeof buf + 1];
  char *line = NULL;
  size_t cap = 0;
  struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
  for (;;) {
    if (poll(p, 2, -1) < 0) continue;
    if (p[1].revents & POLLIN) {
      struct sockaddr_storage from;
      socklen_t fl = sizeof from;
      ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
      if (n >= 0) {
        for (ssize_t i = 0; i < n; i++) sprintf(hex + 2 * i, "%02x", buf[i]);
        hex[2 * n] = 0;
        int port = ntohs(from.ss_family == AF_INET ? ((struct sockaddr_in *)&from)->sin_port : ((struct sockaddr_in6 *)&from)->sin6_port);
        printf("recv %d %s\n", port, hex);
        fflush(stdout);
      }
    }
    if (p[0].revents & (POLLIN | POLLHUP)) {
      if (getline(&line, &cap, stdin) < 0) return 0;
      char host[64];
      int port = 0, seg = 0, off = 0;
      if (sscanf(line, "send %63s %d %d %n", host, &port, &seg, &off) < 3 || off == 0) { printf("sent -%d\n", EINVAL); fflush(stdout); continue; }
      int n = unhex(line + off, buf, sizeof buf);
      struct sockaddr_storage to;
      socklen_t tl;
      if (addr(host, port, &to, &tl) < 0) { printf("sent -%d\n", EINVAL); fflush(stdout); continue; }
      struct iovec iov = {buf, (size_t)n};
      char cbuf[CMSG_SPACE(sizeof(uint16_t))];
      struct msghdr m = {.msg_name = &to, .msg_namelen = tl, .msg_iov = &iov, .msg_iovlen = 1};
      if (seg > 0) {
        memset(cbuf, 0, sizeof cbuf);
        m.msg_control = cbuf;
        m.msg_controllen = sizeof cbuf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t g = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &g, sizeof g);
      }
      ssize_t r = sendmsg(fd, &m, 0);
      printf("sent %ld\n", r < 0 ? -(long)errno : (long)r);
      fflush(stdout);
    }
  }
}
