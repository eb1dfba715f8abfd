/**
 * The node token of the config channel (docs/config-channel.md, Trust): a pod-bound ServiceAccount token the data
 * plane sends in the StreamConfig call's metadata so the operator can confirm the node its Hello names.
 */
export const NODE_TOKEN_METADATA = 'x-quiclb-node-token';
/** A projected ServiceAccount token is 1-2 KiB; a larger one is refused (by the reader and by the server). */
export const MAX_NODE_TOKEN_BYTES = 8192;
