/** The config server's public surface, for the operator's composition root and `quiclb config-server`. */
export { ConfigServer, DEFAULT_KEEPALIVE, type BoundAddress, type ConfigServerEvents, type ConfigServerOptions, type KeepaliveOptions } from './server.js';
export { dataPlaneIdentity } from './identity.js';
export { MAX_NODE_TOKEN_BYTES, NODE_TOKEN_METADATA, type AuthenticateNode, type NodeAuthOptions, type NodeAuthResult } from './node-auth.js';
export { InMemorySnapshotSource, nextVersion, type DataPlaneKey, type DesiredState, type SnapshotSource, type SourceSnapshot } from './source.js';
export { FileSnapshotSource, type FileSourceOptions } from './file-source.js';
export type {
  BackendHealthView,
  CountersView,
  DataPlaneView,
  HelloInfo,
  LoadBalancerCountersView,
  NackInfo,
  PushInfo,
} from './cache.js';
export { DEFAULT_REQUEST_LIMITS, type RequestLimits } from './request-limits.js';
export { runConfigServer, type RunConfigServerOptions, type RunningConfigServer } from './run.js';
