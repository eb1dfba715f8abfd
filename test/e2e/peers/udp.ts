/**
 * UDP helpers for the end-to-end tests: free loopback ports, and a QUIC-native readiness probe
 * (a padded long header with a reserved version must draw a Version Negotiation packet, RFC 9000 §6).
 */
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';

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

/** The reserved version the probe uses (0x?a?a?a?a pattern). */
export const PROBE_VERSION = 0x1a2a3a4a;

/** A 1200-byte long-header packet with a reserved version (type bits 00 so quiche looks at it as an Initial). */
export function vnProbePacket(dcid: Buffer, scid: Buffer): Buffer {
  const b = Buffer.alloc(1200);
  b[0] = 0xc0 | (randomBytes(1)[0] & 0x0f);
  b.writeUInt32BE(PROBE_VERSION, 1);
  b[5] = dcid.length;
  dcid.copy(b, 6);
  b[6 + dcid.length] = scid.length;
  scid.copy(b, 7 + dcid.length);
  return b;
}

/** True if `buf` is a Version Negotiation answer to a probe sent with (dcid, scid). */
export function isVnReply(buf: Buffer, dcid: Buffer, scid: Buffer): boolean {
  if (buf.length < 7 || (buf[0] & 0x80) === 0 || buf.readUInt32BE(1) !== 0) return false;
  const dl = buf[5];
  if (!buf.subarray(6, 6 + dl).equals(scid)) return false;
  const sl = buf[6 + dl];
  return buf.subarray(7 + dl, 7 + dl + sl).equals(dcid) && buf.length >= 7 + dl + sl + 4;
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
        if (isVnReply(m, dcid, scid)) {
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
        s.send(vnProbePacket(dcid, scid), port, host);
        timer = setTimeout(tick, 150);
      };
      s.bind(0, host.includes(':') ? '::1' : '127.0.0.1', tick);
    });
  } finally {
    s.close();
  }
}
