/**
 * Certificates for the config channel's and the admin API's mTLS tests, made with the machine's openssl (EC P-256):
 * a CA, server certificates (EKU serverAuth, SAN localhost + 127.0.0.1), client certificates (EKU clientAuth,
 * CN = the identity), and the bad cases the tests refuse: another CA's client, an expired client, a server-only
 * certificate used as a client. Each identity is written as a TLS directory (`ca.crt`, `tls.crt`, `tls.key`, the
 * layout of a Kubernetes TLS Secret), the form `--tls-dir` takes.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TlsDir {
  /** The directory: ca.crt, tls.crt, tls.key. */
  readonly dir: string;
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

export interface IssueOptions {
  /** Subject CN (the identity). */
  cn: string;
  /** 'client' (EKU clientAuth), 'server' (EKU serverAuth, SAN localhost, 127.0.0.1, ::1) or 'both'. */
  usage: 'client' | 'server' | 'both';
  /** Already expired (valid from 2 days ago until 1 day ago). */
  expired?: boolean;
  /** Extra DNS SANs (server certificates). */
  dnsNames?: string[];
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA and the certificates it issues, in one temporary directory (remove() deletes it). */
export class TestCa {
  readonly root: string;
  readonly caCert: Buffer;
  private readonly caKeyPath: string;
  private readonly caCertPath: string;
  private serial = 1;

  constructor(readonly name = 'quiclb-test-ca', root?: string) {
    this.root = root ?? mkdtempSync(join(tmpdir(), 'quiclb-tls-'));
    mkdirSync(this.root, { recursive: true });
    this.caKeyPath = join(this.root, `${name}.key`);
    this.caCertPath = join(this.root, `${name}.crt`);
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', this.caKeyPath], this.root);
    openssl(
      ['req', '-x509', '-new', '-key', this.caKeyPath, '-sha256', '-days', '30', '-subj', `/CN=${name}`,
        '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', this.caCertPath],
      this.root,
    );
    this.caCert = execFileSync('cat', [this.caCertPath]);
  }

  /** Issues a certificate and writes its TLS directory under the CA's root. */
  issue(o: IssueOptions): TlsDir {
    const id = `${o.cn.replace(/[^A-Za-z0-9_.-]/g, '_')}-${this.serial++}`;
    const dir = join(this.root, id);
    mkdirSync(dir);
    const key = join(dir, 'tls.key');
    const csr = join(dir, 'tls.csr');
    const ext = join(dir, 'ext.cnf');
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', key], dir);
    openssl(['req', '-new', '-key', key, '-subj', `/CN=${o.cn}`, '-out', csr], dir);
    const eku = o.usage === 'client' ? 'clientAuth' : o.usage === 'server' ? 'serverAuth' : 'serverAuth,clientAuth';
    const sans = [...(o.usage === 'client' ? [] : ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1']), ...(o.dnsNames ?? []).map((d) => `DNS:${d}`)];
    writeFileSync(
      ext,
      ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', `extendedKeyUsage=${eku}`, ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : [])].join('\n') + '\n',
    );
    if (o.expired) {
      // openssl 3.0's x509 has no -not_before/-not_after; `openssl ca` takes explicit start and end dates.
      const db = join(dir, 'db');
      mkdirSync(db);
      writeFileSync(join(db, 'index.txt'), '');
      const conf = join(dir, 'ca.cnf');
      writeFileSync(
        conf,
        ['[ca]', 'default_ca = test', '[test]', `database = ${join(db, 'index.txt')}`, `new_certs_dir = ${db}`, `serial = ${join(db, 'serial')}`,
          'default_md = sha256', 'policy = any', 'copy_extensions = none', '[any]', 'commonName = supplied'].join('\n') + '\n',
      );
      writeFileSync(join(db, 'serial'), `${(1000 + this.serial).toString(16).padStart(4, '0')}\n`);
      openssl(
        ['ca', '-batch', '-config', conf, '-cert', this.caCertPath, '-keyfile', this.caKeyPath, '-in', csr, '-startdate', this.timeAgo(2),
          '-enddate', this.timeAgo(1), '-extfile', ext, '-notext', '-out', join(dir, 'tls.crt')],
        dir,
      );
      rmSync(db, { recursive: true });
      rmSync(conf);
    } else {
      openssl(
        ['x509', '-req', '-in', csr, '-CA', this.caCertPath, '-CAkey', this.caKeyPath, '-set_serial', String(1000 + this.serial), '-sha256', '-days', '30',
          '-extfile', ext, '-out', join(dir, 'tls.crt')],
        dir,
      );
    }
    writeFileSync(join(dir, 'ca.crt'), this.caCert);
    rmSync(csr);
    rmSync(ext);
    return { dir, ca: this.caCert, cert: execFileSync('cat', [join(dir, 'tls.crt')]), key: execFileSync('cat', [key]) };
  }

  /** ASN.1 time `days` ago (openssl ca -startdate/-enddate). */
  private timeAgo(days: number): string {
    const d = new Date(Date.now() - days * 86_400_000);
    const p = (n: number) => String(n).padStart(2, '0');
    return `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}Z`;
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}
