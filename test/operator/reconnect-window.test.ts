/**
 * The operator's reconnect window (operator/main.ts) outlasts the data plane's longest retry interval
 * (dataplane/agent/backoff.ts): the two are separate processes that share no code, so this test keeps them in step.
 */
import { describe, expect, it } from '@jest/globals';
import { DEFAULT_BACKOFF } from '../../dataplane/agent/backoff.js';
import { DATA_PLANE_RECONNECT_MS } from '../../operator/main.js';

describe('operator reconnect window', () => {
  it('is longer than the longest pause between a data plane\'s stream attempts', () => {
    expect(DATA_PLANE_RECONNECT_MS).toBeGreaterThan(DEFAULT_BACKOFF.maxMs);
    expect(DATA_PLANE_RECONNECT_MS).toBeGreaterThan(DEFAULT_BACKOFF.recentMaxMs);
  });
});
