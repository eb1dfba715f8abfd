/** The upstream-socket budget (dataplane/resources.ts) and the flow bounds it implies (issue 10, item 1). */
import { describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { readNofileLimit, readPortRange, socketBudget } from '../../dataplane/resources.js';
import { Router } from '../../dataplane/router.js';
import { repoRoot } from '../helpers/run-cli.js';
import { server, snapshot } from './helpers.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
`;

describe('socket budget', () => {
  it('parses /proc/self/limits and ip_local_port_range', () => {
    expect(readNofileLimit(LIMITS)).toEqual({ soft: 1024, hard: 524288 });
    expect(readNofileLimit(LIMITS.replace('1024                 524288', 'unlimited            unlimited'))).toEqual({ soft: Infinity, hard: Infinity });
    expect(readNofileLimit('nothing')).toBeNull();
    expect(readPortRange('32768\t60999\n')).toEqual({ low: 32768, high: 60999 });
    expect(readPortRange('junk')).toBeNull();
  });

  it('keeps a descriptor reserve and a quarter of the port range, shared by worker processes', () => {
    const range = { low: 32768, high: 60999 }; // 28,232 ports
    expect(socketBudget({ nofile: { soft: 1024, hard: 1024 }, openFds: 30, portRange: range, processes: 1 })).toMatchObject({ cap: 1024 - 256 - 30 });
    expect(socketBudget({ nofile: { soft: 100, hard: 100 }, openFds: 10, portRange: null, processes: 1 }).cap).toBe(100 - 25 - 10); // reserve at most a quarter
    const ports = socketBudget({ nofile: { soft: 1 << 20, hard: 1 << 20 }, openFds: 30, portRange: range, processes: 1 });
    expect(ports.cap).toBe(Math.floor(28_232 * 0.75));
    expect(ports.limitedBy).toMatch(/local ports/);
    expect(socketBudget({ nofile: { soft: 1 << 20, hard: 1 << 20 }, openFds: 30, portRange: range, processes: 4 }).cap).toBe(Math.floor((28_232 * 0.75) / 4));
    expect(socketBudget({ nofile: null, openFds: null, portRange: null, processes: 1 }).cap).toBe(Infinity);
  });

  it('shrinks the flow budgets to the cap: unconfirmed at most a quarter, confirmed the rest', () => {
    const r = new Router(snapshot([server('a', '0001', '127.0.0.1', 1)], { flows: { maxFlows: 100_000, idleTimeoutMs: 30_000 } }), undefined, 0);
    expect(r.flowLimits()).toMatchObject({ max: 100_000, maxUnconfirmed: 25_000 });
    r.setFlowCap(738);
    expect(r.flowLimits()).toMatchObject({ max: 738 - 184, maxUnconfirmed: 184 });
    expect(r.flows.max + r.flows.maxUnconfirmed).toBeLessThanOrEqual(738);
  });

  it('raises the soft nofile limit to the hard one (prlimit on the process itself)', () => {
    // Node raises the soft limit itself when it starts, so lower it afterwards to see raiseNofileLimit() work.
    const code = [
      "import { execFileSync } from 'node:child_process';",
      "import { raiseNofileLimit } from './dataplane/resources.ts';",
      "execFileSync('prlimit', ['--pid', String(process.pid), '--nofile=256:2048']);",
      'console.log(JSON.stringify(raiseNofileLimit()));',
    ].join('\n');
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      cwd: repoRoot,
      encoding: 'utf8',
      env: { ...process.env, NODE_OPTIONS: '' },
    });
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(out).toEqual({ before: { soft: 256, hard: 2048 }, after: { soft: 2048, hard: 2048 }, problem: null });
  });
});
