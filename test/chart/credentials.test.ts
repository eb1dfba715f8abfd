// The chart's generated certificates and container arguments with the real programs: `quiclb config-server`
// serves with the operator's TLS Secret, and `quiclb dataplane`, started with exactly the DaemonSet's arguments
// (only the addresses and directories moved to loopback and temp folders), verifies the server as the Service name
// the chart makes it dial, gets a snapshot and ACKs it. `quiclb operator` accepts the Deployment's arguments.
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freeTcpPort, writeStandaloneYaml } from '../e2e/peers/dataplane.js';
import { ProcGroup, run } from '../e2e/peers/proc.js';
import { find, render, type Manifest } from './helm.js';

const group = new ProcGroup('chart-credentials');
let docs: Manifest[];

/** Writes a TLS Secret of the rendered chart as a TLS directory (ca.crt, tls.crt, tls.key). */
function tlsDir(name: string, folder = name): string {
  const dir = join(group.dir, folder);
  mkdirSync(dir, { mode: 0o700 });
  for (const key of ['ca.crt', 'tls.crt', 'tls.key']) {
    writeFileSync(join(dir, key), Buffer.from(find(docs, 'Secret', name).data[key] as string, 'base64'), { mode: 0o600 });
  }
  return dir;
}

function args(kind: string, name: string, from = docs): string[] {
  return (find(from, kind, name).spec.template.spec.containers[0].args as string[]).slice();
}

/** Replaces `--flag=...` in a container's argument list; fails when the chart does not pass that flag. */
function replaceFlag(list: string[], flag: string, value: string): void {
  const i = list.findIndex((a) => a.startsWith(`--${flag}=`));
  if (i < 0) throw new Error(`the chart passes no --${flag}: ${list.join(' ')}`);
  list[i] = `--${flag}=${value}`;
}

beforeAll(async () => {
  docs = await render();
});

afterAll(async () => {
  await group.stopAll();
  group.cleanup();
});

describe('the chart credentials and arguments with the real programs', () => {
  it(
    'a data plane started with the DaemonSet arguments and the shared client certificate gets and ACKs a snapshot',
    group.guard(async () => {
      const grpcPort = await freeTcpPort();
      const dpMetrics = await freeTcpPort();
      const yaml = join(group.dir, 'lb.yaml');
      writeStandaloneYaml(yaml, {
        name: 'chart',
        listen: ['127.0.0.1:0'],
        loadbalancer: { config_id: 1, server_id_length: 2, nonce_length: 6, encryption_key: Buffer.alloc(16, 7).toString('base64') },
        servers: [{ id: 's1', address: '127.0.0.1:9', server_id: '0001' }],
        healthCheck: { enabled: false },
        metricsPort: null,
      });
      const cs = group.spawnTs('config-server', 'cli/main.ts', ['config-server', '--listen', `127.0.0.1:${grpcPort}`, '--tls-dir', tlsDir('quiclb-operator-tls'), '--load-balancer', yaml]);
      await cs.waitFor(/"msg":"config server listening"/, 30_000);

      const dpArgs = args('DaemonSet', 'quiclb-dataplane');
      const dialled = /^--operator=(.+):9443$/.exec(dpArgs.find((a) => a.startsWith('--operator='))!)![1];
      replaceFlag(dpArgs, 'operator', `localhost:${grpcPort}`);
      dpArgs.push(`--server-name=${dialled}`); // the name the chart's data planes verify: quiclb-operator.quiclb-system.svc
      replaceFlag(dpArgs, 'tls-dir', tlsDir('quiclb-dataplane-tls'));
      replaceFlag(dpArgs, 'state-dir', join(group.dir, 'state'));
      replaceFlag(dpArgs, 'metrics-port', String(dpMetrics));
      dpArgs.push('--metrics-address=127.0.0.1');
      // The projected ServiceAccount token the kubelet would mount (this config server does not check it).
      writeFileSync(join(group.dir, 'node-token'), 'eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n');
      replaceFlag(dpArgs, 'node-token-file', join(group.dir, 'node-token'));
      const dp = group.spawnTs('dataplane', 'cli/main.ts', dpArgs, { env: { NODE_NAME: 'node-a', POD_NAME: 'quiclb-dataplane-x1' } });

      const deadline = Date.now() + 30_000;
      let ready = '';
      while (Date.now() < deadline) {
        if (!dp.running) throw new Error(`the data plane exited:\n${dp.tail()}`);
        try {
          const r = await fetch(`http://127.0.0.1:${dpMetrics}/readyz`);
          ready = `${r.status} ${await r.text()}`;
          if (r.status === 200) break;
        } catch {
          /* not listening yet */
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      expect(ready).toMatch(/^200 /);
      expect(ready).toContain('load balancer chart: listening on 127.0.0.1:');
      const ack = await cs.waitFor(/"identity":"([^"]+)"[^\n]*"msg":"snapshot acknowledged"/, 10_000);
      // The certificate is shared by every data plane of the DaemonSet: the node of the Hello (NODE_NAME) tells them apart.
      expect(ack[1]).toBe('quiclb-dataplane@node-a');
      const metrics = await (await fetch(`http://127.0.0.1:${dpMetrics}/metrics`)).text();
      expect(metrics).toMatch(/^quiclb_operator_connected 1$/m);
    }),
    60_000,
  );

  it(
    'the operator accepts every argument of the Deployment (it stops only for want of an API server)',
    group.guard(async () => {
      const withTracing = await render({ 'operator.otlpEndpoint': 'http://127.0.0.1:4318' });
      const opArgs = args('Deployment', 'quiclb-operator', withTracing);
      replaceFlag(opArgs, 'tls-dir', tlsDir('quiclb-operator-tls', 'operator-tls'));
      replaceFlag(opArgs, 'config-listen', '127.0.0.1:0');
      replaceFlag(opArgs, 'metrics-port', '0');
      const home = join(group.dir, 'home');
      mkdirSync(home);
      const env: NodeJS.ProcessEnv = { ...process.env, HOME: home, NODE_OPTIONS: '' };
      delete env.KUBECONFIG;
      delete env.KUBERNETES_SERVICE_HOST;
      const r = await run(group, 'operator', process.execPath, ['--import', 'tsx', 'cli/main.ts', ...opArgs], 30_000, { env });
      expect(r.timedOut).toBe(false);
      expect(r.output).toContain('no Kubernetes API server configured');
      expect(r.output).not.toMatch(/unknown option|Unknown option|need --leader-elect|must be/);
    }),
    40_000,
  );
});
