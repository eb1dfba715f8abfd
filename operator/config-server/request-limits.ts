/**
 * Bounds on what a data plane may send. grpc-js refuses a message above `maxMessageBytes` (RESOURCE_EXHAUSTED);
 * checkRequest() then bounds every repeated field and string, so what a peer makes this process hold or log is
 * bounded per stream. A violation closes that stream with INVALID_ARGUMENT naming the field. Unknown enum values
 * are accepted (a newer data plane may know more outcomes); consumers treat them as unspecified.
 */
import {
  StreamConfigRequest,
  type CountersReport,
  type HealthReport,
  type Hello,
  type Nack,
} from '../../proto/gen/quiclb/v1/distribution.js';

export interface RequestLimits {
  /** Largest message accepted (bytes, as grpc.max_receive_message_length). */
  readonly maxMessageBytes: number;
  /** Node, pod, load balancer and server names (a DNS name's 253). */
  readonly maxNameLength: number;
  /** Hello.software_version, one capability, a drop reason. */
  readonly maxTokenLength: number;
  readonly maxCapabilities: number;
  readonly maxNonceLength: number;
  /** Nack.field, BackendHealth.last_error. */
  readonly maxFieldLength: number;
  /** Nack.message. */
  readonly maxErrorMessageLength: number;
  /** BackendHealth entries in one HealthReport (and kept per data plane). */
  readonly maxHealthEntries: number;
  /** LoadBalancerCounters entries in one CountersReport. */
  readonly maxCounterLoadBalancers: number;
  /** TrafficCounter entries per load balancer (3 outcomes, 7 config ids). */
  readonly maxTrafficEntries: number;
  /** DropCounter entries per load balancer. */
  readonly maxDropEntries: number;
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = Object.freeze({
  maxMessageBytes: 4 << 20,
  maxNameLength: 253,
  maxTokenLength: 128,
  maxCapabilities: 64,
  maxNonceLength: 128,
  maxFieldLength: 1024,
  maxErrorMessageLength: 4096,
  maxHealthEntries: 20_000,
  maxCounterLoadBalancers: 256,
  maxTrafficEntries: 64,
  maxDropEntries: 128,
});

/** A request the server refuses: `field` is its path in the wire message. */
export class RequestError extends Error {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
  }
}

function text(field: string, v: string, max: number): void {
  if (v.length > max) throw new RequestError(field, `at most ${max} characters, got ${v.length}`);
}

function count(field: string, n: number, max: number): void {
  if (n > max) throw new RequestError(field, `at most ${max} entries, got ${n}`);
}

function checkHello(h: Hello, l: RequestLimits): void {
  text('hello.node_name', h.nodeName, l.maxNameLength);
  text('hello.pod_name', h.podName, l.maxNameLength);
  text('hello.software_version', h.softwareVersion, l.maxTokenLength);
  count('hello.capabilities', h.capabilities.length, l.maxCapabilities);
  h.capabilities.forEach((c, i) => text(`hello.capabilities[${i}]`, c, l.maxTokenLength));
  if (h.currentVersion > BigInt(Number.MAX_SAFE_INTEGER)) throw new RequestError('hello.current_version', `must be at most ${Number.MAX_SAFE_INTEGER}`);
}

function checkAnswer(kind: 'ack' | 'nack', a: { version: bigint; nonce: string }, l: RequestLimits): void {
  text(`${kind}.nonce`, a.nonce, l.maxNonceLength);
  if (a.version > BigInt(Number.MAX_SAFE_INTEGER)) throw new RequestError(`${kind}.version`, `must be at most ${Number.MAX_SAFE_INTEGER}`);
}

function checkNack(n: Nack, l: RequestLimits): void {
  checkAnswer('nack', n, l);
  text('nack.field', n.field, l.maxFieldLength);
  text('nack.message', n.message, l.maxErrorMessageLength);
}

function checkHealth(h: HealthReport, l: RequestLimits): void {
  count('health.backends', h.backends.length, l.maxHealthEntries);
  h.backends.forEach((b, i) => {
    const f = `health.backends[${i}]`;
    text(`${f}.load_balancer`, b.loadBalancer, l.maxNameLength);
    text(`${f}.server`, b.server, l.maxNameLength);
    text(`${f}.last_error`, b.lastError, l.maxFieldLength);
  });
}

function checkCounters(c: CountersReport, l: RequestLimits): void {
  count('counters.load_balancers', c.loadBalancers.length, l.maxCounterLoadBalancers);
  c.loadBalancers.forEach((lb, i) => {
    const f = `counters.load_balancers[${i}]`;
    text(`${f}.load_balancer`, lb.loadBalancer, l.maxNameLength);
    count(`${f}.traffic`, lb.traffic.length, l.maxTrafficEntries);
    count(`${f}.drops`, lb.drops.length, l.maxDropEntries);
    lb.drops.forEach((d, j) => text(`${f}.drops[${j}].reason`, d.reason, l.maxTokenLength));
  });
}

/** Throws RequestError when `req` is empty or exceeds a bound. */
export function checkRequest(req: StreamConfigRequest, limits: RequestLimits): void {
  const m = req.message;
  switch (m?.$case) {
    case 'hello':
      return checkHello(m.hello, limits);
    case 'ack':
      return checkAnswer('ack', m.ack, limits);
    case 'nack':
      return checkNack(m.nack, limits);
    case 'health':
      return checkHealth(m.health, limits);
    case 'counters':
      return checkCounters(m.counters, limits);
    default:
      throw new RequestError('message', 'no message set (expected hello, ack, nack, health or counters)');
  }
}

/** A message that could not be decoded (StreamConfigRequest.decode threw): the stream is closed with the reason. */
export interface MalformedRequest {
  readonly malformed: string;
}

/** grpc-js's deserializer for the stream: never throws (grpc-js would answer a bare INTERNAL). */
export function decodeRequest(bytes: Buffer): StreamConfigRequest | MalformedRequest {
  try {
    return StreamConfigRequest.decode(bytes);
  } catch (e) {
    return { malformed: (e as Error).message.slice(0, 200) };
  }
}

export function isMalformed(r: StreamConfigRequest | MalformedRequest): r is MalformedRequest {
  return 'malformed' in r;
}
