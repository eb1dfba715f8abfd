/**
 * quiclb_* metrics of the data plane. The packet path only bumps plain numbers (typed arrays in the Router,
 * fields on server records); prom-client reads them at scrape time through collect(), so no label hashing
 * happens per packet. One set of metrics per Registry, shared by every Dataplane registered on it (label `lb`).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { IoCallCounts, IoErrorCounts, IoPath, LatencySampler, PortChoiceCounts } from './io/types.js';
import { ROUTING_MODES } from '../lib/config/snapshot.js';
import { DROP_REASONS, OUTCOMES, TABLES, UNROUTABLE_REASONS, type Router } from './router.js';

/** What the metrics read from one data plane. */
export interface MetricsSource {
  readonly lbName: string;
  readonly router: Router;
  /** Live configs: config id -> state. */
  liveConfigs(): { configId: number; state: string }[];
  readonly sendErrors: { upstream: number; reply: number };
  readonly upstreamSockets: number;
  /** Cap of upstream sockets (Infinity: none). */
  readonly upstreamSocketLimit?: number;
  /** Worker index when running as one of several worker processes (per-worker series), else null. */
  readonly workerLabel: string | null;
  /** The datagram I/O path (dataplane/io/), null before start. */
  readonly ioPath?: IoPath | null;
  ioErrors?(): IoErrorCounts;
  ioCalls?(): IoCallCounts | null;
  /** Upstream sockets by how their local port was chosen (stable upstream ports on), null when off. */
  upstreamPortChoices?(): PortChoiceCounts | null;
}

type Emit = (labels: Record<string, string | number>, value: number) => void;

class Hub {
  readonly sources = new Set<MetricsSource>();

