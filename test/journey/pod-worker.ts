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
import { runClient, type ClientRequest } from './clients.js';
import { EcmpRelay, type Endpoint } from './ecmp.js';
import { emit, int, ip, ipv4, serveLines, str, type Json } from './lines.js';

const tls = selfSignedCert();
const backends = new Map<string, JourneyBackend>();
/** Stopped backends keep their audit (a foreign CID seen before the stop still counts). */
const stopped: JourneyBackend[] = [];
const relays = new Map<string, EcmpRelay>();
/** Pod IPs added to lo, with how many backends use each. */
const podIps = new Map<string, number>();
let clientIp = '';

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

function issuedElsewhere(self: () => JourneyBackend | undefined): (hex: string) => boolean {
  return (hex) => [...backends.values(), ...stopped].some((b) => b !== self() && b.issuedCid(hex));
}

async function startBackend(req: Json): Promise<Json> {
  const name = str(req, 'name');
  if (backends.has(name)) throw new Error(`backend ${name} is already running`);
  const host = ipv4(req, 'ip');
  const port = int(req, 'port', 1, 65535);
  const dir = str(req, 'dir');
  await addAddress(host);
  podIps.set(host, (podIps.get(host) ?? 0) + 1);
  let me: JourneyBackend | undefined;
  try {
    me = await JourneyBackend.start({
      name, host, port, dir, tls,
      issuedElsewhere: issuedElsewhere(() => me),
      log: (line) => emit({ event: 'backend', name, line }),
    });
  } catch (e) {
    await releaseIp(host);
    throw e;
  }
  backends.set(name, me);
  return { ok: true, generator: me.generatorInfo() };
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
  await b.stop();
  stopped.push(b);
  await releaseIp(b.options.host);
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

function servedBy(clientCids: string[]): { names: string[]; migrated: number } {
  const names = new Set<string>();
  let migrated = 0;
  for (const cid of clientCids) {
    for (const b of [...backends.values(), ...stopped]) {
      if (b.responsesFor(cid) > 0) names.add(b.name);
      if (b.dcidsUsedBy(cid) >= 2) migrated++;
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
  const who = servedBy(res.clientCids);
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

function audit(): Json {
  const out: Json = {};
  // a name used again (a backend stopped and started anew): the newest instance has the name, older ones "name~1", ...
  for (const b of [...backends.values(), ...[...stopped].reverse()]) {
    let key = b.name;
    for (let i = 1; key in out; i++) key = `${b.name}~${i}`;
    out[key] = b.stats();
  }
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

let ending = false;
async function end(): Promise<void> {
  if (ending) return;
  ending = true;
  for (const r of relays.values()) r.close();
  await Promise.race([Promise.all([...backends.values()].map((b) => b.stop())), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(0);
}
process.on('SIGTERM', () => void end());

serveLines(async (req) => {
  switch (req.op) {
    case 'setup':
      return setup(req);
    case 'backend':
      return startBackend(req);
    case 'stopBackend':
      return stopBackend(req);
    case 'ecmp':
      return ecmp(req);
    case 'client':
      return client(req);
    case 'audit':
      return audit();
    case 'datagram':
      return datagram(req);
    case 'shutdown':
      setImmediate(() => void end());
      return { ok: true };
    default:
      throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}, () => void end());

emit({ event: 'ready', pid: process.pid });
