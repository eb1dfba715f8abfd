/** The journey backends' minimal HTTP/3: request paths as real clients encode them, bodies, response headers. */
import { describe, expect, it } from '@jest/globals';
import { bodyOf, huffmanDecode, isIntactBody, pathOfFieldSection, requestPath, responseHeaders, sizeOfPath } from './h3.js';

describe('journey HTTP/3', () => {
  it('reads the :path of gtlsclient 0.12.1 (nghttp3, Huffman-coded) and of the example client (literal)', () => {
    // captured from gtlsclient: GET https://localhost/1000000 (HEADERS frame, then its user-agent)
    const ngtcp2 = Buffer.from('01260000d1d75086a0e41d139d09518660200000007f5f508faa69d29ad962a9924ac4a128316a4f', 'hex');
    expect(requestPath(ngtcp2)).toBe('/1000000');
    const fields = Buffer.concat([Buffer.from([0, 0, 0xd1, 0xd7, 0x50, 9]), Buffer.from('localhost'), Buffer.from([0x51, 6]), Buffer.from('/12345')]);
    expect(pathOfFieldSection(fields)).toBe('/12345');
    expect(pathOfFieldSection(Buffer.from([0, 0, 0xd1, 0xc1]))).toBe('/'); // static `:path /`
  });

  it('refuses what it cannot read instead of guessing', () => {
    expect(huffmanDecode(Buffer.from([0x60, 0x20, 0x00, 0x00, 0x00, 0x00]))).toBeNull(); // padding not all ones
    expect(huffmanDecode(Buffer.from([0xff, 0xff]))).toBeNull(); // 16 bits of padding
    expect(huffmanDecode(Buffer.from([0xfe, 0x3f]))).toBeNull(); // a code outside the table
    expect(pathOfFieldSection(Buffer.from([0x05, 0x00, 0xd1]))).toBeNull(); // dynamic table in use
    expect(requestPath(Buffer.from([0x01, 0x40]))).toBeNull(); // truncated
    expect(sizeOfPath('/1000000')).toBe(1_000_000);
    expect(sizeOfPath('/99999999999')).toBeNull();
    expect(sizeOfPath('/x')).toBeNull();
    expect(sizeOfPath('/67108865')).toBeNull(); // over the cap
  });

  it('bodies are deterministic, and any change shows', () => {
    const b = bodyOf(200_000);
    expect(b.equals(bodyOf(200_000))).toBe(true);
    expect(isIntactBody(b, 200_000)).toBe(true);
    expect(isIntactBody(b.subarray(0, 199_999), 200_000)).toBe(false);
    const flipped = Buffer.from(b);
    flipped[150_000] ^= 1;
    expect(isIntactBody(flipped, 200_000)).toBe(false);
    expect(bodyOf(10).equals(b.subarray(0, 10))).toBe(true);
  });

  it('the response HEADERS carry :status and x-served-by', () => {
    const h = responseHeaders(200, 'web-abc');
    // frame type 1, length, RIC 0, base 0, static 25 (:status 200), literal name "x-served-by", value
    expect(h.toString('hex')).toBe('0118' + '0000d9' + '2704' + Buffer.from('x-served-by').toString('hex') + '07' + Buffer.from('web-abc').toString('hex'));
    expect(responseHeaders(404, 'x')[4]).toBe(0xdb);
  });
});
