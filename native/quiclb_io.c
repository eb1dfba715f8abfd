/*
 * quiclb_io: batched UDP I/O for the data plane (Linux), a plain Node-API addon in C.
 *
 * One context owns its UDP sockets (listeners, and one connected socket per upstream), each watched by libuv
 * (a uv_poll per socket, level-triggered) with a C callback that only marks the socket ready. After libuv's poll
 * phase, in its check phase, one callback reads the marked sockets (a wake-up's budget, see receive) with recvmmsg
 * into one shared receive ring and calls JavaScript ONCE for the whole batch, however many sockets had data (the
 * data plane has one socket per flow). Marked sockets the budget did not reach stay marked for the next iteration
 * (an idle handle keeps libuv from sleeping meanwhile), and one libuv reports twice in one poll phase stops being
 * watched until it is read: under a backlog of thousands of readable sockets, level-triggered readiness would
 * otherwise make libuv hand over the same sockets again and again in one poll phase (it polls anew while its event
 * buffer comes back full). Sockets sit directly in libuv's epoll set rather than in an epoll set of the addon's own
 * that libuv watches: nesting costs a second epoll_wait and a second readiness check per wake-up (~1.3 us per
 * wake-up measured, bench/dataplane/README.md).
 * Busy-poll alone keeps an epoll set of its own (it polls without going back to libuv).
 * After a batch, while nothing else in the process has work, the check callback waits on libuv's epoll set for
 * the next datagram itself and serves it without a loop iteration (hold_loop).
 *
 * Shared memory (ArrayBuffers created here, views kept by JS):
 *   rx      slots * (slotSize + 64) bytes: received message i at offset i * (slotSize + 64).
 *   rxMeta  `entries` entries of RX_WORDS int32, one per datagram: socket id, offset, length, source port, family
 *           (4/6), flags, then the source address (16 bytes: IPv4 in the first 4).
 *   tx      `entries` sends of TX_WORDS int32: target, offset (into rx), length. target >= 0: the connected
 *           socket with that id (client -> server); target < 0: ~target is an upstream socket id whose datagram
 *           goes to that upstream's client through the upstream's listener (server -> client).
 *   counters float64: errors by reason (see CNT_*), read by JS at scrape time.
 * The JS batch callback returns how many tx entries it filled; they are sent with sendmmsg right after, grouped
 * by socket (order kept per socket). No allocation, JS object or JS call per datagram.
 *
 * UDP GRO (flags bit 1, where the kernel has it): every socket sets UDP_GRO, so the kernel may hand over a train of
 * same-size datagrams from one source as one coalesced message with its segment size in a cmsg (a GSO sender on
 * loopback, a NIC's GRO on real networks). Each segment becomes its own rxMeta entry pointing inside the message's
 * slot (the last may be shorter), with the message's source address, so the router sees exactly the datagrams it
 * sees without GRO and routes each on its own. A wake-up's messages can thus make more entries than slots: they are
 * handed to JS `entries` at a time (one more JS call and send when the table fills; nothing is dropped), and the
 * segments of a train come out consecutive, of one size, to one destination when they share a route: one GSO send.
 * A message longer than its slot keeps its whole segments that fit, one of more than GRO_MAX_SEGS segments its first
 * GRO_MAX_SEGS; the rest count as truncated datagrams.
 *
 * Socket ids carry a generation in their high bits, so an id closed and reused within one batch never sends a
 * stale datagram to the new socket.
 *
 * Trust boundary: everything JS hands in (ids, ring offsets and lengths in tx, ports, the rx index of
 * openUpstream) is checked before use; a bad send descriptor is counted, never sent. The shared buffers are
 * checked for detachment before every use (a transferred buffer's memory belongs to someone else). An exception
 * escaping the batch callback is counted (CNT_CB_ERRORS) and cleared. One wake-up reads at most `slots`
 * messages and, coalesced ones included, about `slots` datagrams (see receive), round robin over the ready
 * sockets, and makes one JS call (one per `entries` datagrams when coalesced messages hold more), so timers and
 * other I/O keep running under a flood. Closing: destroy(), the GC of the
 * context object or the environment's teardown closes every socket (and its poll handle) exactly once; the
 * context's memory goes when both its check and idle handles are closed and the JS object is gone.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define RX_WORDS 10
#define TX_WORDS 3
#define SLOT_BITS 20
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define MAX_EVENTS 256
#define PER_SOCKET_MAX 64
#define GSO_MAX_SEGS 64 /* UDP_MAX_SEGMENTS is 128 (64 before Linux 6.x) */
#define GSO_MAX_BYTES 65000
#define GSO_CMSG_SPACE CMSG_SPACE(sizeof(uint16_t))
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#define GRO_CMSG_SPACE CMSG_SPACE(sizeof(int))
#define ENTRIES_MAX 65536
/* Datagrams taken from one coalesced message (kernels make at most 64 by GRO, 128 by GSO): bounds a wake-up's work */
#define GRO_MAX_SEGS 256

enum {
  CNT_TX_SERVER_REFUSED, /* ECONNREFUSED on a send to a server (ICMP port unreachable came back) */
  CNT_TX_SERVER_FULL,    /* EAGAIN / ENOBUFS: socket buffer full */
  CNT_TX_SERVER_OTHER,
  CNT_TX_CLIENT_REFUSED,
  CNT_TX_CLIENT_FULL,
  CNT_TX_CLIENT_OTHER,
  CNT_RX_ICMP,           /* an ICMP error reported on a connected upstream socket's receive */
  CNT_RX_TRUNCATED,      /* datagrams not fitting a slot (or a coalesced message's beyond it): dropped */
  CNT_RX_OTHER,
  CNT_TX_CLOSED,         /* tx entry naming a socket closed meanwhile */
  CNT_RX_CALLS,          /* recvmmsg calls */
  CNT_TX_CALLS,          /* sendmmsg calls */
  CNT_BATCHES,
  CNT_LAST_BATCH_NS,     /* the last batch: ns from its earliest socket reported ready (libuv's poll phase, or a hold's wait) to its sendmmsg done */
  CNT_GSO_MSGS,          /* UDP GSO messages sent (each 2+ datagrams) */
  CNT_GSO_FALLBACK,      /* GSO messages refused by the path, sent one datagram at a time */
  CNT_CB_ERRORS,         /* exceptions that escaped the JS batch callback (its sends are dropped) */
  CNT_GRO_MSGS,          /* coalesced (UDP GRO) messages received, each split into its datagrams */
  CNT_GRO_DATAGRAMS,     /* datagrams received inside them */
  CNT_ENTRIES_FULL,      /* JS calls made before the wake-up's end because the entry table was full */
  CNT_BUSY_POLL_HITS,    /* busy polls that found datagrams (each saved a sleep, an epoll round and a wake-up) */
  CNT_BUSY_POLL_NS,      /* nanoseconds spent busy-polling (from a wake-up's last datagram to giving up) */
  CNT_RX_STRAY,          /* datagrams from another sender than its server queued on an upstream socket before its connect(): dropped */
  CNT_HOLD_WAKEUPS,      /* wake-ups served while holding the loop (see hold_loop), each without a libuv iteration */
  CNT_COUNT
};

typedef struct {
  int64_t key; /* output socket << 21 | destination upstream (server -> client) */
  uint32_t idx;
} tx_order_t;

struct ctx;

/* A socket's libuv watcher: on readiness it marks its slot (see on_socket_ready). Freed by its close callback. */
typedef struct {
  uv_poll_t handle; /* first: the callback gets the handle */
  struct ctx *c;
  uint32_t slot;
} sock_poll_t;

typedef struct {
  int fd;            /* -1: free */
  int marked;        /* in the ready list (a slot's mark outlives its socket until receive visits the slot) */
  int stopped;       /* not watched by libuv until read (reported twice in one poll phase, see on_socket_ready) */
  uint32_t seen_phase; /* the loop iteration (ctx phase) libuv last reported it in */
  uint64_t mark_ns;  /* when it was marked: its poll phase's first report or its hold's wait returning (the batch's arrival) */
  sock_poll_t *poll;
  uint32_t gen;
  int32_t listener;  /* upstream: id of its listener (slot and generation); listener: -1 */
  struct sockaddr_storage client; /* upstream: its client's address (replies go there) */
  socklen_t client_len;
} sock_t;

