/**
 * Parent side of matrixai-backend.ts: start one backend (the product's example QUIC backend,
 * examples/example-quic-backend.ts) as a child process and read its counters over IPC.
 */
import type { ChildProcess } from 'node:child_process';
import type { BackendStats } from '../../../examples/example-quic-backend.js';
import type { Proc, ProcGroup } from './proc.js';

export type { BackendStats };

export interface MatrixaiBackendOptions {
  host?: string;
  port: number;
  /** The standalone YAML the LB reads; the backend takes its server ID and the active config from it. */
  configFile: string;
  serverName: string;
  certDir: string;
  bodyFile: string;
  extraCids?: number;
}

export class MatrixaiBackend {
  constructor(readonly proc: Proc, readonly name: string, readonly host: string, readonly port: number) {}

  get address(): string {
    return `${this.host}:${this.port}`;
  }

  private request<T>(cmd: string): Promise<T> {
    const child: ChildProcess = this.proc.child;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.off('message', onMessage);
        reject(new Error(`${this.proc.name}: no answer to ${cmd}:\n${this.proc.tail()}`));
      }, 5000);
      const onMessage = (m: unknown): void => {
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(m as T);
      };
      child.on('message', onMessage);
      child.send({ cmd });
    });
  }

  stats(): Promise<BackendStats> {
    return this.request<BackendStats>('stats');
  }

  async reset(): Promise<void> {
    await this.request<unknown>('reset');
  }
}

export async function startMatrixaiBackend(group: ProcGroup, name: string, o: MatrixaiBackendOptions): Promise<MatrixaiBackend> {
  const host = o.host ?? '127.0.0.1';
  const p = group.spawnTs(name, 'test/e2e/peers/matrixai-backend.ts', [
    '--host', host,
    '--port', String(o.port),
    '--config-file', o.configFile,
    '--server-name', o.serverName,
    '--cert-dir', o.certDir,
    '--body-file', o.bodyFile,
    '--extra-cids', String(o.extraCids ?? 3),
  ], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
  await p.waitFor(/READY \d+/, 20000);
  return new MatrixaiBackend(p, o.serverName, host, o.port);
}
