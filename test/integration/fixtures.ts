// Paths of the integration fixtures and of the cluster scripts, for tests.
import { fileURLToPath } from 'node:url';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));
export { CLUSTER_SCRIPTS } from '../cluster/harness.js';