typedef struct ctx {
  napi_env env;
  uv_loop_t *loop;
  uv_check_t check; /* after each poll phase: reads the sockets marked ready, calls JS, sends */
  uv_idle_t idle;   /* active while marked sockets wait: libuv polls without sleeping, so the check phase comes */
  int handles_open; /* check and idle until their close callbacks (0 once closing: with !wrapped, the memory can go) */
  int epfd;        /* busy-poll only (busy_ns > 0): every socket, polled without libuv; else -1 */
  int closing;     /* sockets closed, polling stopped: nothing more is read, sent or called */
  int wrapped;     /* the JS object still points here (its finalizer will run) */
  uint32_t slots, slot_size;
  uint32_t entries; /* rxMeta and tx entries: datagrams per JS call (a coalesced message is several) */
  uint32_t stride; /* slot_size + one cache line: slot starts do not all map to the same L1 cache set */
  uint8_t *rx;
  int32_t *rx_meta;
  int32_t *msg_meta; /* this wake-up's received messages (RX_WORDS each), split into rx_meta entries */
  uint32_t *msg_gso; /* their segment size, 0: one datagram */
  int32_t *tx;
  double *counters;
  napi_ref rx_ref, meta_ref, tx_ref, cnt_ref, cb_ref, self_ref;
  napi_async_context async;
  sock_t *socks;
  uint32_t nsocks, cap;
  uint32_t *free_slots; /* closed slots, reused last-closed first: O(1) per new socket (a peer opens flows) */
  uint32_t nfree;
  uint32_t *ready;  /* slots reported readable and not read yet (each once: sock_t.marked), cap entries */
  uint32_t nready;
  uint32_t phase;    /* loop iterations, counted by the check handle */
  uint32_t stamped_phase; /* the iteration phase_ns was read in */
  uint64_t phase_ns; /* the time of this iteration's first report (one clock read per poll phase) */
  uint64_t batch_first_ns; /* the earliest mark among the sockets the last receive read (UINT64_MAX: none) */
  uint32_t unreadied; /* marked sockets receive read since the ready list was last compacted */
  uint32_t *cand;   /* one receive round's sockets, round robin (see gather), cap entries */
  struct mmsghdr *rmsg, *smsg;
  struct iovec *riov, *siov;
  struct sockaddr_storage *raddr;
  tx_order_t *order;
  sock_t **dests;
  uint32_t *segs;  /* datagrams per message being sent */
  char *cbufs;     /* a UDP_SEGMENT control message per message */
  char *rcbufs;    /* a UDP_GRO control message per message received */
  int gso;
  int gro;
  int gro_errno;   /* why UDP_GRO is off though asked for (the kernel refused it), else 0 */
  int in_batch;
  uint32_t rr_next; /* the receive loop starts at the first ready socket from this slot on */
  uint32_t seg_hint; /* datagrams per message expected (largest train seen lately, 1: none): sizes requests */
  uint64_t busy_ns;  /* busy-poll: keep polling this long after a wake-up's last datagram (0: off), see busy_poll */
  int hold;          /* hold the loop after a batch while nothing else has work (see hold_loop) */
  uint32_t *fd_slot; /* fd -> slot + 1 of the context's sockets (0: not ours), fd_cap entries */
  uint32_t fd_cap;
} ctx_t;

static void ctx_release(ctx_t *c);
static void ctx_finish(ctx_t *c);

static napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[160];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_throw_error(env, NULL, msg);
  return NULL;
}

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, NULL, "quiclb_io: N-API call failed: " #call); \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

static int buffers_attached(ctx_t *c);
#define DETACHED_MSG "quiclb_io: a shared buffer was detached (transferred); the context is closed"

static ctx_t *get_ctx(napi_env env, napi_value v) {
  ctx_t *c = NULL;
  if (napi_unwrap(env, v, (void **)&c) != napi_ok || c == NULL || c->closing) {
    napi_throw_error(env, NULL, "quiclb_io: closed or invalid context");
    return NULL;
  }
  if (!buffers_attached(c)) {
    ctx_release(c);
    napi_throw_error(env, NULL, DETACHED_MSG);
    return NULL;
  }
  return c;
}

static int32_t make_id(ctx_t *c, uint32_t slot) { return (int32_t)((c->socks[slot].gen << SLOT_BITS) | slot) & 0x7fffffff; }

static sock_t *lookup(ctx_t *c, int32_t id) {
  uint32_t slot = (uint32_t)id & SLOT_MASK;
  if (id < 0 || slot >= c->nsocks) return NULL;
  sock_t *s = &c->socks[slot];
  if (s->fd < 0 || make_id(c, slot) != id) return NULL;
  return s;
}

static int alloc_slot(ctx_t *c) {
  if (c->nfree > 0) return (int)c->free_slots[--c->nfree];
  if (c->nsocks == c->cap) {
    uint32_t ncap = c->cap ? c->cap * 2 : 64;
    if (ncap > SLOT_MASK + 1) return -1;
    sock_t *n = realloc(c->socks, (size_t)ncap * sizeof(sock_t));
    if (!n) return -1;
    c->socks = n;
    /* each array keeps its contents; one that grew before a later one failed is harmless, cap stays */
    uint32_t *f = realloc(c->free_slots, (size_t)ncap * sizeof(uint32_t));
    if (!f) return -1;
    c->free_slots = f;
    f = realloc(c->ready, (size_t)ncap * sizeof(uint32_t));
    if (!f) return -1;
    c->ready = f;
    f = realloc(c->cand, (size_t)ncap * sizeof(uint32_t));
    if (!f) return -1;
    c->cand = f;
    c->cap = ncap;
  }
  c->socks[c->nsocks].gen = 0;
  c->socks[c->nsocks].fd = -1;
  c->socks[c->nsocks].marked = 0;
  c->socks[c->nsocks].stopped = 0;
  c->socks[c->nsocks].poll = NULL;
  return (int)c->nsocks++;
}

/* Each slot is in the free list at most once (it is pushed when its socket closes), so cap entries suffice. */
static void free_slot(ctx_t *c, uint32_t slot) {
  c->socks[slot].fd = -1;
  c->free_slots[c->nfree++] = slot;
}

static void count_tx_error(ctx_t *c, int to_client, int err, double n) {
  int base = to_client ? CNT_TX_CLIENT_REFUSED : CNT_TX_SERVER_REFUSED;
  if (err == ECONNREFUSED) c->counters[base] += n;
  else if (err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS) c->counters[base + 1] += n;
  else c->counters[base + 2] += n;
}

static int cmp_tx(const void *a, const void *b) {
  const tx_order_t *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return x->idx < y->idx ? -1 : x->idx > y->idx; /* stable: a flow's datagrams keep their order */
}

/* Sends msgs [0, m) on fd; counts errors per datagram (a GSO message counts all its segments). */
static void send_msgs(ctx_t *c, int fd, uint32_t m, int to_client) {
  uint32_t done = 0;
  int interrupted = 0;
  while (done < m) {
    int r = sendmmsg(fd, &c->smsg[done], m - done, MSG_DONTWAIT);
    c->counters[CNT_TX_CALLS]++;
    if (r > 0) { done += (uint32_t)r; continue; }
    int err = r < 0 ? errno : EIO;
    if (err == EINTR && ++interrupted < 8) continue; /* bounded: then the message is counted as lost */
    if (err == EAGAIN || err == EWOULDBLOCK) {
      double lost = 0;
      for (uint32_t k = done; k < m; k++) lost += c->segs[k];
      count_tx_error(c, to_client, err, lost);
      return;
    }
    struct msghdr *h = &c->smsg[done].msg_hdr;
    if (c->segs[done] > 1 && (err == EINVAL || err == EIO || err == EOPNOTSUPP)) {
      /* the path refuses this GSO message (e.g. segments above the route's MTU): its datagrams one by one */
      c->counters[CNT_GSO_FALLBACK]++;
      struct msghdr one = *h;
      one.msg_control = NULL;
      one.msg_controllen = 0;
      one.msg_iovlen = 1;
      for (uint32_t k = 0; k < c->segs[done]; k++) {
        one.msg_iov = &h->msg_iov[k];
        if (sendmsg(fd, &one, MSG_DONTWAIT) < 0) count_tx_error(c, to_client, errno, 1);
        c->counters[CNT_TX_CALLS]++;
      }
    } else count_tx_error(c, to_client, err, c->segs[done]);
    done++;
  }
}

/*
 * Sends tx entries [0, n), grouped by output socket (one sendmmsg per socket: a connected upstream socket for
 * client -> server, the listener for server -> client, so all replies of a batch through one listener leave in
 * one call, each message with its client's address). Within a group, consecutive datagrams to one destination
 * of one size (the last may be shorter) become one UDP GSO message (UDP_SEGMENT): the kernel walks the IP and
 * device path once for all of them. Order is kept per destination.
 */
