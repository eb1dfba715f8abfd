/**
 * UDP helpers for the end-to-end tests: free loopback ports, and a QUIC-native readiness probe
 * (the data plane's health probe: a padded long header with a reserved version must draw Version Negotiation).
 */
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { buildProbe, isProbeReply } from '../../../dataplane/health.js';

/** Ports handed out by this process, so two peers started close together never get the same one. */
const handedOut = new Set<number>();

/** A UDP port that is free on `host` right now (bound and released; the kernel's ephemeral range). */
export async function freeUdpPort(host = '127.0.0.1'): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
      s.once('error', reject);
      s.bind(0, host, () => {
        const p = s.address().port;
        s.close(() => resolve(p));
      });
    });
    if (!handedOut.has(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no free UDP port');
}

/** Probes host:port until a QUIC server answers with Version Negotiation, or throws after `timeoutMs`. */
export async function waitForQuic(host: string, port: number, timeoutMs: number, what = `${host}:${port}`): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  const dcid = randomBytes(8);
  const scid = randomBytes(8);
  try {
    await new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      s.on('message', (m) => {
        if (isProbeReply(m, dcid, scid)) {
          clearTimeout(timer);
          resolve();
        }
      });
      s.on('error', () => {
        /* ICMP errors while the server is not up yet: keep probing */
      });
      const tick = (): void => {
        if (Date.now() > deadline) {
          reject(new Error(`${what}: no QUIC Version Negotiation answer within ${timeoutMs} ms`));
          return;
        }
        s.send(buildProbe(dcid, scid), port, host);
        timer = setTimeout(tick, 150);
      };
      s.bind(0, host.includes(':') ? '::1' : '127.0.0.1', tick);
    });
  } finally {
    s.close();
  }
}
