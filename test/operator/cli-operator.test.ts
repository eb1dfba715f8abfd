// `quiclb operator` flag handling (the real CLI from source): help, and usage errors (exit 2) that say what to fix
// before anything connects anywhere.
import { describe, expect, it } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/run-cli.js';

describe('quiclb operator flags', () => {
  it('prints its help and is listed in the main help', () => {
    const r = runCli(['operator', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--config-listen ADDR/);
    expect(r.stdout).toMatch(/--leader-elect/);
    expect(runCli(['--help']).stdout).toMatch(/^ {2}operator /m);
  });

  it.each([
    [[], /--config-listen ADDR is required/],
    [['--config-listen', '127.0.0.1:0'], /--tls-dir DIR is required/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--lease-name', 'x'], /need --leader-elect/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--leader-elect', '--lease-duration', '5', '--renew-deadline', '5'], /below --lease-duration/],
    // The Lease's own rule (operator/kube/lease.ts): 1.2 x retry period below the renew deadline, defaults included.
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--leader-elect', '--renew-deadline', '6', '--retry-period', '5'], /--retry-period: 1\.2 x 5 s must be below --renew-deadline \(6 s\)/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--leader-elect', '--lease-duration', '2'], /--lease-duration must be at least 3/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--metrics-port', 'x'], /--metrics-port: expected a non-negative integer/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--log-level', 'loud'], /--log-level: must be one of/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--otlp-endpoint', 'ftp://x'], /^quiclb operator: --otlp-endpoint: OTLP\/HTTP needs an http:\/\/ or https:\/\/ URL, got ftp:/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--data-plane-auth', 'cert'], /--data-plane-auth: must be token or none/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--data-plane-auth', 'token'], /needs --data-plane-service-account NS\/NAME/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--data-plane-service-account', 'a/b'], /needs --data-plane-auth token/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--data-plane-auth', 'token', '--data-plane-service-account', 'dp'], /--data-plane-service-account: expected NAMESPACE\/NAME/],
    [['--config-listen', '127.0.0.1:0', '--tls-dir', '/nonexistent', '--server-id-propagation', 'soon'], /--server-id-propagation: must be a duration/],
    [['--bogus'], /Unknown option '--bogus'/],
  ])('refuses %j', (args, message) => {
    const r = runCli(['operator', ...args]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  });

  it('refuses a TLS directory without its files before connecting anywhere', () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiclb-op-cli-'));
    try {
      const kc = join(dir, 'kubeconfig');
      // A server nobody listens on: the TLS check must come first.
      writeFileSync(kc, 'apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\nusers: [{name: u, user: {token: t}}]\n');
      const r = runCli(['operator', '--config-listen', '127.0.0.1:0', '--tls-dir', dir, '--kubeconfig', kc]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/TLS directory .*ca\.crt is missing/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a kubeconfig without a server instead of falling back to localhost:8080', () => {
    const dir = mkdtempSync(join(tmpdir(), 'quiclb-op-cli-'));
    try {
      const kc = join(dir, 'kubeconfig');
      writeFileSync(kc, 'apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n');
      const r = runCli(['operator', '--config-listen', '127.0.0.1:0', '--tls-dir', dir, '--kubeconfig', kc]);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/no Kubernetes API server configured/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
