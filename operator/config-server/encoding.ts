/**
 * Snapshot pushes encoded once per version, not once per stream: the protobuf bytes of a Snapshot are its fields
 * one after the other, so the version field and the load balancers (with `created`) are encoded once and shared by
 * every stream, and only the nonce field (and the frame around them) is written per push, in field-number order,
 * byte for byte what StreamConfigResponse.encode() would produce. grpc-js calls the service's responseSerialize,
 * which passes these bytes through.
 */
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import type { DataplaneSnapshot } from '../../lib/config/snapshot.js';
import { loadBalancerToWire } from '../../proto/convert.js';
import { Snapshot, StreamConfigResponse } from '../../proto/gen/quiclb/v1/distribution.js';

/** A response already encoded (what the stream writes). */
export class EncodedResponse {
  constructor(readonly bytes: Buffer) {}
}

export interface EncodedParts {
  readonly version: number;
  /** Field 1 (version). */
  readonly head: Uint8Array;
  /** Fields 3 (load_balancers), 4 (created) and 5 (retained). */
  readonly tail: Uint8Array;
  /** The retained names encoded in `tail`, joined (part of the cache key). */
  readonly retainedKey: string;
}

const cache = new WeakMap<readonly DataplaneSnapshot[], EncodedParts>();

/**
 * Converts and encodes the snapshot parts once per (load-balancer list, version, retained names); throws what the
 * conversion throws. Call it before nonce-specific work so a bad source fails before anything is booked.
 */
export function prepareSnapshot(version: number, loadBalancers: readonly DataplaneSnapshot[], retained: readonly string[] = []): EncodedParts {
  const retainedKey = retained.join('\0');
  const hit = cache.get(loadBalancers);
  if (hit && hit.version === version && hit.retainedKey === retainedKey) return hit;
  const head = Snapshot.encode({ version: BigInt(version), nonce: '', loadBalancers: [], created: undefined, retained: [] }).finish();
  const tail = Snapshot.encode({ version: 0n, nonce: '', loadBalancers: loadBalancers.map(loadBalancerToWire), created: new Date(), retained: [...retained] }).finish();
  const p = { version, head, tail, retainedKey };
  cache.set(loadBalancers, p);
  return p;
}

/** StreamConfigResponse{snapshot: {version, nonce, load_balancers, created, retained}} as bytes. */
export function encodePush(p: EncodedParts, nonce: string): EncodedResponse {
  const nonceField = nonce === '' ? new Uint8Array(0) : new BinaryWriter().uint32(18).string(nonce).finish(); // proto3: '' is not written
  const bodyLength = p.head.length + nonceField.length + p.tail.length;
  const frame = new BinaryWriter().uint32(10).uint32(bodyLength).finish();
  return new EncodedResponse(Buffer.concat([frame, p.head, nonceField, p.tail]));
}

/** grpc-js responseSerialize: pre-encoded pushes pass through; anything else is encoded as usual. */
export function serializeResponse(value: EncodedResponse | StreamConfigResponse): Buffer {
  return value instanceof EncodedResponse ? value.bytes : Buffer.from(StreamConfigResponse.encode(value).finish());
}