static void send_batch(ctx_t *c, uint32_t ntx) {
  if (ntx > c->entries) ntx = c->entries;
  tx_order_t *ord = c->order;
  sock_t **dest = c->dests; /* to-client entries: the upstream whose client gets it (its address) */
  const uint32_t ring = c->slots * c->stride;
  uint32_t n = 0;
  for (uint32_t i = 0; i < ntx; i++) {
    int32_t t = c->tx[i * TX_WORDS];
    uint32_t off = (uint32_t)c->tx[i * TX_WORDS + 1], len = (uint32_t)c->tx[i * TX_WORDS + 2];
    if (off >= ring || len > ring - off) { /* not a range of the ring (a bug in JS): dropped and counted */
      count_tx_error(c, t < 0, EINVAL, 1);
      continue;
    }
    sock_t *s = lookup(c, t < 0 ? ~t : t);
    sock_t *l = s && t < 0 ? lookup(c, s->listener) : NULL; /* a listener closed since (its slot maybe reused): none */
    int64_t k = -1; /* nowhere to send (closed meanwhile) */
    if (s && t >= 0) k = (int64_t)((uint32_t)t & SLOT_MASK) << 21;
    else if (l) k = ((int64_t)((uint32_t)s->listener & SLOT_MASK) << 21) | (int64_t)((uint32_t)~t & SLOT_MASK);
    ord[n].key = k;
    ord[n].idx = i;
    dest[i] = t < 0 ? s : NULL;
    n++;
  }
  qsort(ord, n, sizeof *ord, cmp_tx);
  uint32_t i = 0;
  while (i < n) {
    int64_t k = ord[i].key;
    int32_t out = k < 0 ? -1 : (int32_t)(k >> 21);
    uint32_t m = 0, nio = 0;
    while (i < n && (ord[i].key >> 21) == (k >> 21) && (k >= 0) == (ord[i].key >= 0)) {
      /* one message: a run of datagrams to one destination, of one size but the last */
      uint32_t e = ord[i].idx;
      uint32_t seg = (uint32_t)c->tx[e * TX_WORDS + 2];
      uint32_t total = 0, cnt = 0;
      struct iovec *iov = &c->siov[nio];
      while (i < n && ord[i].key == ord[i - cnt].key) {
        uint32_t x = ord[i].idx;
        uint32_t off = (uint32_t)c->tx[x * TX_WORDS + 1], len = (uint32_t)c->tx[x * TX_WORDS + 2]; /* checked above */
        if (cnt > 0 && (!c->gso || len > seg || len == 0 || seg == 0 || cnt >= GSO_MAX_SEGS || total + len > GSO_MAX_BYTES)) break;
        iov[cnt].iov_base = c->rx + off;
        iov[cnt].iov_len = len;
        total += len;
        cnt++;
        i++;
        if (len < seg) break; /* a shorter datagram ends a GSO message */
      }
      struct mmsghdr *h = &c->smsg[m];
      memset(&h->msg_hdr, 0, sizeof h->msg_hdr);
      h->msg_hdr.msg_iov = iov;
      h->msg_hdr.msg_iovlen = cnt;
      if (dest[e]) {
        h->msg_hdr.msg_name = &dest[e]->client;
        h->msg_hdr.msg_namelen = dest[e]->client_len;
      }
      if (cnt > 1) {
        char *cbuf = c->cbufs + (size_t)m * GSO_CMSG_SPACE;
        memset(cbuf, 0, GSO_CMSG_SPACE);
        h->msg_hdr.msg_control = cbuf;
        h->msg_hdr.msg_controllen = GSO_CMSG_SPACE;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&h->msg_hdr);
        cm->cmsg_level = SOL_UDP;
        cm->cmsg_type = UDP_SEGMENT;
        cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t gs = (uint16_t)seg;
        memcpy(CMSG_DATA(cm), &gs, sizeof gs);
        c->counters[CNT_GSO_MSGS]++;
      }
      c->segs[m] = cnt;
      nio += cnt;
      m++;
    }
    if (out < 0) {
      for (uint32_t x = 0; x < m; x++) c->counters[CNT_TX_CLOSED] += c->segs[x];
      continue;
    }
    send_msgs(c, c->socks[out].fd, m, c->socks[out].listener < 0 /* a listener sends to clients */);
  }
}

/*
 * 1 while the four shared ArrayBuffers are attached. A detached one (ArrayBuffer.prototype.transfer(), or
 * structuredClone / postMessage with a transfer list) handed its memory to an owner that may free it: the context
 * must never touch that memory again. Needs an open handle scope.
 */
static int buffers_attached(ctx_t *c) {
  napi_env env = c->env;
  napi_ref refs[4] = {c->rx_ref, c->meta_ref, c->tx_ref, c->cnt_ref};
  for (int i = 0; i < 4; i++) {
    napi_value v;
    bool detached = true;
    if (refs[i] == NULL || napi_get_reference_value(env, refs[i], &v) != napi_ok || v == NULL ||
        napi_is_detached_arraybuffer(env, v, &detached) != napi_ok || detached)
      return 0;
  }
  return 1;
}

/* Closes the context and reports the misuse as an uncaught exception (a bug in this process, not a network event). */
static void fail_detached(ctx_t *c) {
  napi_env env = c->env;
  ctx_release(c);
  napi_value msg, err;
  if (napi_create_string_utf8(env, DETACHED_MSG, NAPI_AUTO_LENGTH, &msg) == napi_ok && napi_create_error(env, NULL, msg, &err) == napi_ok)
    napi_fatal_exception(env, err);
}

static void call_js(ctx_t *c, uint32_t count) {
  napi_env env = c->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value cb, self, arg, ret;
  uint32_t ntx = 0;
  if (napi_get_reference_value(env, c->cb_ref, &cb) == napi_ok && napi_get_reference_value(env, c->self_ref, &self) == napi_ok &&
      napi_create_uint32(env, count, &arg) == napi_ok) {
    c->in_batch = 1;
    napi_status st = napi_make_callback(env, c->async, self, cb, 1, &arg, &ret);
    c->in_batch = 0;
    if (c->closing) ctx_finish(c); /* destroyed (or garbage collected) during the batch */
    else if (!buffers_attached(c)) fail_detached(c);
    else if (st == napi_ok) {
      if (napi_get_value_uint32(env, ret, &ntx) != napi_ok) ntx = 0;
    } else {
      /* The callback threw: what it queued may be half written, so nothing of this batch is sent. Counted, and
         the exception cleared: one bad batch must not take the data plane down (BatchedIo catches its own). */
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value ex;
        napi_get_and_clear_last_exception(env, &ex);
      }
      c->counters[CNT_CB_ERRORS]++;
    }
  }
  if (!c->closing && ntx > 0) send_batch(c, ntx);
  napi_close_handle_scope(env, scope);
}

/* The segment size of a coalesced (UDP GRO) message, 0 for a single datagram. */
static uint32_t gro_size(struct msghdr *m) {
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(m); cm != NULL; cm = CMSG_NXTHDR(m, cm)) {
    if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == UDP_GRO && cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int g;
      memcpy(&g, CMSG_DATA(cm), sizeof g);
      return g > 0 ? (uint32_t)g : 0;
    }
  }
  return 0;
}

static void flush_entries(ctx_t *c, uint32_t count) {
  c->counters[CNT_BATCHES]++;
  call_js(c, count);
}

/*
 * Hands this wake-up's nmsg messages to JS as rxMeta entries, one per datagram (a coalesced message: one per
 * segment, in order), `entries` per JS call. The ring is not written meanwhile, so entries of a later call still
 * point at their data.
 */
