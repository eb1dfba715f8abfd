/** The `admin:` section of the standalone YAML: roles by client-certificate CN, field-named errors, bounds. */
import { describe, expect, it } from '@jest/globals';
import { adminRoleOf, MAX_ADMIN_CLIENTS } from '../../lib/config/admin-clients.js';
import { parseStandaloneConfig } from '../../lib/config/standalone.js';

const base = `loadbalancer: { server_id_length: 2, nonce_length: 6 }
servers: [ { id: a, address: "127.0.0.1:4000" } ]
`;
const parse = (admin: string) => parseStandaloneConfig(`${base}${admin}\n`, { baseDir: '/tmp' }).admin;

describe('admin.clients', () => {
  it('parses names and roles; absent or empty means nobody', () => {
    const a = parse('admin: { clients: [ { name: ops-alice, role: writer }, { name: "CN with spaces", role: reader } ] }');
    expect(a.clients).toEqual([
      { name: 'ops-alice', role: 'writer' },
      { name: 'CN with spaces', role: 'reader' },
    ]);
    expect(adminRoleOf(a, 'ops-alice')).toBe('writer');
    expect(adminRoleOf(a, 'CN with spaces')).toBe('reader');
    expect(adminRoleOf(a, 'OPS-ALICE')).toBeNull(); // exact match: CNs are compared as issued
    expect(parse('').clients).toEqual([]);
    expect(parse('admin: {}').clients).toEqual([]);
    expect(parse('admin: { clients: [] }').clients).toEqual([]);
  });

  it.each([
    ['admin: 5', /^admin: must be a mapping, got 5/],
    ['admin: { client: [] }', /^admin\.client: unknown field \(did you mean clients\?\)/],
    ['admin: { clients: { name: a } }', /^admin\.clients: must be a list of \{name, role\}, got a mapping/],
    ['admin: { clients: [ ops ] }', /^admin\.clients\[0\]: must be a mapping, got "ops"/],
    ['admin: { clients: [ { role: writer } ] }', /^admin\.clients\[0\]\.name: is required \(the subject CN of the client certificate\)/],
    ['admin: { clients: [ { name: 42, role: writer } ] }', /^admin\.clients\[0\]\.name: must be a non-empty string, got 42/],
    ['admin: { clients: [ { name: "", role: writer } ] }', /^admin\.clients\[0\]\.name: must be a non-empty string/],
    [`admin: { clients: [ { name: "${'x'.repeat(254)}", role: writer } ] }`, /^admin\.clients\[0\]\.name: must be at most 253 characters, got 254/],
    ['admin: { clients: [ { name: "a\\nb", role: writer } ] }', /^admin\.clients\[0\]\.name: must not contain control characters/],
    ['admin: { clients: [ { name: a } ] }', /^admin\.clients\[0\]\.role: is required \(reader or writer\)/],
    ['admin: { clients: [ { name: a, role: admin } ] }', /^admin\.clients\[0\]\.role: must be one of reader, writer, got "admin"/],
    ['admin: { clients: [ { name: a, role: reader, cert: x } ] }', /^admin\.clients\[0\]\.cert: unknown field/],
    ['admin: { clients: [ { name: a, role: reader }, { name: b, role: reader }, { name: a, role: writer } ] }', /^admin\.clients\[2\]\.name: "a" is also the name of admin\.clients\[0\]/],
  ])('%s -> a field-named error', (admin, message) => {
    expect(() => parse(admin)).toThrow(message);
  });

  it(`is bounded: at most ${MAX_ADMIN_CLIENTS} clients`, () => {
    const list = (n: number) => `admin:\n  clients:\n${Array.from({ length: n }, (_, i) => `    - { name: c${i}, role: reader }`).join('\n')}`;
    expect(parse(list(MAX_ADMIN_CLIENTS)).clients).toHaveLength(MAX_ADMIN_CLIENTS);
    expect(() => parse(list(MAX_ADMIN_CLIENTS + 1))).toThrow(/^admin\.clients: at most 1000 clients, got 1001/);
  });
});
