/**
 * A UDP peer that sends with UDP GSO (UDP_SEGMENT: one sendmsg, a train of datagrams), for the UDP GRO tests:
 * test/dataplane/udp-gso-peer.c, built with cc into ~/.cache/quiclb/test (node:dgram cannot set UDP_SEGMENT).
 * It also records what it receives, so it serves as a client (replies) and as a backend (forwarded datagrams).
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const SOURCE = join(import.meta.dirname, 'udp-gso-peer.c');
const BIN = join(process.env.QUICLB_TEST_CACHE ?? join(homedir(), '.cache', 'quiclb', 'test'), 'udp-gso-peer');

/** The peer's binary, built when missing or older than its source; or why it cannot be (no compiler, not Linux). */
export function buildGsoPeer(): { bin: string } | { skip: string } {
  if (process.platform !== 'linux') return { skip: `UDP GSO/GRO is Linux only (platform ${process.platform})` };
  if (existsSync(BIN) && statSync(BIN).mtimeMs >= statSync(SOURCE).mtimeMs) return { bin: BIN };
  mkdirSync(join(BIN, '..'), { recursive: true });
  const tmp = `${BIN}.${process.pid}.tmp`; // parallel jest workers: each builds its own, the rename is atomic
  const r = spawnSync(process.env.CC ?? 'cc', ['-O1', '-Wall', '-o', tmp, SOURCE], { encoding: 'utf8', timeout: 60000 });
  if (r.error) return { skip: `no C compiler to build the UDP GSO sender (${(r.error as NodeJS.ErrnoException).code ?? r.error.message})` };
  if (r.status !== 0) throw new Error(`cc udp-gso-peer.c failed:\n${r.stderr}`);
  renameSync(tmp, BIN);
  return { bin: BIN };
}

/**
 * Sends `messages` (segment > 0: a GSO train, as in GsoPeer.send) to host:port from a fresh peer socket, one sendmsg
 * each, back to back, while this process's event loop is blocked (spawnSync): a receiver in this process finds
 * them all queued when it next reads, so one recvmmsg takes several messages (coalesced ones among them) together.
 * Returns the peer's port and what each sendmsg returned (bytes, or -errno).
 */
export function sendBurstSync(bin: string, host: string, port: number, messages: readonly { segment: number; data: Buffer }[]): { port: number; sent: number[] } {
  const input = messages.map((m) => `send ${host} ${port} ${m.segment} ${m.data.toString('hex')}\n`).join('');
  const r = spawnSync(bin, [host], { input, encoding: 'utf8', timeout: 10000 });
  if (r.error || r.status !== 0) throw new Error(`udp-gso-peer: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}: ${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  const sent = lines.filter((l) => l.startsWith('sent ')).map((l) => Number(l.slice(5)));
  const portLine = lines.find((l) => l.startsWith('port '));
  if (portLine === undefined || sent.length !== messages.length) throw new Error(`udp-gso-peer: unexpected output ${r.stdout}`);
  return { port: Number(portLine.slice(5)), sent };
}

export class GsoPeer {
  readonly received: { port: number; data: Buffer }[] = [];
  private readonly sent: ((n: number) => void)[] = [];
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly host: string,
    readonly port: number,
  ) {}

  static async start(bin: string, host = '127.0.0.1'): Promise<GsoPeer> {
    const child = spawn(bin, [host], { stdio: ['pipe', 'pipe', 'pipe'] });
    const lines = createInterface({ input: child.stdout });
    let peer: GsoPeer | null = null;
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', (code) => reject(new Error(`udp-gso-peer exited ${code}`)));
      lines.on('line', (line) => {
        const [kind, a, b] = line.split(' ');
        if (kind === 'port') resolve(Number(a));
        else if (kind === 'recv') peer?.received.push({ port: Number(a), data: Buffer.from(b ?? '', 'hex') });
        else if (kind === 'sent') peer?.sent.shift()?.(Number(a));
      });
    });
    peer = new GsoPeer(child, host, port);
    return peer;
  }

  /**
   * Sends `data` in one sendmsg to host:port; segment > 0: as a GSO train of `segment`-byte datagrams (the last
   * may be shorter). Resolves with the bytes sent (or -errno). One send at a time (the peer reads a line per send).
   */
  send(host: string, port: number, segment: number, data: Buffer): Promise<number> {
    const next = this.queue.then(
      () =>
        new Promise<number>((resolve) => {
          this.sent.push(resolve);
          this.child.stdin.write(`send ${host} ${port} ${segment} ${data.toString('hex')}\n`);
        }),
    );
    this.queue = next;
    return next;
  }

  close(): void {
    this.child.stdin.end();
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}
