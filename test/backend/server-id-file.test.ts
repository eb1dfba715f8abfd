import { describe, it, expect } from '@jest/globals';
import { parseServerIdText } from '../../lib/backend/server-id-file.js';

describe('parseServerIdText (the downward-API file of quiclb.io/server-id)', () => {
  it.each([
    ['0001', '0001'],
    ['00ff', '00ff'],
    ['ABCD', 'abcd'],
    ['0x0102', '0102'],
    ['0102\n', '0102'], // written by hand with echo
    ['  0a0b0c \n', '0a0b0c'],
    ['ff', 'ff'],
    ['0102030405060708090a0b0c0d0e0f', '0102030405060708090a0b0c0d0e0f'], // 15 octets, the most a server ID can be
  ])('%j is the server ID %s', (text, hex) => {
    expect(parseServerIdText(text)!.toString('hex')).toBe(hex);
  });

  it.each(['', '\n', '   '])('%j (the annotation is not set: the kubelet writes an empty file) is no server ID yet', (text) => {
    expect(parseServerIdText(text)).toBeNull();
  });

  it.each([
    ['123', /odd number of digits \(3\)/],
    ['zz01', /non-hex character at position 1/],
    ['01 02', /non-hex character at position 3/],
    ['0102030405060708090a0b0c0d0e0f10', /must be 1 to 15 octets \(hex\), got 16/],
    ['quiclb.io/server-id="0001"', /non-hex character/], // the whole-annotations form (fieldPath metadata.annotations)
    ['0x', /must be 1 to 15 octets \(hex\), got 0/],
  ])('%j is refused: %s', (text, message) => {
    expect(() => parseServerIdText(text)).toThrow(message);
  });

  it('never quotes the text in its error', () => {
    const text = 'secret-looking-value-xyz';
    try {
      parseServerIdText(text);
      throw new Error('not refused');
    } catch (e) {
      expect((e as Error).message).not.toContain('secret');
    }
  });
});
