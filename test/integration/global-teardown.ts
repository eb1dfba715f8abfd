// Stops the cluster the global setup started (never one it only reused): down.sh kills exactly the recorded PIDs
// and removes the cluster's temp folder. (See global-setup.ts for why the harness is imported by its .ts name.)
type Harness = typeof import('../cluster/harness.js');

export default async function globalTeardown(): Promise<void> {
  const dir = process.env.QUICLB_CLUSTER_DIR;
  if (process.env.QUICLB_CLUSTER_OWNED !== '1' || !dir) return;
  const h = (await import(new URL('../cluster/harness.ts', import.meta.url).href)) as Harness;
  h.clusterDown(dir);
}