static void deliver(ctx_t *c, uint32_t nmsg) {
  uint32_t e = 0;
  for (uint32_t i = 0; i < nmsg; i++) {
    const int32_t *src = &c->msg_meta[(size_t)i * RX_WORDS];
    uint32_t g = c->msg_gso[i], off = (uint32_t)src[1], len = (uint32_t)src[2];
    uint32_t nseg = g == 0 ? 1 : (len + g - 1) / g;
    if (g != 0) {
      c->counters[CNT_GRO_MSGS]++;
      c->counters[CNT_GRO_DATAGRAMS] += nseg;
    }
    for (uint32_t k = 0; k < nseg; k++) {
      if (e == c->entries) {
        c->counters[CNT_ENTRIES_FULL]++;
        flush_entries(c, e);
        if (c->closing) return;
        e = 0;
      }
      int32_t *dst = &c->rx_meta[(size_t)e * RX_WORDS];
      memcpy(dst, src, RX_WORDS * sizeof(int32_t));
      if (g != 0) {
        dst[1] = (int32_t)(off + k * g);
        dst[2] = (int32_t)(len - k * g < g ? len - k * g : g);
      }
      e++;
    }
  }
  if (e > 0) flush_entries(c, e);
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/*
 * Ring slot i's receive header: its iovec (slot i of the ring), address and UDP_GRO control buffer, set once at
 * create; a recvmmsg for slots [n, n + k) passes &rmsg[n]. The kernel writes back the lengths of the headers it
 * filled, which are reset here before their slot's next use: preparing every header a request may fill, per call,
 * cost more than the receive itself at low rates (64 headers for one datagram).
 */
static void receive_header_reset(ctx_t *c, uint32_t i) {
  struct msghdr *m = &c->rmsg[i].msg_hdr;
  m->msg_namelen = sizeof(struct sockaddr_storage);
  m->msg_controllen = c->gro ? GRO_CMSG_SPACE : 0;
}

static void receive_headers_init(ctx_t *c) {
  for (uint32_t i = 0; i < c->slots; i++) {
    c->riov[i].iov_base = c->rx + (size_t)i * c->stride;
    c->riov[i].iov_len = c->slot_size;
    struct msghdr *m = &c->rmsg[i].msg_hdr;
    memset(m, 0, sizeof *m);
    m->msg_iov = &c->riov[i];
    m->msg_iovlen = 1;
    m->msg_name = &c->raddr[i];
    m->msg_control = c->gro ? c->rcbufs + (size_t)i * GRO_CMSG_SPACE : NULL;
    receive_header_reset(c, i);
  }
}

/*
 * This wake-up's ready sockets into c->cand, round robin: those from slot rr_next on first, then the rest, each part
 * in the order given (the ready list's is the order of marking: oldest first). Readiness
 * repeats in the same order while sockets stay readable (libuv's level-triggered epoll, like the busy-poll set), so
 * serving it from its head would serve only the first slots / PER_SOCKET_MAX sockets while they stay full (a
 * flooded listener would starve the replies of every other flow). from_epoll: the busy-poll set (epoll_wait with
 * no timeout); else the ready list (what receive does not reach stays in it).
 */
static uint32_t gather(ctx_t *c, int from_epoll) {
  uint32_t rr = c->rr_next, n = 0;
  if (from_epoll) {
    struct epoll_event ev[MAX_EVENTS];
    int ne = epoll_wait(c->epfd, ev, MAX_EVENTS, 0);
    /* every slot in the set is < nsocks <= cap: at most cap entries */
    for (int e = 0; e < ne; e++) if (ev[e].data.u32 >= rr) c->cand[n++] = ev[e].data.u32;
    for (int e = 0; e < ne; e++) if (ev[e].data.u32 < rr) c->cand[n++] = ev[e].data.u32;
    return n;
  }
  for (uint32_t i = 0; i < c->nready; i++) if (c->ready[i] >= rr) c->cand[n++] = c->ready[i];
  for (uint32_t i = 0; i < c->nready; i++) if (c->ready[i] < rr) c->cand[n++] = c->ready[i];
  return n;
}

static void on_socket_ready(uv_poll_t *h, int status, int events);
static void mark(ctx_t *c, uint32_t slot, uint64_t ns);

/* The socket in slot is being read: it leaves the ready list (ready_compact) and is watched again if it was stopped. */
static void unready(ctx_t *c, uint32_t slot) {
  sock_t *s = &c->socks[slot];
  if (!s->marked) return; /* busy-poll reads sockets libuv has not reported */
  s->marked = 0;
  c->unreadied++;
  if (s->mark_ns < c->batch_first_ns) c->batch_first_ns = s->mark_ns;
  if (s->stopped) {
    s->stopped = 0;
    if (s->poll) uv_poll_start(&s->poll->handle, UV_READABLE, on_socket_ready);
  }
}

/* Drops the slots read since from the ready list; the rest keep their order. */
static void ready_compact(ctx_t *c) {
  if (c->unreadied == 0) return;
  c->unreadied = 0;
  uint32_t k = 0;
  for (uint32_t i = 0; i < c->nready; i++) if (c->socks[c->ready[i]].marked) c->ready[k++] = c->ready[i];
  c->nready = k;
}

/*
 * Reads what the ready sockets hold into the ring (one wake-up's worth, see below): the number of messages. A socket
 * that filled its whole request may hold more: it is read again in a next round (up to 4) while the budget lasts.
 */
static uint32_t receive(ctx_t *c, int from_epoll) {
  /*
   * n messages holding d datagrams. A wake-up takes about `slots` datagrams, not just `slots` messages: coalesced
   * messages of 64 datagrams would otherwise make one wake-up 64x longer (timers, probes and the other sockets wait
   * meanwhile). A message's datagram count is known only once read, so each request asks for as many messages
   * as the rest of the budget holds at seg_hint datagrams each: the largest train of the last wake-ups (halved
   * per wake-up without trains). A wake-up can exceed the budget by what one request brings beyond the hint.
   */
  const uint32_t budget = c->slots;
  const uint32_t hint = c->seg_hint > 1 ? c->seg_hint : 1;
  uint32_t n = 0, d = 0, largest = 1;
  uint32_t nc = gather(c, from_epoll);
  for (int round = 0; round < 4 && nc > 0 && n < c->slots && d < budget; round++) {
    uint32_t nfull = 0; /* sockets that filled their request, kept in c->cand[0, nfull) for the next round */
    for (uint32_t j = 0; j < nc && n < c->slots && d < budget; j++) {
      uint32_t slot = c->cand[j];
      c->rr_next = slot + 1;
      if (slot >= c->nsocks) continue;
      unready(c, slot);
      if (c->socks[slot].fd < 0) continue;
      sock_t *s = &c->socks[slot];
      uint32_t want = c->slots - n, room = (budget - d + hint - 1) / hint;
      if (want > PER_SOCKET_MAX) want = PER_SOCKET_MAX;
      if (want > room) want = room;
      /* the headers of ring slots [n, n + want), ready since create (receive_header_reset after each use) */
      const uint32_t base = n;
      /* MSG_TRUNC: msg_len is the message's real length, so a cut coalesced message counts the segments it lost */
      int r = recvmmsg(s->fd, &c->rmsg[base], want, MSG_DONTWAIT | MSG_TRUNC, NULL);
      c->counters[CNT_RX_CALLS]++;
      if (r < 0) {
        int err = errno;
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) continue;
        if (s->listener >= 0) c->counters[CNT_RX_ICMP]++; /* pending ICMP error of a connected upstream */
        else c->counters[CNT_RX_OTHER]++;
        continue;
      }
      if ((uint32_t)r == want) c->cand[nfull++] = slot; /* nfull <= j: entries not read yet stay intact */
      int32_t id = make_id(c, slot);
      for (int k = 0; k < r; k++) {
        struct msghdr *m = &c->rmsg[base + k].msg_hdr;
        uint32_t len = c->rmsg[base + k].msg_len;
        int cut = c->gro && (m->msg_flags & MSG_CTRUNC);
        uint32_t g = c->gro && !cut ? gro_size(m) : 0;
        receive_header_reset(c, base + k); /* the kernel wrote its lengths; the address stays until the next use */
        if (cut) {
          /* the UDP_GRO cmsg may be the one cut off (another socket option adding cmsgs): a coalesced message
             would pass as one datagram of all its segments, so the message is dropped and counted instead */
          c->counters[CNT_RX_OTHER]++;
          continue;
        }
        if (m->msg_flags & MSG_TRUNC) {
          if (g == 0 || g > c->slot_size) {
            c->counters[CNT_RX_TRUNCATED] += g == 0 ? 1 : (len + g - 1) / g;
            continue;
          }
          uint32_t keep = c->slot_size / g; /* whole segments in the slot */
          c->counters[CNT_RX_TRUNCATED] += (len + g - 1) / g - keep;
          len = keep * g;
        }
        if (g != 0 && (len + g - 1) / g > GRO_MAX_SEGS) { /* more than any kernel makes: the rest counted as cut off */
          c->counters[CNT_RX_TRUNCATED] += (len + g - 1) / g - GRO_MAX_SEGS;
          len = GRO_MAX_SEGS * g;
        }
        if (g >= len) g = 0; /* one datagram */
        uint32_t nseg = g == 0 ? 1 : (len + g - 1) / g;
        d += nseg;
        if (nseg > largest) largest = nseg;
        int32_t *meta = &c->msg_meta[(size_t)n * RX_WORDS];
        uint8_t *dst = c->rx + (size_t)n * c->stride;
        uint8_t *src = c->rx + (size_t)(base + k) * c->stride;
        if (src != dst) memmove(dst, src, len); /* compact after a dropped truncated datagram */
        c->msg_gso[n] = g;
        meta[0] = id;
        meta[1] = (int32_t)(n * c->stride);
        meta[2] = (int32_t)len;
        meta[5] = 0;
        struct sockaddr_storage *a = &c->raddr[base + k];
        if (a->ss_family == AF_INET) {
          struct sockaddr_in *a4 = (struct sockaddr_in *)a;
          meta[3] = ntohs(a4->sin_port);
          meta[4] = 4;
          memcpy(&meta[6], &a4->sin_addr, 4);
          meta[7] = meta[8] = meta[9] = 0;
        } else if (a->ss_family == AF_INET6) {
          struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)a;
          meta[3] = ntohs(a6->sin6_port);
          meta[4] = 6;
          memcpy(&meta[6], &a6->sin6_addr, 16);
        } else {
          meta[3] = 0;
          meta[4] = 0;
          memset(&meta[6], 0, 16);
        }
        n++;
      }
    }
    nc = nfull;
  }
  ready_compact(c);
  if (n > 0) c->seg_hint = largest >= hint / 2 ? largest : hint / 2;
  return n;
}

