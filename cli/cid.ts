/** `quiclb cid encode|decode|inspect`: the QUIC-LB codec for people debugging routing and for bulk checks. */
import { randomBytes } from 'node:crypto';
import {
  asObject,
  cipherModeOf,
  CidDecoder,
  ConfigError,
  configFromJson,
  decryptCid,
  encodeCid,
  hexField,
  makeConfig,
  parseHex,
  toHex,
  type QuicLbConfig,
} from '../lib/index.js';
import { intFlag, parseFlags } from './args.js';
import { runJsonLines } from './jsonl.js';
import { UsageError } from './usage-error.js';

export const CID_HELP = `Usage:
  quiclb cid encode --config-id N --server-id-len N --nonce-len N [--key HEX] --server-id HEX
                    [--nonce HEX] [--len-self-encoded | --first-octet-low N] [--extra-len N]
  quiclb cid encode --jsonl        < lines of {"config_id","server_id_len","nonce_len","key","server_id",
                                     "nonce","len_self_encoded","first_octet_low"?}  -> {"cid": hex}
                                     (without len_self_encoded or first_octet_low the 5 low bits are random,
                                     or those of a "cid" field on the line, so test-vector files reproduce)
  quiclb cid decode --config SPEC [--config SPEC ...] CID
  quiclb cid decode --jsonl        < lines of {"configs":[{"config_id","server_id_len","nonce_len","key"}],"cid"}
                                     ("decoder_configs" is accepted for "configs")
                                     -> {"config_id": n|null, "server_id": hex|null, "reason": null|string}
  quiclb cid inspect CID [--config SPEC ...]

SPEC is ID:SERVER_ID_LEN:NONCE_LEN[:KEY_HEX], e.g. 0:2:6:8f95f09245765f80256934e50c66207f.
Without --nonce, encode draws a random nonce. Keys are 16 bytes (32 hex digits); no key means plaintext mode.
Decode reasons: reserved (config ID 7), unknown-config, too-short.
Invalid input exits with status 2; with --jsonl a bad line yields {"error": "..."} in its place and the exit status is 2.`;

function parseSpec(spec: string): QuicLbConfig {
  const parts = spec.split(':');
  if (parts.length < 3 || parts.length > 4) {
    throw new UsageError(`--config ${JSON.stringify(spec)}: expected ID:SERVER_ID_LEN:NONCE_LEN[:KEY_HEX]`);
  }
  const [id, s, n, key] = parts;
  return makeConfig({
    configId: intFlag('config (ID)', id, true),
    serverIdLength: intFlag('config (SERVER_ID_LEN)', s, true),
    nonceLength: intFlag('config (NONCE_LEN)', n, true),
    key: key === undefined || key === '' ? null : parseHex(key, 'key'),
  });
}

function encodeJson(value: unknown): { cid: string } {
  const obj = asObject(value, 'input');
  const config = configFromJson(obj, 'input');
  let low: number | undefined;
  if (obj.first_octet_low !== undefined && obj.first_octet_low !== null) {
    if (!Number.isInteger(obj.first_octet_low) || (obj.first_octet_low as number) < 0 || (obj.first_octet_low as number) > 31) {
      throw new ConfigError('first_octet_low', 'must be an integer between 0 and 31');
    }
    low = obj.first_octet_low as number;
  } else if (!config.lengthSelfEncoded && typeof obj.cid === 'string' && obj.cid.length >= 2) {
    // A test-vector line carries its expected CID: reuse its 5 arbitrary low bits so the vector reproduces.
    low = hexField(obj, 'cid')[0] & 0x1f;
  }
  const cid = encodeCid(config, hexField(obj, 'server_id'), hexField(obj, 'nonce'), { firstOctetLow: low });
  return { cid: toHex(cid) };
}

const decoderCache = new Map<string, CidDecoder>();

function decoderFor(configs: unknown): CidDecoder {
  if (!Array.isArray(configs)) throw new ConfigError('configs', 'must be an array of configs');
  const cacheKey = JSON.stringify(configs);
  let d = decoderCache.get(cacheKey);
  if (!d) {
    const parsed = configs.map((c, i) => configFromJson(c, `configs[${i}]`));
    const ids = new Set<number>();
    for (const c of parsed) {
      if (ids.has(c.configId)) throw new ConfigError('configs', `config_id ${c.configId} appears twice`);
      ids.add(c.configId);
    }
    d = new CidDecoder(parsed);
    if (decoderCache.size > 1024) decoderCache.clear();
    decoderCache.set(cacheKey, d);
  }
  return d;
}

function decodeResultJson(decoder: CidDecoder, cid: Uint8Array) {
  const r = decoder.decode(cid);
  return {
    config_id: r.reason === null ? r.configId : null,
    server_id: r.serverId === null ? null : toHex(r.serverId),
    reason: r.reason,
  };
}

function decodeJson(value: unknown) {
  const obj = asObject(value, 'input');
  // decoder_configs: the name the oracle vector file uses for the same list.
  const decoder = decoderFor(obj.configs ?? obj.decoder_configs);
  return decodeResultJson(decoder, hexField(obj, 'cid'));
}

