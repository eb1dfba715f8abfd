/**
 * The journey's network world (issue 9): a process the test spawns (as root) that owns network namespaces it creates
 * itself and runs, in them, the backends, the data planes, an ECMP relay and real QUIC clients. Driven by JSON lines
 * on stdin; answers and events as JSON lines on stdout. Nothing of the host's network changes.
 *
 * Layout (each node is its own host; the data plane is hostNetwork, i.e. in the node's namespace):
 *
 *   W  "pod network" (pod-worker.ts)                       N_i  node i (node-worker.ts), one per node
 *     lo: pod IPs (10.244.x.y/32, one per backend),          eth0: node IP/32 (172.30.0.1x)
 *         the client address (CLIENT_IP/32),                 routes: pod CIDRs and CLIENT_IP/32 via eth0
 *         ECMP listen addresses                              127.0.0.1:RELAY_PORT -> the config server's Unix
 *     vn<i>  <-- veth pair -->  eth0 of N_i                      socket on the host (TCP relay)
 *     routes: node IP/32 via vn<i> (src CLIENT_IP)           `quiclb dataplane ARGS`
 *     backends (@matrixai/quic) bound at pod IP:port
 *     ECMP relay, clients (gtlsclient, @matrixai/quic)
 *
 * Namespaces: not `ip netns` (named, bind-mounted under /run/netns, so they outlive a killed owner) but each
 * worker's own, unnamed namespace: the agent starts every worker as `setpriv --pdeathsig KILL unshare --net node
 * WORKER`, and the veth pairs are created inside W with their peer end moved straight into N_i by PID, so no interface
 * ever exists in the host's namespace. A namespace lives exactly as long as a process in it: when the workers and
 * their children are gone, the kernel removes the namespaces and their veths. Cleanup, whatever ends the agent:
 *   - stdin end, {"op":"shutdown"}, SIGTERM, SIGINT: the agent asks each worker to stop (a data plane gets SIGTERM,
 *     then SIGKILL after 3 s), waits for them (SIGKILL after 5 s), exits 0;
 *   - the agent's death (even SIGKILL): the kernel SIGKILLs the workers (PR_SET_PDEATHSIG through setpriv), and a
 *     worker's death SIGKILLs its children (data plane, gtlsclient) the same way.
 *
 * Protocol (requests carry "id", answered with the same "id"; failures as {"id","error"}; events {"event",...}):
 *   {"op":"setup","podCidrRoutes":["10.244.0.0/16"],"nodes":[{"name":"n1","ip":"172.30.0.11"}],
 *    "configServerSocket":"/tmp/x.sock","relayPort":15000[,"clientIp":"100.64.0.1"][,"activeConnectionIdLimit":8]
 *    [,"quicGoBackend":"/path/to/quicgo-backend" (quicgo-backend/build.sh's output, for "stack":"quic-go")]}
 *       -> {"ok":true,"clientIp"}  (activeConnectionIdLimit: quiche's, for backends and matrixai clients; backend.ts
 *       says why 8 and not quiche's default 2)
 *   {"op":"backend","name","ip","port","dir"[,"stack":"matrixai"|"quic-go"]} -> {"ok":true,"stack",
 *       "generator":{activeConfigId,serverId,cidLength,reason}} once listening (pod-backend.ts: the two stacks); {"op":"stopBackend","name"} -> {"ok":true} (the pod IP goes too)
 *   {"op":"dataplane","node","args":[...],"env":{...}} -> {"ok":true,"pid"}: `quiclb dataplane ARGS` (tsx cli/main.ts)
 *       with env = PATH, HOME, TMPDIR, LANG and the given env only (nothing else of the test's); log lines come as
 *       {"event":"dp","node","line"}, its end as {"event":"dpExit","node","exit"}
 *   {"op":"killDataplane","node","signal":"SIGKILL"} -> {"ok":true,"exit":"SIGKILL"|"<code>"}
 *   {"op":"fetch","node","url":"http://127.0.0.1:9090/readyz"[,"timeoutMs"]} -> {"ok":true,"status","body","truncated"}:
 *       an HTTP GET from inside the node's namespace (the data plane's monitoring port is not reachable from the host)
 *   {"op":"ecmp","listen":{"ip","port"},"targets":[{"ip","port"},...]} -> {"ok":true}
 *   {"op":"client","kind":"ngtcp2"|"ngtcp2-migrate"|"matrixai","host","port","path":"/1000000","count":k
 *    [,"spreadMs":t][,"migrate":true (matrixai)][,"migrateAfterMs":30 (ngtcp2-migrate)][,"timeoutMs":60000]}
 *       -> {"ok","bytes","intact","servedBy":[backend names],"ms","detail"}
 *       ngtcp2: `count` connections one after another, one GET each (gtlsclient writes every response to one file);
 *       matrixai: `count` GETs on one connection, `migrate` moves it to a new port and CID before the second half.
 *       ok: every body complete and intact (bytes = count x n). detail.migratedConnections: connections that sent to
 *       two or more of their backend's CIDs (a migration happened, as the backend saw it); detail.runs (ngtcp2, with
 *       exit status and stderr of failed runs), detail.serverCids/statuses/error (matrixai), detail.clientCids.
 *   {"op":"audit"} -> {"backends":{name:{"datagrams","shortHeader","foreignCids","examples",...}},"ecmp":{...}}
 *       (backend.ts says exactly what counts as foreign; a name started again: older instances as "name~1", ...)
 *   {"op":"datagram","to":{"ip","port"},"hex":"..."} -> {"ok":true}: one UDP datagram from the client address
 *   {"op":"shutdown"} -> {"ok":true}, then the agent exits 0
 * Other events: {"event":"ready"} once the agent reads requests, {"event":"backend","name","line"} (generator
 * changes, errors), {"event":"log","source","line"}, {"event":"workerExit","worker","exit"} (unexpected).
 *
 * Differences from the brief: servedBy comes from the backends' own record of which client connection they served
 * (gtlsclient runs with -q and an --scid chosen by the pod worker; the backends also send `x-served-by`), not from
 * parsing the response; the client address is CLIENT_IP (default 100.64.0.1, outside any pod CIDR).
 */
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { JsonLinesClient } from './json-lines-client.js';
import { cidr, eachLine, emit, int, ipv4, serveLines, spawnTied, str, type Json } from './lines.js';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const DEFAULT_CLIENT_IP = '100.64.0.1';