/*
 * Busy-poll (busy_ns > 0): after a wake-up that moved datagrams, keep polling the sockets (epoll_wait on the
 * busy-poll set with no timeout, then recvmmsg on the ready ones) until busy_ns pass without a datagram, so the next
 * datagram of a busy flow (the server's reply to what was just forwarded, the client's next packet) is taken
 * without a sleep, libuv's epoll round and a context switch: at low rates those cost more CPU than the datagram
 * itself and, on a loaded CPU, set the latency tail. It only ever spins after data (an idle data plane sleeps), and
 * a wake-up returns to libuv at the latest BUSY_POLL_MAX_NS after it began, so timers and other handles run under a
 * steady stream too.
 */
#define BUSY_POLL_MAX_NS 1000000u
static void busy_poll(ctx_t *c, uint64_t start, uint64_t last) {
  uint64_t now = last, spent = 0;
  while (now - start < BUSY_POLL_MAX_NS) {
    uint32_t n = receive(c, 1);
    if (n == 0) {
      now = now_ns();
      if (now - last >= c->busy_ns) break;
      continue;
    }
    c->counters[CNT_BUSY_POLL_HITS]++;
    spent += now - last; /* polling until the datagrams came, not the routing and sending of them */
    deliver(c, n);
    if (c->closing) return;
    uint64_t t1 = now_ns();
    c->counters[CNT_LAST_BATCH_NS] = (double)(t1 - now);
    now = last = t1;
  }
  c->counters[CNT_BUSY_POLL_NS] += (double)(spent + (now - last));
}

/* Does nothing: while active, libuv polls without sleeping, so marked sockets the last check left are read soon. */
static void on_idle(uv_idle_t *h) { (void)h; }

/*
 * libuv's poll phase: a socket is readable. Only marks it: the check phase reads the marked sockets and makes one
 * JS call for all (on_check). A marked socket not read yet (a backlog beyond one wake-up's budget) is reported again
 * on later iterations, level-triggered; reported twice in one poll phase, libuv is polling anew because its event
 * buffer came back full, so the socket stops being watched until it is read (unready): else every such poll hands
 * over the same sockets again. libuv stops a handle whose socket reports POLLERR (status < 0: on a connected
 * upstream, the ICMP error of an earlier send): a socket not marked is restarted and marked, a marked one is
 * restarted when read; its next receive or send takes the error (counted, CNT_RX_ICMP or a refused send).
 */
static void on_socket_ready(uv_poll_t *h, int status, int events) {
  (void)events;
  sock_poll_t *p = (sock_poll_t *)h;
  ctx_t *c = p->c;
  if (c->closing) return;
  sock_t *s = &c->socks[p->slot];
  if (s->marked) {
    if (s->seen_phase == c->phase || status < 0) {
      uv_poll_stop(h);
      s->stopped = 1;
    }
    s->seen_phase = c->phase;
    return;
  }
  if (status < 0) uv_poll_start(h, UV_READABLE, on_socket_ready);
  if (c->stamped_phase != c->phase) {
    c->stamped_phase = c->phase;
    c->phase_ns = now_ns();
  }
  mark(c, p->slot, c->phase_ns);
}

static void mark(ctx_t *c, uint32_t slot, uint64_t ns) {
  sock_t *s = &c->socks[slot];
  s->marked = 1;
  s->seen_phase = c->phase;
  s->mark_ns = ns;
  if (c->nready == 0) uv_idle_start(&c->idle, on_idle);
  c->ready[c->nready++] = slot;
}

/*
 * Holding the loop (default; flags bit 3): after a batch, as long as nothing else in the process has work, the
 * check callback waits for this context's sockets itself instead of returning to libuv, and serves each wake-up
 * on the spot. Why: a wake-up through libuv costs a whole loop iteration (timers, pending, idle and prepare
 * phases, Node's per-iteration hooks, a second epoll_wait for idle-time metrics, the check phase) around the same
 * epoll_wait; at 20k round trips/s that was most of the data plane's user CPU above nginx's and part of its
 * latency tail (bench/dataplane/README.md, "Holding the loop").
 *
 * The wait is epoll_wait on libuv's own epoll set (uv_backend_fd). Every socket of this context is in it (flat
 * registration) and so is everything else libuv watches; libuv registers fds level-triggered with the fd number
 * as the event data, so looking takes nothing from libuv: what is ready stays ready for its next poll. The hold
 * ends, and libuv runs its iteration, as soon as libuv has anything to do:
 *   - an fd that is not ours is ready (a gRPC stream, a health probe, the metrics server, a signal, another
 *     thread's async wake-up such as V8's platform tasks): ours that are ready with it are served first;
 *   - uv_backend_timeout, asked before every wait with the loop's time updated, says libuv has work now or
 *     bounds the wait: a timer due; pending callbacks, idle handles (Node's for setImmediate), closing handles;
 *     or watchers started or stopped since libuv's last poll phase, which it registers in its epoll set only at
 *     the start of its next one (until then their fds would go unseen): a new upstream socket, a socket of ours
 *     restarted after a stop, any I/O the batch callback began. This is the call libuv offers for running its
 *     loop from another's (with uv_backend_fd);
 *   - a backlog beyond one wake-up's budget is left (the idle handle then keeps libuv from sleeping);
 *   - HOLD_MAX_MS pass: a bound for whatever libuv might do between polls that this list does not know of.
 * Busy-poll (busy_ns > 0) replaces this: it keeps the loop itself, spinning.
 */
#define HOLD_MAX_MS 100
static uint32_t serve_marked(ctx_t *c, int held, uint64_t *t0, uint64_t *t1);
static void hold_loop(ctx_t *c) {
  uv_loop_t *loop = c->loop;
  const int bfd = uv_backend_fd(loop);
  struct epoll_event ev[MAX_EVENTS];
  uv_update_time(loop); /* the loop's clock stands still while this callback runs: timers are due by now */
  const uint64_t end = uv_now(loop) + HOLD_MAX_MS;
  for (;;) {
    int timeout = uv_backend_timeout(loop); /* ms to the next timer, -1: none, 0: libuv has work now (see above) */
    uint64_t now = uv_now(loop);
    if (timeout == 0 || now >= end) break;
    if (timeout < 0 || (uint64_t)timeout > end - now) timeout = (int)(end - now);
    int ne = epoll_wait(bfd, ev, MAX_EVENTS, timeout);
    if (ne <= 0) break; /* a timer is due, or a signal came: libuv's turn */
    uint64_t t = now_ns();
    int foreign = 0;
    for (int e = 0; e < ne; e++) {
      int fd = ev[e].data.fd;
      uint32_t slot1 = fd >= 0 && (uint32_t)fd < c->fd_cap ? c->fd_slot[fd] : 0;
      if (slot1 == 0) foreign = 1;
      else if (!c->socks[slot1 - 1].marked) mark(c, slot1 - 1, t);
    }
    if (c->nready > 0) {
      uint64_t t0, t1;
      serve_marked(c, 1, &t0, &t1);
      if (c->closing) return;
    }
    if (foreign || c->nready > 0) break;
    uv_update_time(loop);
  }
  c->phase++; /* libuv's next poll phase is another iteration's (see on_socket_ready) */
}

/*
 * Reads the marked sockets (one wake-up's budget), hands their datagrams to JS and sends: the messages moved (0:
 * none; the context may be closing after). t0: the batch's arrival (its earliest mark), t1: its sends done, their
 * difference CNT_LAST_BATCH_NS. held: a wake-up of hold_loop (counted before the JS call, which may read it).
 */
static uint32_t serve_marked(ctx_t *c, int held, uint64_t *t0, uint64_t *t1) {
  c->batch_first_ns = UINT64_MAX;
  uint32_t n = receive(c, 0);
  if (c->nready == 0) uv_idle_stop(&c->idle); /* else carried to the next iteration: the idle handle stays active */
  if (n == 0) return 0;
  *t0 = c->batch_first_ns != UINT64_MAX ? c->batch_first_ns : now_ns();
  if (held) c->counters[CNT_HOLD_WAKEUPS]++;
  deliver(c, n);
  if (c->closing) return n;
  *t1 = now_ns();
  c->counters[CNT_LAST_BATCH_NS] = (double)(*t1 - *t0);
  return n;
}

