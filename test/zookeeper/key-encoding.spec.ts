import fc from 'fast-check';
import { MAX_NODE_NAME_LENGTH, decodeKey, encodeKey } from '../../lib/backends/zookeeper/key-encoding';

describe('ZooKeeper key encoding', () => {
  it('maps every key to one safe znode name that decodes back to it', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }), (key) => {
        const name = encodeKey(key);
        // eslint-disable-next-line no-control-regex
        expect(name).not.toMatch(/[/\u0000-\u001f\u007f-\u009f]/);
        expect(['', '.', '..']).not.toContain(name);
        expect(decodeKey(name)).toBe(key);
      }),
    );
  });

  it('keeps readable keys readable', () => {
    expect(encodeKey('order:42')).toBe('order:42');
    expect(encodeKey('jobs/nightly report')).toBe('jobs%2Fnightly%20report');
    expect(encodeKey('..')).toBe('%2E%2E');
    expect(encodeKey('ü')).toBe('%C3%BC');
  });

  it('bounds long keys by a hash that keeps them apart', () => {
    const long = (tail: string): string => `${'é'.repeat(300)}${tail}`;
    const a = encodeKey(long('a'));
    const b = encodeKey(long('b'));
    expect(a).not.toBe(b);
    for (const name of [a, b, encodeKey('x'.repeat(5_000))]) {
      expect(name.length).toBeLessThanOrEqual(MAX_NODE_NAME_LENGTH);
      expect(name).toMatch(/~[0-9a-f]{64}$/);
      // The readable part never ends inside a %XX escape.
      expect(name.split('~')[0]).toMatch(/^(?:[A-Za-z0-9_:-]|%[0-9A-F]{2})*$/);
      expect(decodeKey(name)).toBeUndefined();
    }
    // A key whose encoding is exactly at the limit stays whole.
    expect(encodeKey('y'.repeat(MAX_NODE_NAME_LENGTH))).toBe('y'.repeat(MAX_NODE_NAME_LENGTH));
  });

  it('never gives two distinct keys the same name', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 300 }), fc.string({ maxLength: 300 }), (x, y) => {
        if (x !== y) expect(encodeKey(x)).not.toBe(encodeKey(y));
      }),
    );
  });
});