  constructor(readonly registry: Registry) {
    const sources = this.sources;
    const counter = (name: string, help: string, labelNames: string[], fill: (s: MetricsSource, emit: Emit) => void) =>
      new Counter({
        name,
        help,
        labelNames: ['lb', ...labelNames],
        registers: [registry],
        collect() {
          this.reset();
          for (const s of sources) fill(s, (labels, v) => this.inc({ lb: s.lbName, ...labels }, v));
        },
      });
    const gauge = (name: string, help: string, labelNames: string[], fill: (s: MetricsSource, emit: Emit) => void, aggregator: 'sum' | 'max' = 'sum') =>
      new Gauge({
        name,
        help,
        labelNames: ['lb', ...labelNames],
        registers: [registry],
        aggregator,
        collect() {
          this.reset();
          for (const s of sources) fill(s, (labels, v) => this.set({ lb: s.lbName, ...labels }, v));
        },
      });
    const byOutcome = (which: 'routedPackets' | 'routedBytes') => (s: MetricsSource, emit: Emit) => {
      const a = s.router.counters[which];
      for (let o = 0; o < OUTCOMES.length; o++) {
        for (let id = 0; id < 8; id++) {
          const v = a[o * 8 + id];
          // Always show each outcome once (config_id "none" for table/fallback, the live ids for cid).
          if (v > 0 || (o !== 0 && id === 7)) emit({ outcome: OUTCOMES[o], config_id: id === 7 ? 'none' : id }, v);
        }
      }
    };
    const named = (names: readonly string[], label: string, pick: (s: MetricsSource) => Float64Array) => (s: MetricsSource, emit: Emit) => {
      const a = pick(s);
      names.forEach((n, i) => emit({ [label]: n }, a[i]));
    };

    counter('quiclb_received_packets_total', 'Client datagrams received on the listening sockets.', [], (s, e) => e({}, s.router.counters.received));
    counter('quiclb_worker_received_packets_total', 'Client datagrams received, per worker process (worker mode only).', ['worker'], (s, e) => {
      if (s.workerLabel !== null) e({ worker: s.workerLabel }, s.router.counters.received);
    });
    counter('quiclb_received_bytes_total', 'Bytes of client datagrams received.', [], (s, e) => e({}, s.router.counters.receivedBytes));
    counter(
      'quiclb_packets_total',
      'Client datagrams forwarded, by routing outcome (cid, table, fallback) and the config id of a routable DCID ("none" otherwise).',
      ['outcome', 'config_id'],
      byOutcome('routedPackets'),
    );
    counter('quiclb_bytes_total', 'Bytes of client datagrams forwarded, by routing outcome and config id.', ['outcome', 'config_id'], byOutcome('routedBytes'));
    counter('quiclb_dropped_packets_total', 'Client datagrams dropped, by reason.', ['reason'], named(DROP_REASONS, 'reason', (s) => s.router.counters.dropPackets));
    counter('quiclb_dropped_bytes_total', 'Bytes of client datagrams dropped, by reason.', ['reason'], named(DROP_REASONS, 'reason', (s) => s.router.counters.dropBytes));
    counter(
      'quiclb_unroutable_packets_total',
      'DCID decodes that found no server, by reason (then routed by the tables or the fallback); a flow that repeats its DCID is served from its cached decision and not counted again.',
      ['reason'],
      named(UNROUTABLE_REASONS, 'reason', (s) => s.router.counters.unroutable),
    );
    counter('quiclb_table_hits_total', 'Datagrams routed by a flow table, by table.', ['table'], named(TABLES, 'table', (s) => s.router.counters.tableHits));
    counter('quiclb_learned_cids_total', "Long-header server replies whose SCID was (re)learned into the DCID table (counts replies, not distinct CIDs).", [], (s, e) => e({}, s.router.counters.learned));
    counter(
      'quiclb_learned_length_hits_total',
      'Short headers routed by the DCID table at the length of a learned server CID other than the guessed DCID length (included in quiclb_table_hits_total{table="dcid"}).',
      [],
      (s, e) => e({}, s.router.counters.learnedLengthHits),
    );
    gauge('quiclb_flows', 'Client flows in the flow table.', [], (s, e) => e({}, s.router.flows.size));
    gauge('quiclb_dcid_entries', 'Entries in the DCID table.', [], (s, e) => e({}, s.router.dcids.size));
    gauge('quiclb_upstream_sockets', 'Open upstream sockets (one per client flow and server).', [], (s, e) => e({}, s.upstreamSockets));
    counter(
      'quiclb_upstream_ports_total',
      'Upstream sockets opened with stable upstream ports, by how the local port was chosen: hashed (the flow\'s own port, the same after a restart), probed (in use: a later candidate), kernel (all candidates in use).',
      ['choice'],
      (s, e) => {
        const c = s.upstreamPortChoices?.();
        if (!c) return;
        e({ choice: 'hashed' }, c.hashed);
        e({ choice: 'probed' }, c.probed);
        e({ choice: 'kernel' }, c.kernel);
      },
    );
    gauge('quiclb_flow_table_max', 'Bound of the confirmed flows (within the socket cap) and of the confirmed DCID entries.', [], (s, e) => e({}, s.router.flows.max), 'max');
    gauge('quiclb_unconfirmed_entries', 'Entries in the unconfirmed (new-flow) budget, by table.', ['table'], (s, e) => {
      e({ table: 'flow' }, s.router.flows.unconfirmedCount);
      e({ table: 'dcid' }, s.router.dcids.unconfirmedCount);
    });
    gauge('quiclb_unconfirmed_table_max', 'Bound of the unconfirmed (new-flow) budget, by table.', ['table'], (s, e) => {
      e({ table: 'flow' }, s.router.flows.maxUnconfirmed);
      e({ table: 'dcid' }, s.router.dcids.maxUnconfirmed);
    }, 'max');
    gauge('quiclb_upstream_socket_limit', 'Cap of open upstream sockets from the descriptor limit and the local port range (-1: none).', [], (s, e) => {
      const l = s.upstreamSocketLimit ?? Infinity;
      e({}, Number.isFinite(l) ? l : -1);
    });
    counter('quiclb_flows_confirmed_total', 'Entries moved from the unconfirmed to the confirmed budget (the client proved it receives the backend\'s answers), by table.', ['table'], (s, e) => {
      e({ table: 'flow' }, s.router.flows.counters.confirmed);
      e({ table: 'dcid' }, s.router.dcids.counters.confirmed);
    });
    counter('quiclb_flows_created_total', 'Entries created, by table.', ['table'], (s, e) => {
      e({ table: 'flow' }, s.router.flows.counters.created);
      e({ table: 'dcid' }, s.router.dcids.counters.created);
    });
    counter('quiclb_flow_evictions_total', 'Entries evicted because their budget was full (least recently used first), by table and budget (unconfirmed entries only ever evict each other).', ['table', 'state'], (s, e) => {
      for (const [table, t] of [['flow', s.router.flows], ['dcid', s.router.dcids]] as const) {
        e({ table, state: 'unconfirmed' }, t.counters.evictedUnconfirmed);
        e({ table, state: 'confirmed' }, t.counters.evicted - t.counters.evictedUnconfirmed);
      }
    });
    counter('quiclb_flow_expirations_total', 'Entries removed after their idle timeout, by table and budget.', ['table', 'state'], (s, e) => {
      for (const [table, t] of [['flow', s.router.flows], ['dcid', s.router.dcids]] as const) {
        e({ table, state: 'unconfirmed' }, t.counters.expiredUnconfirmed);
        e({ table, state: 'confirmed' }, t.counters.expired - t.counters.expiredUnconfirmed);
      }
    });
    counter('quiclb_send_errors_total', 'Datagrams the kernel refused to send, by direction.', ['direction'], (s, e) => {
      e({ direction: 'to_server' }, s.sendErrors.upstream);
      e({ direction: 'to_client' }, s.sendErrors.reply);
    });
    counter('quiclb_backend_packets_total', 'Datagrams per server and direction.', ['server', 'direction'], (s, e) => {
      for (const r of s.router.serverList()) {
        e({ server: r.name, direction: 'to_server' }, r.packets);
        e({ server: r.name, direction: 'to_client' }, r.replyPackets);
      }
    });
    counter('quiclb_backend_bytes_total', 'Bytes per server and direction.', ['server', 'direction'], (s, e) => {
      for (const r of s.router.serverList()) {
        e({ server: r.name, direction: 'to_server' }, r.bytes);
        e({ server: r.name, direction: 'to_client' }, r.replyBytes);
      }
    });
    gauge(
      'quiclb_backend_healthy',
      'Server health from QUIC probes: 1 healthy (or not yet probed), 0 unhealthy.',
      ['server'],
      (s, e) => {
        for (const r of s.router.serverList()) e({ server: r.name }, r.health === 'unhealthy' ? 0 : 1);
      },
      'max',
    );
    gauge(
      'quiclb_backend_accepting',
      '1 when the server is in the fallback pool (healthy, state active, weight > 0).',
      ['server'],
      (s, e) => {
        for (const r of s.router.serverList()) e({ server: r.name }, r.acceptsNew ? 1 : 0);
      },
      'max',
    );
    gauge(
      'quiclb_io_path_info',
      'The datagram I/O path the data plane runs: batched (recvmmsg/sendmmsg addon) or dgram (node:dgram).',
      ['path'],
      (s, e) => {
        if (s.ioPath) e({ path: s.ioPath }, 1);
      },
      'max',
    );
    counter(
      'quiclb_io_errors_total',
      'Datagrams the I/O layer could not send or receive, by direction and reason (refused: ECONNREFUSED, an ICMP error; full: socket buffer full; truncated: did not fit a receive slot; stray: received by an upstream socket but not from its server, e.g. sent to a stable upstream port before its connect()).',
      ['path', 'direction', 'reason'],
      (s, e) => {
        if (!s.ioPath || !s.ioErrors) return;
        const x = s.ioErrors();
        const path = s.ioPath;
        for (const [direction, c] of [['to_server', x.toServer], ['to_client', x.toClient]] as const) {
          e({ path, direction, reason: 'refused' }, c.refused);
          e({ path, direction, reason: 'full' }, c.full);
          e({ path, direction, reason: 'other' }, c.other);
        }
        e({ path, direction: 'to_client', reason: 'receive' }, x.receive);
        e({ path, direction: 'to_server', reason: 'truncated' }, x.truncated);
        e({ path, direction: 'to_client', reason: 'stray' }, x.stray);
      },
    );
    /** A batched-path counter without labels, read from the I/O call counters (none on the node:dgram path). */
    const ioCounter = (name: string, help: string, pick: (c: IoCallCounts) => number) =>
      counter(name, help, [], (s, e) => {
        const c = s.ioCalls?.();
        if (c) e({}, pick(c));
      });
    ioCounter(
      'quiclb_io_batches_total',
      'Batched I/O path: batches handed to the router (one JS call each); received datagrams / batches is the mean batch size.',
      (c) => c.batches,
    );
    counter('quiclb_io_syscalls_total', 'Batched I/O path: recvmmsg and sendmmsg calls.', ['call'], (s, e) => {
      const c = s.ioCalls?.();
      if (!c) return;
      e({ call: 'recvmmsg' }, c.recv);
      e({ call: 'sendmmsg' }, c.send);
    });
    ioCounter('quiclb_io_gso_messages_total', 'Batched I/O path: UDP GSO messages sent (each carries 2 or more datagrams to one destination).', (c) => c.gsoMessages);
    ioCounter(
      'quiclb_io_gro_messages_total',
      'Batched I/O path: coalesced UDP GRO messages received (each split back into its datagrams, routed one by one).',
      (c) => c.groMessages,
    );
    ioCounter('quiclb_io_gro_datagrams_total', 'Batched I/O path: datagrams received inside coalesced UDP GRO messages.', (c) => c.groDatagrams);
    gauge(
      'quiclb_io_gro_info',
      'Batched I/O path: UDP GRO on receive (state: on; off, by QUICLB_IO_GRO=0; unavailable, the kernel refused UDP_GRO).',
      ['state'],
      (s, e) => {
        const c = s.ioCalls?.();
        if (c) e({ state: c.gro }, 1);
      },
      'max',
    );
    gauge(
      'quiclb_io_busy_poll_microseconds',
      'Batched I/O path: busy-poll setting (QUICLB_IO_BUSY_POLL_US): after a wake-up that moved datagrams, the sockets are polled until this long passes without one (0: off).',
      [],
      (s, e) => {
        const c = s.ioCalls?.();
        if (c) e({}, c.busyPollUs);
      },
      'max',
    );
    ioCounter('quiclb_io_busy_poll_hits_total', 'Batched I/O path: busy polls that found datagrams (each a sleep and wake-up saved).', (c) => c.busyPollHits);
    ioCounter(
      'quiclb_io_busy_poll_seconds_total',
      'Batched I/O path: time spent busy-polling (waiting for datagrams; their routing and sending not included).',
      (c) => c.busyPollSeconds,
    );
    ioCounter(
      'quiclb_io_held_wakeups_total',
      'Batched I/O path: wake-ups served while the event loop was held (QUICLB_IO_HOLD_LOOP), each without an event-loop iteration.',
      (c) => c.heldWakeups,
    );
    gauge('quiclb_config_version', 'Version of the snapshot in force.', [], (s, e) => e({}, s.router.version), 'max');
    gauge(
      'quiclb_routing_mode',
      'Routing mode in force: 1 for the mode (quic-lb: CIDs, tables, fallback; 4-tuple: 4-tuple table and fallback only), 0 for the others.',
      ['mode'],
      (s, e) => {
        for (const m of ROUTING_MODES) e({ mode: m }, s.router.routing === m ? 1 : 0);
      },
      'max',
    );
    gauge(
      'quiclb_config_live',
      'Live QUIC-LB configs (1 per config id and state).',
      ['config_id', 'state'],
      (s, e) => {
        for (const c of s.liveConfigs()) e({ config_id: c.configId, state: c.state }, 1);
      },
      'max',
    );
  }
}