static void on_check(uv_check_t *h) {
  ctx_t *c = h->data;
  c->phase++; /* the next poll phase's reports are another iteration's */
  if (c->closing) return;
  if (c->nready == 0) {
    uv_idle_stop(&c->idle);
    return;
  }
  napi_handle_scope scope;
  if (napi_open_handle_scope(c->env, &scope) != napi_ok) return;
  int attached = buffers_attached(c);
  if (!attached) fail_detached(c);
  napi_close_handle_scope(c->env, scope);
  if (!attached) return;
  uint64_t t0, t1;
  if (serve_marked(c, 0, &t0, &t1) == 0 || c->closing) return;
  if (c->busy_ns > 0) busy_poll(c, t0, t1);
  else if (c->hold && c->nready == 0) hold_loop(c);
}

static int parse_addr(napi_env env, napi_value host, uint32_t port, struct sockaddr_storage *ss, socklen_t *len) {
  char buf[64];
  size_t n = 0;
  if (napi_get_value_string_utf8(env, host, buf, sizeof buf, &n) != napi_ok) return -1;
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, buf, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof *a4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, buf, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons((uint16_t)port);
    *len = sizeof *a6;
    return AF_INET6;
  }
  return -1;
}

static void free_poll(uv_handle_t *h) { free(h); }

/* Watches fd (libuv, and the busy-poll set when there is one): its id, or -errno (fd stays open). */
static int add_socket(ctx_t *c, int fd, int32_t listener) {
  if ((uint32_t)fd >= c->fd_cap) { /* fds are small numbers (the lowest free one): the map stays near the fd count */
    uint32_t ncap = c->fd_cap ? c->fd_cap : 64;
    while (ncap <= (uint32_t)fd) ncap *= 2;
    uint32_t *m = realloc(c->fd_slot, (size_t)ncap * sizeof *m);
    if (!m) return -ENOMEM;
    memset(m + c->fd_cap, 0, (size_t)(ncap - c->fd_cap) * sizeof *m);
    c->fd_slot = m;
    c->fd_cap = ncap;
  }
  int slot = alloc_slot(c);
  if (slot < 0) return -ENOMEM;
  sock_poll_t *p = malloc(sizeof *p);
  int err = p ? uv_poll_init_socket(c->loop, &p->handle, fd) : -ENOMEM; /* libuv errors are -errno */
  if (err != 0) {
    free(p); /* not initialised: no close needed */
    free_slot(c, (uint32_t)slot);
    return err;
  }
  p->c = c;
  p->slot = (uint32_t)slot;
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)slot};
  if (c->epfd >= 0 && epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    err = errno;
    uv_close((uv_handle_t *)&p->handle, free_poll);
    free_slot(c, (uint32_t)slot);
    return -err;
  }
  uv_poll_start(&p->handle, UV_READABLE, on_socket_ready);
  sock_t *s = &c->socks[slot];
  s->fd = fd;
  s->poll = p;
  s->stopped = 0; /* a new handle; a mark left on the slot stays: the new socket is read once, as if reported */
  s->gen = (s->gen + 1) & 0x7ff;
  s->listener = listener;
  s->client_len = 0;
  c->fd_slot[fd] = (uint32_t)slot + 1;
  return make_id(c, (uint32_t)slot);
}

/* Stops watching the socket in slot and closes it (the slot itself is the caller's). */
static void close_sock(ctx_t *c, uint32_t slot) {
  sock_t *s = &c->socks[slot];
  if (s->poll) uv_close((uv_handle_t *)&s->poll->handle, free_poll); /* first: libuv forgets the fd before it closes */
  s->poll = NULL;
  s->stopped = 0;
  if (c->epfd >= 0) epoll_ctl(c->epfd, EPOLL_CTL_DEL, s->fd, NULL);
  c->fd_slot[s->fd] = 0;
  close(s->fd);
  s->fd = -1;
}

static void ctx_free(napi_env env, void *data, void *hint);
static void ctx_free_memory(ctx_t *c);

/*
 * UDP_GRO on a throwaway socket: 0 when the kernel has it, else the errno (ENOPROTOOPT before Linux 5.0). flags bit 2
 * (tests only) answers ENOPROTOOPT, as such a kernel would.
 */
static int probe_gro(uint32_t flags) {
  if (flags & 4) return ENOPROTOOPT;
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1, err = setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) < 0 ? errno : 0;
  close(fd);
  return err;
}

/*
 * create(slots, slotSize, onBatch, flags, entries?, busyPollUs?) -> context object with rx, rxMeta, tx, counters
 * ArrayBuffers, gro (whether UDP GRO is on), groError (why not, when asked for) and holdLoop (whether the loop is
 * held, see hold_loop). flags bit 0: UDP GSO; bit 1: UDP GRO; bit 3: hold the loop (not under busy-poll, nor before
 * libuv 1.44). entries: datagrams per JS call (default 8 per slot), at least slots. busyPollUs: see busy_poll
 * (0..1000, default 0: off).
 */
