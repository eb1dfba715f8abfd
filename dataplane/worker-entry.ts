/** Entry point of a data-plane worker process (forked by WorkerPool in workers.ts). */
import { runWorker } from './workers.js';

await runWorker();
