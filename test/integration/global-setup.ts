// Brings a real cluster up once per jest run (tier 2 unless QUICLB_CLUSTER_TIER=1) and hands it to the tests
// through process.env (KUBECONFIG, QUICLB_APISERVER, QUICLB_KUBECTL, QUICLB_HELM, ...), which jest copies into
// every test environment. With QUICLB_CLUSTER_DIR pointing at a running cluster (e.g. from `make cluster-up`)
// that cluster is reused and left running.
//
// Jest loads global setup/teardown modules with Node's own loader (Node 24 strips the types), not through
// ts-jest and moduleNameMapper, so '../cluster/harness.js' would not resolve to the .ts file: import it by its
// real file name instead.
import { existsSync } from 'node:fs';
import { join } from 'node:path';

type Harness = typeof import('../cluster/harness.js');

export default async function globalSetup(): Promise<void> {
  const h = (await import(new URL('../cluster/harness.ts', import.meta.url).href)) as Harness;
  const reuse = process.env.QUICLB_CLUSTER_DIR;
  if (reuse) {
    const envFile = join(reuse, 'cluster.env');
    if (!existsSync(envFile)) throw new Error(`QUICLB_CLUSTER_DIR=${reuse} has no cluster.env: is that cluster up?`);
    h.loadClusterEnv(envFile);
    process.env.QUICLB_CLUSTER_OWNED = '0';
    return;
  }
  const t0 = Date.now();
  h.ensureBinaries();
  const name = process.env.QUICLB_CLUSTER_NAME ?? `jest-${process.pid}`;
  const tier = process.env.QUICLB_CLUSTER_TIER === '1' ? 1 : 2;
  // The watchdog (ownerPid) stops the cluster if jest dies before its global teardown.
  h.loadClusterEnv(h.clusterUp({ name, tier, ownerPid: process.pid }));
  process.env.QUICLB_CLUSTER_OWNED = '1';
  process.stderr.write(`[integration] cluster '${name}' (tier ${tier}) ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}
