import { newOwnerToken } from '../../lib/core/owner-token';

describe('owner tokens', () => {
  it('are 128-bit hex strings, all different, across refills of the random pool', () => {
    const tokens = Array.from({ length: 1_000 }, () => newOwnerToken());
    expect(tokens.every((t) => /^[0-9a-f]{32}$/.test(t))).toBe(true);
    expect(new Set(tokens).size).toBe(tokens.length);
  });
});
