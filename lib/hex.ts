/** The strict hex helpers live with the codec (lib/quiclb/hex.ts), which imports nothing else of the project. */
export * from './quiclb/hex.js';
