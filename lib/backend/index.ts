/** The backend SDK: what a QUIC server behind quiclb uses to mint routable connection IDs. */
export * from './generator.js';
export { BackendFileError, CONFIGS_FILE_NAME, SERVER_ID_FILE_NAME, type KubernetesFiles } from './kubernetes-source.js';
export { MAX_SERVER_ID_FILE_BYTES, parseServerIdText, SERVER_ID_ANNOTATION } from './server-id-file.js';
