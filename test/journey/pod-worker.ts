/**
 * The pod network's worker: runs inside the namespace W (started by agent.ts as `unshare --net`, so W is this
 * process's own namespace and dies with it and its children). It wires W to the node namespaces (veth pairs), holds
 * the pod IPs, and runs the backends, the ECMP relay and the clients in-process (gtlsclient as child processes, which
 * inherit W). Requests are agent.ts's, forwarded as they came: JSON lines with "id", answered under the same id.
 */
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import { isQuicLibraryError, selfSignedCert } from '../../examples/example-quic-backend.js';
import { JourneyBackend, setActiveConnectionIdLimit } from './backend.js';
import { MAX_EXAMPLES, type BackendAudit, type PodBackend } from './pod-backend.js';
import { QuicGoBackend } from './quicgo-backend.js';
import { runClient, type ClientRequest } from './clients.js';
import { EcmpRelay, type Endpoint } from './ecmp.js';
import { emit, int, ip, ipv4, serveOps, str, type Json } from './lines.js';

const tls = selfSignedCert();
const backends = new Map<string, PodBackend>();
/** Stopped backends keep their audit (a foreign CID seen before the stop still counts). */
const stopped: PodBackend[] = [];
const relays = new Map<string, EcmpRelay>();
/** Pod IPs added to lo, with how many backends use each. */
const podIps = new Map<string, number>();
let clientIp = '';
/** The quic-go backend program (setup's "quicGoBackend"), when this world runs quic-go backends. */
let quicGoBinary: string | null = null;

const log = (line: string): void => emit({ event: 'log', source: 'pod-network', line });