/** One worker process (in its own network namespace) and its pending requests. */
class Worker {
  private readonly client: JsonLinesClient;
  readonly ready: Promise<number>;
  readonly exited: Promise<string>;
  private stopping = false;

  constructor(readonly name: string, child: ChildProcess) {
    let onReady: (pid: number) => void = () => {};
    let onFail: (e: Error) => void = () => {};
    this.ready = new Promise((resolve, reject) => {
      onReady = resolve;
      onFail = reject;
    });
    this.ready.catch(() => {}); // awaited by setup(); a worker failing before that must not be an unhandled rejection
    this.client = new JsonLinesClient(child, {
      name: `worker ${name}`,
      onLine: (line, m) => {
        if (!m) emit({ event: 'log', source: name, line });
        else if (m.event === 'ready') onReady(Number(m.pid));
        else if (m.event !== undefined) emit(m);
      },
    });
    eachLine(child.stderr, (line) => emit({ event: 'log', source: name, line }));
    this.exited = this.client.closed.then((exit) => {
      onFail(new Error(`worker ${name} exited (${exit}) before it was ready`));
      if (!this.stopping) emit({ event: 'workerExit', worker: name, exit });
      return exit;
    });
  }

  static start(name: string, script: string): Worker {
    const child = spawnTied('unshare', ['--net', '--', process.execPath, '--import', 'tsx', script], {
      cwd: repoRoot,
      env: { ...process.env, NODE_OPTIONS: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return new Worker(name, child);
  }

  /** Sends a request; resolves with the worker's answer (its "id" removed), or {"error"} once the worker is gone. */
  request(req: Json): Promise<Json> {
    return this.client.request(req).catch((e: unknown) => ({ error: (e as Error).message }));
  }

  /** Asks the worker to stop (it ends on stdin end too), then SIGKILLs it after `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    await this.client.close(graceMs);
  }
}

let pod: Worker | null = null;
const nodes = new Map<string, Worker>();
let settingUp = false;

async function setup(req: Json): Promise<Json> {
  if (settingUp || pod) throw new Error('setup was already requested');
  settingUp = true;
  const list = req.nodes as Json[];
  if (!Array.isArray(list) || list.length === 0 || list.length > 16) throw new Error('"nodes" must list 1 to 16 nodes');
  const wanted = list.map((n) => ({ name: str(n, 'name'), ip: ipv4(n, 'ip') }));
  if (new Set(wanted.map((n) => n.name)).size !== wanted.length) throw new Error('node names must be unique');
  if (!Array.isArray(req.podCidrRoutes)) throw new Error('"podCidrRoutes" must be an array of CIDRs');
  const podCidrRoutes = req.podCidrRoutes.map(cidr);
  const configServerSocket = str(req, 'configServerSocket');
  const relayPort = int(req, 'relayPort', 1, 65535);
  const clientIp = req.clientIp === undefined ? DEFAULT_CLIENT_IP : ipv4(req, 'clientIp');
  const activeConnectionIdLimit = int(req, 'activeConnectionIdLimit', 2, 16, 8);
  const quicGoBackend = req.quicGoBackend === undefined ? undefined : str(req, 'quicGoBackend');

  pod = Worker.start('pod-network', 'test/journey/pod-worker.ts');
  for (const n of wanted) nodes.set(n.name, Worker.start(`node ${n.name}`, 'test/journey/node-worker.ts'));
  await pod.ready;
  const pids = await Promise.all(wanted.map((n) => nodes.get(n.name)!.ready));
  const check = (answer: Json, what: string): void => {
    if (answer.error !== undefined) throw new Error(`${what}: ${String(answer.error)}`);
  };
  check(await pod.request({ op: 'setup', clientIp, activeConnectionIdLimit, quicGoBackend, nodes: wanted.map((n, i) => ({ index: i, ip: n.ip, pid: pids[i] })) }), 'pod network setup');
  await Promise.all(
    wanted.map(async (n) => {
      check(await nodes.get(n.name)!.request({ op: 'setup', node: n.name, ip: n.ip, clientIp, podCidrRoutes, configServerSocket, relayPort }), `node ${n.name} setup`);
    }),
  );
  return { ok: true, clientIp };
}

function podWorker(): Worker {
  if (!pod) throw new Error('no setup yet');
  return pod;
}

function nodeWorker(req: Json): Worker {
  const name = str(req, 'node');
  const w = nodes.get(name);
  if (!w) throw new Error(`unknown node ${JSON.stringify(name)}`);
  return w;
}

let ending: Promise<void> | null = null;
function shutdown(): Promise<void> {
  ending ??= (async () => {
    await Promise.all([...(pod ? [pod] : []), ...nodes.values()].map((w) => w.stop(5000)));
    process.exit(0);
  })();
  return ending;
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
process.on('unhandledRejection', (e) => emit({ event: 'log', source: 'agent', line: `unhandled rejection: ${String(e)}` }));

serveLines(async (req) => {
  if (ending) throw new Error('shutting down');
  const { id: _, ...forward } = req;
  switch (req.op) {
    case 'setup':
      return setup(req);
    case 'backend':
    case 'stopBackend':
    case 'ecmp':
    case 'client':
    case 'audit':
    case 'datagram':
      return podWorker().request(forward);
    case 'dataplane':
    case 'killDataplane':
    case 'fetch':
      return nodeWorker(req).request(forward);
    case 'shutdown':
      setImmediate(() => void shutdown());
      return { ok: true };
    default:
      throw new Error(`unknown op ${JSON.stringify(req.op)}`);
  }
}, () => void shutdown());

emit({ event: 'ready' });
