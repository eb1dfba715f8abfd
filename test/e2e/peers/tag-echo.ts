/**
 * UDP echo backends that say who they are: each reply is the received datagram followed by the backend's
 * name (one length octet, then the name). Answers QUIC Version Negotiation probes (a long header with a
 * reserved version) like a real QUIC server, so the data plane's health checks see it as healthy.
 *
 *   tag-echo.ts --listen NAME=HOST:PORT [--listen NAME2=HOST:PORT ...]
 * Prints "READY" once every socket is bound.
 */
import { createSocket } from 'node:dgram';
import { parseArgs } from 'node:util';
import { isReservedVersion, parseQuicHeader, QuicHeader } from '../../../lib/quic/header.js';

const { values } = parseArgs({ options: { listen: { type: 'string', multiple: true } } });
if (!values.listen?.length) throw new Error('usage: --listen NAME=HOST:PORT ...');

const header = new QuicHeader();

/** RFC 9000 §17.2.1 Version Negotiation answering a long header (DCID/SCID swapped), offering version 1. */
function versionNegotiation(pkt: Buffer): Buffer | null {
  if (parseQuicHeader(pkt, header, 0) !== null || header.form !== 'long') return null;
  const { scidLength, dcidLength } = header;
  return Buffer.concat([Buffer.from([0x80 | 0x40]), Buffer.alloc(4), Buffer.from([scidLength]), header.scid(pkt), Buffer.from([dcidLength]), header.dcid(pkt), Buffer.from([0, 0, 0, 1])]);
}

let bound = 0;
for (const spec of values.listen) {
  const eq = spec.indexOf('=');
  const name = spec.slice(0, eq);
  const addr = spec.slice(eq + 1);
  const i = addr.lastIndexOf(':');
  const host = addr.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(addr.slice(i + 1));
  const tag = Buffer.concat([Buffer.from(name), Buffer.from([Buffer.byteLength(name)])]);
  const s = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  s.on('message', (msg, rinfo) => {
    if (msg.length >= 5 && msg[0] & 0x80 && isReservedVersion(msg.readUInt32BE(1))) {
      const vn = versionNegotiation(msg);
      if (vn) s.send(vn, rinfo.port, rinfo.address);
      return;
    }
    s.send(Buffer.concat([msg, tag]), rinfo.port, rinfo.address);
  });
  s.bind(port, host, () => {
    if (++bound === values.listen!.length) process.stdout.write('READY\n');
  });
}
process.on('SIGTERM', () => process.exit(0));
