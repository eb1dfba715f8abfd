/** Public library of quiclb: the QUIC-LB connection-ID codec and QUIC header parsing, for data planes and backends. */
export * from './quiclb/config.js';
export * from './quiclb/cipher.js';
export * from './quiclb/encoder.js';
export * from './quiclb/decoder.js';
export * from './hex.js';
export * from './quiclb/json.js';
export * from './quic/header.js';
export * from './config/index.js';
export * from './quiclb/server-generator.js';
