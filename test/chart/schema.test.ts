// values.schema.json and templates/validate.yaml: bad values are refused by helm (install, upgrade, template,
// lint) with a message that names the value and what is wrong.
import { describe, expect, it } from '@jest/globals';
import { CHART, helm } from './helm.js';

const REJECTED: Array<[string, string[], RegExp]> = [
  ['an unknown top-level key (a typo)', ['--set', 'dataplan.enabled=true'], /additional properties 'dataplan' not allowed/],
  ['an unknown nested key', ['--set', 'operator.replica=3'], /at '\/operator': additional properties 'replica' not allowed/],
  ['zero operator replicas', ['--set', 'operator.replicas=0'], /at '\/operator\/replicas': minimum: got 0, want 1/],
  ['a port out of range', ['--set', 'dataplane.metricsPort=70000'], /at '\/dataplane\/metricsPort': maximum: got 70,000, want 65,535/],
  ['a port that is a string', ['--set-string', 'operator.configPort=9443'], /at '\/operator\/configPort': got string, want integer/],
  ['an unknown log level', ['--set', 'dataplane.logLevel=verbose'], /at '\/dataplane\/logLevel': value must be one of/],
  ['an unknown pull policy', ['--set', 'image.pullPolicy=Sometimes'], /at '\/image\/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'/],
  ['a malformed digest', ['--set', 'image.digest=latest'], /at '\/image\/digest'/],
  ['an unknown state dir type', ['--set', 'dataplane.stateDir.type=pvc'], /at '\/dataplane\/stateDir\/type': value must be one of 'hostPath', 'emptyDir'/],
  ['a relative host path', ['--set', 'dataplane.stateDir.hostPath=var/lib/quiclb'], /at '\/dataplane\/stateDir\/hostPath'/],
  ['a busy-poll above 1000 us', ['--set', 'dataplane.busyPollMicroseconds=5000'], /at '\/dataplane\/busyPollMicroseconds': maximum: got 5,000, want 1,000/],
  ['a bad duration', ['--set', 'certManager.duration=90d'], /at '\/certManager\/duration'/],
  ['maxUnavailable 0', ['--set', 'dataplane.updateStrategy.maxUnavailable=0'], /at '\/dataplane\/updateStrategy\/maxUnavailable'/],
  ['a name that is not a DNS label', ['--set', 'fullnameOverride=Quic_LB'], /at '\/fullnameOverride'/],
  ['renewDeadline not below leaseDuration', ['--set', 'operator.leaderElection.renewDeadline=15'], /operator\.leaderElection\.renewDeadline \(15\) must be below leaseDuration \(15\)/],
  ['retryPeriod not below renewDeadline', ['--set', 'operator.leaderElection.retryPeriod=10'], /operator\.leaderElection\.retryPeriod \(10\) must be below renewDeadline \(10\)/],
  ['retryPeriod too close to renewDeadline (the Lease needs 1.2 x retryPeriod below it)', ['--set', 'operator.leaderElection.renewDeadline=6', '--set', 'operator.leaderElection.retryPeriod=5'], /operator\.leaderElection\.retryPeriod \(5\) times 1\.2 must be below renewDeadline \(6\)/],
  ['the csi-driver without cert-manager', ['--set', 'certManager.csiDriver.enabled=true'], /certManager\.csiDriver\.enabled needs certManager\.enabled=true/],
  ['one port for config and metrics', ['--set', 'operator.metricsPort=9443'], /operator\.configPort and operator\.metricsPort must differ/],
  ['an OTLP endpoint that is not a URL', ['--set', 'operator.otlpEndpoint=otel-collector:4318'], /at '\/operator\/otlpEndpoint'/],
  ['a PDB that blocks every drain', ['--set', 'operator.replicas=1'], /minAvailable \(1\) must be below operator\.replicas \(1\).*podDisruptionBudget\.enabled=false/],
];

describe('values the chart refuses', () => {
  it.each(REJECTED)('%s', async (_what, args, message) => {
    const r = await helm(['template', 'quiclb', CHART, ...args]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('refuses a Kubernetes older than Chart.yaml kubeVersion (CEL rules, policy/v1 PDBs)', async () => {
    const r = await helm(['template', 'quiclb', CHART, '--kube-version', '1.29.9']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/chart requires kubeVersion: >=1\.30\.0-0 which is incompatible with Kubernetes v1\.29\.9/);
  });

  it('accepts every value values.yaml documents (helm lint --strict with the defaults is in chart.test.ts) and a percentage maxUnavailable', async () => {
    const r = await helm(['template', 'quiclb', CHART, '--set', 'dataplane.updateStrategy.maxUnavailable=10%', '--set', 'operator.listenAddress=::']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('maxUnavailable: 10%');
    expect(r.stdout).toContain('--config-listen=[::]:9443');
  });
});
