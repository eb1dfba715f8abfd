/** Pre-encoded pushes are byte for byte what StreamConfigResponse.encode() produces, for any nonce and version. */
import { describe, expect, it } from '@jest/globals';
import fc from 'fast-check';
import { encodePush, prepareSnapshot, serializeResponse } from '../../operator/config-server/encoding.js';
import { snapshotToWire } from '../../proto/convert.js';
import { Snapshot, StreamConfigResponse } from '../../proto/gen/quiclb/v1/distribution.js';
import { makeLoadBalancer } from './helpers.js';

describe('pre-encoded pushes', () => {
  it('equal the generated encoder output', () => {
    const lbs = [makeLoadBalancer('web', { servers: 40 }), makeLoadBalancer('api', { servers: 3, port: 5000, keyIndex: 1 })];
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.string({ maxLength: 300 }), (version, nonce) => {
        const parts = prepareSnapshot(version, lbs);
        // The reference encoding uses the same `created` as the cached parts.
        const created = Snapshot.decode(parts.tail).created;
        const expected = StreamConfigResponse.encode({ message: { $case: 'snapshot', snapshot: snapshotToWire(version, nonce, lbs, created) } }).finish();
        expect(serializeResponse(encodePush(parts, nonce))).toEqual(Buffer.from(expected));
      }),
      { numRuns: 200 },
    );
  });

  it('equal the generated encoder output with retained names (and a change of them is not served from the cache)', () => {
    const lbs = [makeLoadBalancer('web', { servers: 4 })];
    fc.assert(
      fc.property(fc.nat({ max: Number.MAX_SAFE_INTEGER }), fc.string({ maxLength: 30 }), fc.uniqueArray(fc.string({ minLength: 1, maxLength: 20 }), { maxLength: 5 }), (version, nonce, retained) => {
        const parts = prepareSnapshot(version, lbs, retained);
        const created = Snapshot.decode(parts.tail).created;
        const expected = StreamConfigResponse.encode({ message: { $case: 'snapshot', snapshot: snapshotToWire(version, nonce, lbs, created, retained) } }).finish();
        expect(serializeResponse(encodePush(parts, nonce))).toEqual(Buffer.from(expected));
        expect(Snapshot.decode(prepareSnapshot(version, lbs).tail).retained).toEqual([]);
      }),
      { numRuns: 100 },
    );
  });
});