/** Runs `quiclb cid ...`; returns the exit status. */
export async function cidCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'encode':
      return encodeCommand(rest);
    case 'decode':
      return decodeCommand(rest);
    case 'inspect':
      return inspectCommand(rest);
    case undefined:
      help();
      return 2;
    case '--help':
    case '-h':
      return help();
    default:
      throw new UsageError(`unknown cid subcommand ${JSON.stringify(sub)} (expected encode, decode or inspect)`);
  }
}

async function encodeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    jsonl: { type: 'boolean' },
    'config-id': { type: 'string' },
    'server-id-len': { type: 'string' },
    'nonce-len': { type: 'string' },
    key: { type: 'string' },
    'server-id': { type: 'string' },
    nonce: { type: 'string' },
    'len-self-encoded': { type: 'boolean' },
    'first-octet-low': { type: 'string' },
    'extra-len': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return help();
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  if (values.jsonl) return (await runJsonLines(encodeJson)) ? 2 : 0;
  const config = makeConfig({
    configId: intFlag('config-id', values['config-id'], true),
    serverIdLength: intFlag('server-id-len', values['server-id-len'], true),
    nonceLength: intFlag('nonce-len', values['nonce-len'], true),
    key: values.key ? parseHex(values.key, '--key') : null,
    lengthSelfEncoded: values['len-self-encoded'] ?? false,
    extraLength: intFlag('extra-len', values['extra-len']) ?? 0,
  });
  const low = intFlag('first-octet-low', values['first-octet-low']);
  if (low !== undefined && (low > 31 || values['len-self-encoded'])) {
    throw new UsageError('--first-octet-low: must be 0..31 and cannot be combined with --len-self-encoded');
  }
  if (!values['server-id']) throw new UsageError('--server-id is required');
  const sid = parseHex(values['server-id'], '--server-id');
  const nonce = values.nonce ? parseHex(values.nonce, '--nonce') : randomBytes(config.nonceLength);
  process.stdout.write(toHex(encodeCid(config, sid, nonce, { firstOctetLow: low })) + '\n');
  return 0;
}

async function decodeCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    jsonl: { type: 'boolean' },
    config: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return help();
  if (values.jsonl) {
    if (positionals.length) throw new UsageError('--jsonl reads connection IDs from stdin; give no CID argument');
    return (await runJsonLines(decodeJson)) ? 2 : 0;
  }
  if (positionals.length !== 1) throw new UsageError('decode takes exactly one connection ID (hex)');
  if (!values.config?.length) throw new UsageError('decode needs at least one --config ID:SERVER_ID_LEN:NONCE_LEN[:KEY_HEX]');
  const decoder = new CidDecoder(values.config.map(parseSpec));
  process.stdout.write(JSON.stringify(decodeResultJson(decoder, parseHex(positionals[0], 'connection ID'))) + '\n');
  return 0;
}

async function inspectCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseFlags(argv, {
    config: { type: 'string', multiple: true },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) return help();
  if (positionals.length !== 1) throw new UsageError('inspect takes exactly one connection ID (hex)');
  const cid = parseHex(positionals[0], 'connection ID');
  if (cid.length === 0) throw new UsageError('connection ID: empty');
  const configs = (values.config ?? []).map(parseSpec);
  const configId = cid[0] >> 5;
  const low = cid[0] & 0x1f;
  const lines = [
    `connection ID   ${toHex(cid)} (${cid.length} octets)`,
    `first octet     0x${cid[0].toString(16).padStart(2, '0')} = config rotation bits ${configId.toString(2).padStart(3, '0')} (${configId}), low bits ${low}`,
    `config id       ${configId === 7 ? '7: reserved, no routing information (server without a config, §3.2)' : configId}`,
    `length bits     ${low === cid.length - 1 ? `${low}: consistent with a self-encoded length of ${low + 1} octets` : `${low}: not the self-encoded length (that would be ${cid.length - 1}); random or another length`}`,
  ];
  const config = configs.find((c) => c.configId === configId);
  if (configId !== 7 && configs.length) {
    if (!config) {
      lines.push(`routing         unroutable: unknown-config (no --config for config id ${configId})`);
    } else {
      const r = new CidDecoder([config]).decode(cid);
      lines.push(`mode            ${cipherModeOf(config)} (server ID ${config.serverIdLength} octets, nonce ${config.nonceLength} octets)`);
      if (r.reason !== null) {
        lines.push(`routing         unroutable: ${r.reason}`);
      } else {
        const { nonce } = decryptCid(config, cid);
        lines.push(`server id       ${toHex(r.serverId)}`, `nonce           ${toHex(nonce)}`);
        const extra = cid.length - 1 - config.serverIdLength - config.nonceLength;
        if (extra > 0) lines.push(`extra octets    ${extra} (ignored by the load balancer)`);
      }
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

function help(): number {
  process.stdout.write(CID_HELP + '\n');
  return 0;
}
