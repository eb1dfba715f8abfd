/** The data plane: forwarder, router, tables, fallback, health, metrics, monitoring, standalone runner. */
export * from './dataplane.js';
export * from './router.js';
export * from './flow-table.js';
export * from './fallback.js';
export * from './health.js';
export * from './metrics.js';
export * from './logging.js';