const hubs = new WeakMap<Registry, Hub>();

/** Registers a data plane's counters on `registry` (creating the metrics on first use). */
export function attachMetrics(registry: Registry, source: MetricsSource): () => void {
  let hub = hubs.get(registry);
  if (hub === undefined) {
    hub = new Hub(registry);
    hubs.set(registry, hub);
  }
  hub.sources.add(source);
  return () => hub.sources.delete(source);
}

/** 1 in this many client datagrams has its routing latency observed. */
export const LATENCY_SAMPLE_EVERY = 1024;

/**
 * prom-client's default process and Node metrics for a data-plane process (standalone, a worker, the node agent).
 * Its event-loop lag histogram samples with a timer; prom-client's default 10 ms period cost the data plane ~4% of
 * its CPU per datagram at 20k round trips/s (bench/dataplane/README.md, "Holding the loop"), so it samples every
 * 100 ms: the lag percentiles keep their meaning, a stall shorter than the period may go unseen.
 */
export function collectProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry, prefix: 'quiclb_', eventLoopMonitoringPrecision: 100 });
}

const latencies = new WeakMap<Registry, Histogram<'path'>>();

/**
 * The sampled routing latency (quiclb_routing_latency_seconds{path}): one observation per LATENCY_SAMPLE_EVERY
 * client datagrams, seconds from arrival to send (batched path: the sampled batch, from the readable event to
 * sendmmsg done; dgram path: the datagram's 'message' handler up to its send call).
 */
export function routingLatencySampler(registry: Registry): (path: IoPath) => LatencySampler {
  let h = latencies.get(registry);
  if (h === undefined) {
    h = new Histogram({
      name: 'quiclb_routing_latency_seconds',
      help: `Routing latency of a sample of client datagrams (1 in ${LATENCY_SAMPLE_EVERY}): from arrival to send, by I/O path.`,
      labelNames: ['path'],
      buckets: [5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2],
      registers: [registry],
    });
    latencies.set(registry, h);
  }
  const hist = h;
  return (path) => {
    const child = hist.labels({ path });
    return { every: LATENCY_SAMPLE_EVERY, observe: (s: number) => child.observe(s) };
  };
}
