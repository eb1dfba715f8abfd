// Unit and component tests: everything under test/ except the real-cluster integration suite.
import { createDefaultEsmPreset } from 'ts-jest';

/** @type {import('jest').Config} */
export default {
  ...createDefaultEsmPreset({ tsconfig: 'tsconfig.json' }),
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testPathIgnorePatterns: ['/node_modules/', '<rootDir>/test/integration/'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testTimeout: 30000,
  // On this project's 2-core machines jest runs every file in band (maxWorkers 1), in this process: a handle that a
  // failing test's cleanup leaves open (a socket to a child it killed) would keep jest alive after the report is
  // written, and CI would time out instead of failing. `npx jest --detectOpenHandles` lists such handles.
  forceExit: true,
};