static napi_value create(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t slots = 0, slot_size = 0, flags = 0, entries = 0, busy_us = 0;
  if (argc >= 4) napi_get_value_uint32(env, argv[3], &flags);
  int gso = (flags & 1) != 0;
  napi_valuetype cbtype = napi_undefined;
  if (argc < 3 || napi_get_value_uint32(env, argv[0], &slots) != napi_ok || napi_get_value_uint32(env, argv[1], &slot_size) != napi_ok ||
      slots < 1 || slots > 4096 || slot_size < 64 || slot_size > 65536) {
    napi_throw_range_error(env, NULL, "create(slots 1..4096, slotSize 64..65536, onBatch)");
    return NULL;
  }
  napi_valuetype etype = napi_undefined;
  if (argc >= 5) napi_typeof(env, argv[4], &etype);
  if (etype == napi_undefined) entries = slots * 8 > ENTRIES_MAX ? ENTRIES_MAX : slots * 8;
  else if (napi_get_value_uint32(env, argv[4], &entries) != napi_ok || entries < slots || entries > ENTRIES_MAX) {
    napi_throw_range_error(env, NULL, "create: entries slots..65536");
    return NULL;
  }
  napi_valuetype btype = napi_undefined;
  if (argc >= 6) napi_typeof(env, argv[5], &btype);
  if (btype != napi_undefined && (napi_get_value_uint32(env, argv[5], &busy_us) != napi_ok || busy_us > 1000)) {
    napi_throw_range_error(env, NULL, "create: busyPollUs 0..1000");
    return NULL;
  }
  if (napi_typeof(env, argv[2], &cbtype) != napi_ok || cbtype != napi_function) {
    napi_throw_type_error(env, NULL, "create: onBatch must be a function");
    return NULL;
  }
  ctx_t *c = calloc(1, sizeof *c);
  if (!c) return throw_errno(env, "create", ENOMEM);
  c->env = env;
  c->slots = slots;
  c->slot_size = slot_size;
  c->stride = slot_size + 64;
  c->entries = entries;
  c->busy_ns = (uint64_t)busy_us * 1000u;
  /* busy-poll keeps the loop itself; before libuv 1.44 uv_backend_timeout did not report unregistered watchers */
  c->hold = (flags & 8) != 0 && c->busy_ns == 0 && uv_version() >= 0x012C00;
  c->gso = gso;
  if (flags & 2) {
    c->gro_errno = probe_gro(flags);
    c->gro = c->gro_errno == 0;
  }
  c->epfd = c->busy_ns > 0 ? epoll_create1(EPOLL_CLOEXEC) : -1;
  if (c->busy_ns > 0 && c->epfd < 0) {
    int err = errno;
    free(c);
    return throw_errno(env, "epoll_create1", err);
  }
  /* the send arrays sized for the largest JS call (entries datagrams), the receive headers one per ring slot */
  c->rmsg = calloc(slots, sizeof *c->rmsg);
  c->riov = calloc(slots, sizeof *c->riov);
  c->raddr = calloc(slots, sizeof *c->raddr);
  c->rcbufs = calloc(slots, GRO_CMSG_SPACE);
  c->msg_meta = calloc((size_t)slots * RX_WORDS, sizeof *c->msg_meta);
  c->msg_gso = calloc(slots, sizeof *c->msg_gso);
  c->smsg = calloc(entries, sizeof *c->smsg);
  c->siov = calloc(entries, sizeof *c->siov);
  c->order = calloc(entries, sizeof *c->order);
  c->dests = calloc(entries, sizeof *c->dests);
  c->segs = calloc(entries, sizeof *c->segs);
  c->cbufs = calloc(entries, GSO_CMSG_SPACE);
  const char *failed = NULL;
  if (!c->rmsg || !c->riov || !c->raddr || !c->rcbufs || !c->msg_meta || !c->msg_gso || !c->smsg || !c->siov || !c->order || !c->dests ||
      !c->segs || !c->cbufs)
    failed = "out of memory";

  napi_value obj = NULL, rx, meta, tx, cnt, name, gro_on, hold_on;
  void *p;
#define TRY(call) \
  if (!failed && (call) != napi_ok) failed = #call
  TRY(napi_create_object(env, &obj));
  TRY(napi_create_arraybuffer(env, (size_t)slots * c->stride, &p, &rx));
  if (!failed) {
    c->rx = p;
    receive_headers_init(c);
  }
  TRY(napi_create_arraybuffer(env, (size_t)entries * RX_WORDS * 4, &p, &meta));
  if (!failed) c->rx_meta = p;
  TRY(napi_create_arraybuffer(env, (size_t)entries * TX_WORDS * 4, &p, &tx));
  if (!failed) c->tx = p;
  TRY(napi_create_arraybuffer(env, CNT_COUNT * 8, &p, &cnt));
  if (!failed) {
    c->counters = p;
    memset(c->counters, 0, CNT_COUNT * 8);
  }
  TRY(napi_set_named_property(env, obj, "rx", rx));
  TRY(napi_set_named_property(env, obj, "rxMeta", meta));
  TRY(napi_set_named_property(env, obj, "tx", tx));
  TRY(napi_set_named_property(env, obj, "counters", cnt));
  TRY(napi_get_boolean(env, c->gro, &gro_on));
  TRY(napi_set_named_property(env, obj, "gro", gro_on));
  TRY(napi_get_boolean(env, c->hold, &hold_on));
  TRY(napi_set_named_property(env, obj, "holdLoop", hold_on));
  if (c->gro_errno != 0) {
    napi_value why;
    TRY(napi_create_string_utf8(env, strerror(c->gro_errno), NAPI_AUTO_LENGTH, &why));
    TRY(napi_set_named_property(env, obj, "groError", why));
  }
  TRY(napi_create_reference(env, rx, 1, &c->rx_ref));
  TRY(napi_create_reference(env, meta, 1, &c->meta_ref));
  TRY(napi_create_reference(env, tx, 1, &c->tx_ref));
  TRY(napi_create_reference(env, cnt, 1, &c->cnt_ref));
  TRY(napi_create_reference(env, argv[2], 1, &c->cb_ref));
  TRY(napi_create_reference(env, obj, 0, &c->self_ref));
  TRY(napi_create_string_utf8(env, "quiclb_io", NAPI_AUTO_LENGTH, &name));
  TRY(napi_async_init(env, NULL, name, &c->async));
  uv_loop_t *loop = NULL;
  TRY(napi_get_uv_event_loop(env, &loop));
  if (failed) { /* nothing is polled yet: undo by hand */
    napi_ref refs[6] = {c->rx_ref, c->meta_ref, c->tx_ref, c->cnt_ref, c->cb_ref, c->self_ref};
    for (int i = 0; i < 6; i++) if (refs[i]) napi_delete_reference(env, refs[i]);
    if (c->async) napi_async_destroy(env, c->async);
    if (c->epfd >= 0) close(c->epfd);
    ctx_free_memory(c);
    char msg[200];
    snprintf(msg, sizeof msg, "quiclb_io: create failed: %s", failed);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, NULL, msg);
    return NULL;
  }
#undef TRY
  c->loop = loop;
  uv_check_init(loop, &c->check); /* cannot fail; active (and referenced) from here: keeps the loop alive, as sockets do */
  c->check.data = c;
  uv_check_start(&c->check, on_check);
  uv_idle_init(loop, &c->idle); /* cannot fail */
  c->idle.data = c;
  c->handles_open = 2;
  c->stamped_phase = c->phase - 1; /* no report stamped yet */
  if (napi_wrap(env, obj, c, ctx_free, NULL, NULL) != napi_ok) {
    c->wrapped = 0;
    ctx_release(c); /* closes the check and idle handles, whose close callbacks free the context */
    napi_throw_error(env, NULL, "quiclb_io: create failed: napi_wrap");
    return NULL;
  }
  c->wrapped = 1;
  return obj;
}

static void ctx_free_memory(ctx_t *c) {
  free(c->socks);
  free(c->free_slots);
  free(c->ready);
  free(c->cand);
  free(c->rmsg);
  free(c->riov);
  free(c->raddr);
  free(c->rcbufs);
  free(c->msg_meta);
  free(c->msg_gso);
  free(c->smsg);
  free(c->siov);
  free(c->order);
  free(c->dests);
  free(c->segs);
  free(c->cbufs);
  free(c->fd_slot);
  free(c);
}

/* The context memory goes when both its handles are closed and the JS object no longer points to it. */
static void on_handle_closed(uv_handle_t *h) {
  ctx_t *c = h->data;
  if (--c->handles_open > 0) return;
  if (c->epfd >= 0) close(c->epfd);
  c->epfd = -1;
  if (!c->wrapped) ctx_free_memory(c);
}

/* The second half of closing: never while the batch callback runs (napi_make_callback still uses c->async). */
static void ctx_finish(ctx_t *c) {
  napi_env env = c->env;
  napi_delete_reference(env, c->rx_ref);
  napi_delete_reference(env, c->meta_ref);
  napi_delete_reference(env, c->tx_ref);
  napi_delete_reference(env, c->cnt_ref);
  napi_delete_reference(env, c->cb_ref);
  napi_delete_reference(env, c->self_ref);
  c->rx_ref = c->meta_ref = c->tx_ref = c->cnt_ref = c->cb_ref = c->self_ref = NULL;
  napi_async_destroy(env, c->async);
  uv_close((uv_handle_t *)&c->check, on_handle_closed);
  uv_close((uv_handle_t *)&c->idle, on_handle_closed);
}

/* Closes every socket and stops polling, exactly once; the rest waits for the end of a running batch. */
static void ctx_release(ctx_t *c) {
  if (c->closing) return;
  c->closing = 1;
  for (uint32_t i = 0; i < c->nsocks; i++) if (c->socks[i].fd >= 0) close_sock(c, i);
  uv_check_stop(&c->check);
  uv_idle_stop(&c->idle);
  if (!c->in_batch) ctx_finish(c);
}

/* Finalizer of the context object (garbage collected, or the environment is torn down). */
static void ctx_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  ctx_t *c = data;
  c->wrapped = 0;
  if (!c->closing) ctx_release(c);
  else if (c->handles_open == 0) ctx_free_memory(c);
}

/* destroy(ctx): closes every socket and stops polling (again: nothing). */
static napi_value destroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t *c = NULL;
  if (argc < 1 || napi_unwrap(env, argv[0], (void **)&c) != napi_ok || c == NULL) return NULL;
  napi_remove_wrap(env, argv[0], NULL); /* no finalizer after this */
  c->wrapped = 0;
  if (!c->closing) ctx_release(c);
  else if (c->handles_open == 0) ctx_free_memory(c);
  return NULL;
}

static int set_buffers(int fd, int bytes) {
  if (bytes <= 0) return 0;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  return 0;
}

/* openListener(ctx, host, port, reusePort, bufferBytes) -> [id, boundPort]; throws with the errno text */
static napi_value open_listener(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t *c = get_ctx(env, argv[0]);
  if (!c) return NULL;
  uint32_t port = 0;
  int32_t bufbytes = 0;
  bool reuse = false;
  CHECK(napi_get_value_uint32(env, argv[2], &port));
  if (port > 65535) { napi_throw_range_error(env, "EINVAL", "openListener: port 0..65535"); return NULL; }
  CHECK(napi_get_value_bool(env, argv[3], &reuse));
  CHECK(napi_get_value_int32(env, argv[4], &bufbytes));
  struct sockaddr_storage ss;
  socklen_t len;
  int fam = parse_addr(env, argv[1], port, &ss, &len);
  if (fam < 0) { napi_throw_error(env, "EINVAL", "openListener: not an IP address"); return NULL; }
  int fd = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  if (fam == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (reuse) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (c->gro) setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one); /* the kernel has it (probed at create) */
  set_buffers(fd, bufbytes);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
    int err = errno;
    close(fd);
    napi_throw_error(env, err == EADDRINUSE ? "EADDRINUSE" : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL" : err == EACCES ? "EACCES" : "EBIND", strerror(err));
    return NULL;
  }
  struct sockaddr_storage b;
  socklen_t bl = sizeof b;
  getsockname(fd, (struct sockaddr *)&b, &bl);
  uint32_t bound = b.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&b)->sin_port) : ntohs(((struct sockaddr_in6 *)&b)->sin6_port);
  int id = add_socket(c, fd, -1);
  if (id < 0) { close(fd); return throw_errno(env, "watching the socket", -id); }
  napi_value arr, v;
  CHECK(napi_create_array_with_length(env, 2, &arr));
  CHECK(napi_create_int32(env, id, &v));
  CHECK(napi_set_element(env, arr, 0, v));
  CHECK(napi_create_uint32(env, bound, &v));
  CHECK(napi_set_element(env, arr, 1, v));
  return arr;
}

