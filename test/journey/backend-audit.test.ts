/**
 * The matrixai backend's bound on unowned Initial DCIDs (backend.ts, record()): white-box, without a QUIC stack
 * (no backend started: it issued nothing, so every DCID is unowned). The quic-go backend's twin is audit_test.go.
 */
import { describe, expect, it } from '@jest/globals';
import { JourneyBackend } from './backend.js';
import { MAX_UNOWNED_INITIAL } from './pod-backend.js';

/** A v1 long-header datagram of `type` (0 Initial, 1 0-RTT) with this DCID. */
function longPacket(type: number, dcid: Buffer): Buffer {
  const b = Buffer.alloc(7 + dcid.length + 32);
  b[0] = 0xc0 | (type << 4);
  b.writeUInt32BE(1, 1);
  b[5] = dcid.length;
  dcid.copy(b, 6);
  return b;
}

const cid = (i: number): Buffer => Buffer.from(i.toString(16).padStart(16, '0'), 'hex');

describe('JourneyBackend audit', () => {
  it('remembers at most MAX_UNOWNED_INITIAL unowned Initial/0-RTT DCIDs and counts datagrams past that as unsettled', () => {
    const b = new (JourneyBackend as unknown as new (o: { name: string }) => JourneyBackend)({ name: 'b' });
    const inner = b as unknown as { record(m: Buffer): void; unownedInitial: Map<string, number>; audit: { unsettledInitials: number; initial: number } };
    for (let i = 0; i < MAX_UNOWNED_INITIAL; i++) inner.record(longPacket(i & 1, cid(i)));
    expect(inner.unownedInitial.size).toBe(MAX_UNOWNED_INITIAL);
    expect(inner.audit.unsettledInitials).toBe(0);
    inner.record(longPacket(0, cid(MAX_UNOWNED_INITIAL))); // past the bound: not remembered, counted
    inner.record(longPacket(1, cid(MAX_UNOWNED_INITIAL + 1)));
    inner.record(longPacket(0, cid(0))); // a remembered one keeps counting
    expect(inner.unownedInitial.size).toBe(MAX_UNOWNED_INITIAL);
    expect(inner.unownedInitial.has(cid(MAX_UNOWNED_INITIAL).toString('hex'))).toBe(false);
    expect(inner.unownedInitial.get(cid(0).toString('hex'))).toBe(2);
    expect(inner.audit.unsettledInitials).toBe(2);
    expect(inner.audit.initial).toBe(MAX_UNOWNED_INITIAL / 2 + 2);
  });
});
