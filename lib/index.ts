/** Public library of quiclb: the QUIC-LB connection-ID codec, QUIC header parsing and config, for data planes, and the backend SDK (ServerCidGenerator). */
export * from './quiclb/config.js';
export * from './quiclb/cipher.js';
export * from './quiclb/encoder.js';
export * from './quiclb/decoder.js';
export * from './hex.js';
export * from './quiclb/json.js';
export * from './quic/header.js';
export * from './config/index.js';
export * from './backend/index.js';
