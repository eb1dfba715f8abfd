// Integration tests against a real Kubernetes control plane (test/cluster/*.sh): etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler and kwok on loopback. The cluster is started once per run by the global
// setup and stopped by the global teardown; tests find it through KUBECONFIG and QUICLB_* variables.
// Run: NODE_OPTIONS=--experimental-vm-modules npx jest -c jest.integration.config.js   (or: make test-integration)
import { createDefaultEsmPreset } from 'ts-jest';

/** @type {import('jest').Config} */
export default {
  ...createDefaultEsmPreset({ tsconfig: 'tsconfig.json' }),
  displayName: 'integration',
  testEnvironment: 'node',
  roots: ['<rootDir>/test/integration'],
  testMatch: ['**/*.test.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  globalSetup: '<rootDir>/test/integration/global-setup.ts',
  globalTeardown: '<rootDir>/test/integration/global-teardown.ts',
  // One cluster, 2 cores: run the suites one after another.
  maxWorkers: 1,
  testTimeout: 120000,
  // As in jest.config.js: a handle left open by a failing test must not keep CI from reporting.
  forceExit: true,
};
