/** Config of the data plane: the transport-neutral runtime snapshot and the standalone YAML that produces it. */
export * from './address.js';
export * from './duration.js';
export * from './keys.js';
export * from './snapshot.js';
export * from './standalone.js';
export * from './state-file.js';
export * from './watch.js';