/* Datagrams open_upstream drains at most (see there). */
#define DRAIN_MAX 65536

/* Whether a and b are the same IPv4 or IPv6 address and port (scope and flow label aside). */
static int same_endpoint(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
  if (a->ss_family != b->ss_family) return 0;
  if (a->ss_family == AF_INET) {
    const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
    return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
  }
  if (a->ss_family == AF_INET6) {
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
  }
  return 0;
}

/*
 * openUpstream(ctx, listenerId, rxIndex, host, port[, localPorts]) -> id (>= 0) or -errno (never throws on a socket
 * error): a socket connected to the server, whose replies go to the client of received datagram rxIndex via the
 * listener. localPorts (Int32Array [n, p1..pn], n <= 8): local ports to try in order before the kernel's choice (a
 * port in use is skipped); on return localPorts[0] is the index of the port taken, or -1 for the kernel's choice.
 */
static napi_value open_upstream(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t *c = get_ctx(env, argv[0]);
  if (!c) return NULL;
  int32_t lid = 0;
  uint32_t idx = 0, port = 0;
  int32_t *local_ports = NULL;
  size_t local_count = 0;
  if (argc >= 6) {
    bool is_typed = false;
    napi_typedarray_type type;
    void *data = NULL;
    size_t n = 0;
    if (napi_is_typedarray(env, argv[5], &is_typed) == napi_ok && is_typed &&
        napi_get_typedarray_info(env, argv[5], &type, &n, &data, NULL, NULL) == napi_ok && type == napi_int32_array && n >= 1) {
      local_ports = (int32_t *)data;
      local_count = local_ports[0] < 0 ? 0 : (size_t)local_ports[0];
      if (local_count > n - 1) local_count = n - 1;
      if (local_count > 8) local_count = 8;
      local_ports[0] = -1;
    }
  }
  CHECK(napi_get_value_int32(env, argv[1], &lid));
  CHECK(napi_get_value_uint32(env, argv[2], &idx));
  CHECK(napi_get_value_uint32(env, argv[4], &port));
  napi_value result;
  sock_t *l = lookup(c, lid);
  if (port == 0 || port > 65535) {
    napi_create_int32(env, -EINVAL, &result);
    return result;
  }
  if (!l || l->listener >= 0 || idx >= c->entries) {
    napi_create_int32(env, -EBADF, &result);
    return result;
  }
  struct sockaddr_storage ss;
  socklen_t len;
  int fam = parse_addr(env, argv[3], port, &ss, &len);
  if (fam < 0) { napi_create_int32(env, -EINVAL, &result); return result; }
  int fd = socket(fam, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = 0, one = 1;
  if (fd < 0) err = errno;
  for (size_t i = 0; fd >= 0 && i < local_count; i++) {
    int32_t p = local_ports[i + 1];
    if (p <= 0 || p > 65535) continue;
    struct sockaddr_storage local;
    memset(&local, 0, sizeof local);
    if (fam == AF_INET) {
      struct sockaddr_in *a = (struct sockaddr_in *)&local;
      a->sin_family = AF_INET;
      a->sin_port = htons((uint16_t)p);
    } else {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&local;
      a->sin6_family = AF_INET6;
      a->sin6_port = htons((uint16_t)p);
    }
    if (bind(fd, (struct sockaddr *)&local, fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)) == 0) {
      local_ports[0] = (int32_t)i;
      break;
    }
    /* in use (or not allowed): the next candidate, then the kernel's choice at connect() */
  }
  if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, len) < 0) { err = errno; close(fd); }
  else if (fd >= 0 && c->gro) setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one); /* a server sending with GSO: coalesced replies */
  if (err) { napi_create_int32(env, -err, &result); return result; }
  if (local_ports && local_ports[0] >= 0) {
    /* Bound before connect(): a datagram from anyone that reached the port in between is still queued (connect()
     * only filters later ones), and the receive path would relay it to the client as the server's reply. Empty the
     * queue: a datagram from another sender is dropped and counted (CNT_RX_STRAY); one from the server itself (a
     * backend still sending to this port for the flow a restarted data plane had here, the case stable ports are
     * for) is dropped too, uncounted: there is no client to relay it to yet, and QUIC resends it. After connect()
     * only the server can add to the queue, so DRAIN_MAX (far more than a receive buffer holds) bounds the loop
     * against a server that keeps sending. */
    char scrap[1];
    struct sockaddr_storage from;
    for (int i = 0; i < DRAIN_MAX; i++) {
      socklen_t fl = sizeof from;
      if (recvfrom(fd, scrap, sizeof scrap, MSG_DONTWAIT | MSG_TRUNC, (struct sockaddr *)&from, &fl) < 0) break;
      if (!same_endpoint(&from, &ss)) c->counters[CNT_RX_STRAY]++;
    }
  }
  int id = add_socket(c, fd, lid);
  if (id < 0) { close(fd); napi_create_int32(env, id, &result); return result; }
  sock_t *s = &c->socks[id & SLOT_MASK];
  const int32_t *meta = &c->rx_meta[(size_t)idx * RX_WORDS];
  memset(&s->client, 0, sizeof s->client);
  if (meta[4] == 4) {
    struct sockaddr_in *a = (struct sockaddr_in *)&s->client;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)meta[3]);
    memcpy(&a->sin_addr, &meta[6], 4);
    s->client_len = sizeof *a;
  } else {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&s->client;
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)meta[3]);
    memcpy(&a->sin6_addr, &meta[6], 16);
    s->client_len = sizeof *a;
  }
  napi_create_int32(env, id, &result);
  return result;
}

/* close(ctx, id): closes one socket (a stale id is ignored). */
static napi_value close_socket(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t *c = NULL;
  if (napi_unwrap(env, argv[0], (void **)&c) != napi_ok || c == NULL || c->closing) return NULL;
  int32_t id = 0;
  CHECK(napi_get_value_int32(env, argv[1], &id));
  sock_t *s = lookup(c, id);
  if (!s) return NULL;
  uint32_t slot = (uint32_t)(s - c->socks);
  close_sock(c, slot);
  free_slot(c, slot);
  return NULL;
}

/* send(ctx, n): sends tx entries [0, n) now (outside a batch callback). */
static napi_value send_now(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t *c = get_ctx(env, argv[0]);
  if (!c) return NULL;
  uint32_t n = 0;
  CHECK(napi_get_value_uint32(env, argv[1], &n));
  send_batch(c, n);
  return NULL;
}

/* localPort(ctx, id) -> the socket's bound port, or -1 */
static napi_value local_port(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  ctx_t *c = get_ctx(env, argv[0]);
  if (!c) return NULL;
  int32_t id = 0;
  CHECK(napi_get_value_int32(env, argv[1], &id));
  sock_t *s = lookup(c, id);
  int port = -1;
  if (s) {
    struct sockaddr_storage b;
    socklen_t bl = sizeof b;
    if (getsockname(s->fd, (struct sockaddr *)&b, &bl) == 0)
      port = b.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&b)->sin_port) : ntohs(((struct sockaddr_in6 *)&b)->sin6_port);
  }
  napi_value r;
  napi_create_int32(env, port, &r);
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor d[] = {
      {"create", NULL, create, NULL, NULL, NULL, napi_default, NULL},
      {"destroy", NULL, destroy, NULL, NULL, NULL, napi_default, NULL},
      {"openListener", NULL, open_listener, NULL, NULL, NULL, napi_default, NULL},
      {"openUpstream", NULL, open_upstream, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, close_socket, NULL, NULL, NULL, napi_default, NULL},
      {"send", NULL, send_now, NULL, NULL, NULL, napi_default, NULL},
      {"localPort", NULL, local_port, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value v;
  napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
  napi_create_uint32(env, RX_WORDS, &v);
  napi_set_named_property(env, exports, "RX_WORDS", v);
  napi_create_uint32(env, TX_WORDS, &v);
  napi_set_named_property(env, exports, "TX_WORDS", v);
  napi_create_uint32(env, CNT_COUNT, &v);
  napi_set_named_property(env, exports, "COUNTERS", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