process.on('uncaughtException', (e) => {
  // @matrixai/quic throws connection events (idle timeouts, peer closes) where nobody can catch them; one client's
  // or backend's failure must not end the world.
  log(`uncaught (kept running${isQuicLibraryError(e) ? ', QUIC library' : ''}): ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
});
process.on('unhandledRejection', (e) => log(`unhandled rejection (kept running): ${String(e)}`));

async function addAddress(addr: string): Promise<void> {
  await ip('addr', 'replace', `${addr}/32`, 'dev', 'lo');
}

async function setup(req: Json): Promise<Json> {
  clientIp = ipv4(req, 'clientIp');
  setActiveConnectionIdLimit(int(req, 'activeConnectionIdLimit', 2, 16, 8));
  if (req.quicGoBackend !== undefined) quicGoBinary = str(req, 'quicGoBackend');
  await ip('link', 'set', 'lo', 'up');
  await addAddress(clientIp);
  const nodes = req.nodes as { index: number; ip: string; pid: number }[];
  for (const n of nodes) {
    // the veth's other end goes straight into the node's namespace (by its process): it never exists in the host's
    const ifname = `vn${n.index}`;
    await ip('link', 'add', ifname, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', String(n.pid));
    await ip('link', 'set', ifname, 'up');
    await ip('route', 'add', `${n.ip}/32`, 'dev', ifname, 'src', clientIp);
  }
  return { ok: true };
}

async function startBackend(req: Json): Promise<Json> {
  const name = str(req, 'name');
  if (backends.has(name)) throw new Error(`backend ${name} is already running`);
  const host = ipv4(req, 'ip');
  const port = int(req, 'port', 1, 65535);
  const dir = str(req, 'dir');
  const stack = req.stack ?? 'matrixai';
  if (stack !== 'matrixai' && stack !== 'quic-go') throw new Error(`"stack" must be "matrixai" or "quic-go", got ${JSON.stringify(stack)}`);
  if (stack === 'quic-go' && quicGoBinary === null) throw new Error('a quic-go backend needs "quicGoBackend" (the program) in setup');
  await addAddress(host);
  podIps.set(host, (podIps.get(host) ?? 0) + 1);
  let me: PodBackend;
  const log = (line: string) => emit({ event: 'backend', name, line });
  try {
    me = stack === 'quic-go'
      ? await QuicGoBackend.start({ binary: quicGoBinary!, name, host, port, dir, tls, log })
      : await JourneyBackend.start({ name, host, port, dir, tls, log });
  } catch (e) {
    await releaseIp(host);
    throw e;
  }
  backends.set(name, me);
  return { ok: true, stack, generator: me.generator };
}

async function releaseIp(host: string): Promise<void> {
  const n = (podIps.get(host) ?? 1) - 1;
  if (n > 0) return void podIps.set(host, n);
  podIps.delete(host);
  // the pod is gone: so is its address (a client still sending to it gets nothing, as in a cluster)
  await ip('addr', 'del', `${host}/32`, 'dev', 'lo').catch(() => {});
}

async function stopBackend(req: Json): Promise<Json> {
  const name = str(req, 'name');
  const b = backends.get(name);
  if (!b) throw new Error(`no running backend ${name}`);
  backends.delete(name);
  stopped.push(b);
  try {
    await b.stop();
  } finally {
    await releaseIp(b.host);
  }
  return { ok: true };
}

function endpoint(v: unknown, what: string): Endpoint {
  const o = v as Json;
  if (typeof o !== 'object' || o === null) throw new Error(`${what} must be {"ip","port"}`);
  return { ip: ipv4(o, 'ip'), port: int(o, 'port', 1, 65535) };
}

async function ecmp(req: Json): Promise<Json> {
  const listen = endpoint(req.listen, 'listen');
  if (!Array.isArray(req.targets) || req.targets.length === 0 || req.targets.length > 16) throw new Error('"targets" must list 1 to 16 endpoints');
  const targets = req.targets.map((t, i) => endpoint(t, `targets[${i}]`));
  const key = `${listen.ip}:${listen.port}`;
  relays.get(key)?.close();
  relays.delete(key);
  await addAddress(listen.ip);
  relays.set(key, await EcmpRelay.start(listen, targets, clientIp));
  return { ok: true };
}

async function servedBy(clientCids: string[]): Promise<{ names: string[]; migrated: number }> {
  const names = new Set<string>();
  let migrated = 0;
  for (const b of [...backends.values(), ...stopped]) {
    for (const c of (await b.clients(clientCids)).values()) {
      if (c.responses > 0) names.add(b.name);
      if (c.dcids >= 2) migrated++;
    }
  }
  return { names: [...names], migrated };
}

async function client(req: Json): Promise<Json> {
  const kind = str(req, 'kind');
  if (kind !== 'ngtcp2' && kind !== 'ngtcp2-migrate' && kind !== 'matrixai') throw new Error(`unknown client kind ${JSON.stringify(kind)}`);
  const r: ClientRequest = {
    kind,
    host: ipv4(req, 'host'),
    port: int(req, 'port', 1, 65535),
    path: str(req, 'path'),
    count: int(req, 'count', 1, 1000, 1),
    spreadMs: int(req, 'spreadMs', 0, 600_000, 0),
    migrateAfterMs: int(req, 'migrateAfterMs', 1, 60_000, 30),
    migrate: req.migrate === true,
    timeoutMs: int(req, 'timeoutMs', 1000, 900_000, 60_000),
  };
  const res = await runClient(r, clientIp);
  const who = await servedBy(res.clientCids);
  // connections that used two or more of their backend's CIDs: migrated to a new CID (and path) and kept going
  return { ok: res.ok, bytes: res.bytes, intact: res.intact, servedBy: who.names, ms: res.ms, detail: { ...res.detail, clientCids: res.clientCids, migratedConnections: who.migrated } };
}

/** Sends one UDP datagram from the client address (a stray or forged packet, e.g. to check the audit catches it). */
async function datagram(req: Json): Promise<Json> {
  const to = endpoint(req.to, 'to');
  const hex = str(req, 'hex');
  if (!/^([0-9a-f]{2}){1,1500}$/i.test(hex)) throw new Error('"hex" must be 1 to 1500 bytes in hex');
  const s = createSocket('udp4');
  try {
    s.bind(0, clientIp);
    await once(s, 'listening');
    await new Promise<void>((resolve, reject) => s.send(Buffer.from(hex, 'hex'), to.port, to.ip, (e) => (e ? reject(e) : resolve())));
  } finally {
    s.close();
  }
  return { ok: true };
}

/**
 * Every backend's audit, with the Initials settled across backends: an Initial or 0-RTT DCID a backend did not issue
 * is foreign when another backend (running or stopped) issued it (pod-backend.ts).
 */
async function audit(): Promise<Json> {
  const all = [...backends.values(), ...[...stopped].reverse()];
  const stats = await Promise.all(all.map((b) => b.stats()));
  const candidates = [...new Set(stats.flatMap((s) => [...s.unownedInitial.keys()]))];
  const issuedBy = await Promise.all(all.map((b) => b.issued(candidates)));
  const out: Record<string, BackendAudit> = {};
  all.forEach((b, i) => {
    const a = stats[i].audit;
    for (const [hex, n] of stats[i].unownedInitial) {
      if (!issuedBy.some((set, j) => j !== i && set.has(hex))) continue;
      a.foreignCids += n;
      if (a.examples.length < MAX_EXAMPLES) a.examples.push(`initial:${hex}`);
    }
    // a name used again (a backend stopped and started anew): the newest instance has the name, older ones "name~1", ...
    let key = b.name;
    for (let k = 1; key in out; k++) key = `${b.name}~${k}`;
    out[key] = a;
  });
  const ecmpCounts: Json = {};
  for (const [k, r] of relays) ecmpCounts[k] = r.counts;
  return { backends: out, ecmp: ecmpCounts, udp: udpCounters() };
}

/**
 * The kernel's UDP counters of this namespace (/proc/net/snmp): RcvbufErrors are datagrams a full socket buffer
 * dropped (a backend's, the relay's or a client's), losses no data plane counts.
 */
function udpCounters(): Record<string, number> {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((l) => l.startsWith('Udp: '));
    const [names, values] = lines.map((l) => l.slice(5).trim().split(/\s+/));
    return Object.fromEntries(names.map((n, i) => [n, Number(values[i])]).filter(([n]) => n === 'InDatagrams' || n === 'RcvbufErrors' || n === 'SndbufErrors'));
  } catch {
    return {};
  }
}

serveOps({ setup, backend: startBackend, stopBackend, ecmp, client, audit, datagram }, async () => {
  for (const r of relays.values()) r.close();
  await Promise.race([Promise.allSettled([...backends.values()].map((b) => b.stop())), new Promise((r) => setTimeout(r, 2000))]);
  await Promise.race([Promise.allSettled([...backends.values(), ...stopped].map((b) => b.dispose())), new Promise((r) => setTimeout(r, 3000))]);
});
