import { assignColours, hashName, paletteColour, PALETTE_SIZE } from '../src/model/colours';

describe('assignColours', () => {
  it('gives a step the same colour whatever else the notebook has (stable across reloads)', () => {
    const alone = assignColours(['train']).get('train');
    expect(alone).toBe(paletteColour(hashName('train') % PALETTE_SIZE));
    expect(assignColours(['train']).get('train')).toBe(alone);
  });

  it('never gives two steps one colour while the palette has room', () => {
    const names = Array.from({ length: PALETTE_SIZE }, (_, i) => `step-${i}`);
    const colours = assignColours(names);
    expect(new Set(colours.values()).size).toBe(PALETTE_SIZE);
  });

  it('reuses colours beyond the palette instead of failing', () => {
    const names = Array.from({ length: PALETTE_SIZE + 3 }, (_, i) => `s${i}`);
    expect(assignColours(names).size).toBe(PALETTE_SIZE + 3);
  });

  it('hashes deterministically', () => {
    expect(hashName('abc')).toBe(hashName('abc'));
    expect(hashName('abc')).not.toBe(hashName('abd'));
  });
});
