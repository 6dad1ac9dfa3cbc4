/**
 * Stable per-step colours: the same step name gets the same colour in every session (a hash of
 * the name picks a slot), and steps of one notebook never share a colour while free slots remain
 * (a collision moves to the next free slot, in notebook order, which is also stable).
 *
 * The palette is mid-lightness and mid-saturation so that stripes, badge dots and graph nodes read
 * on both the light and the dark theme; text is never drawn in these colours.
 */

/** Hues spaced for distinguishability (degrees). */
const HUES = [210, 30, 130, 280, 0, 175, 50, 320, 95, 250, 15, 155];

/** Number of distinct step colours before they repeat. */
export const PALETTE_SIZE = HUES.length;

/** The CSS colour of palette slot `i`. */
export function paletteColour(i: number): string {
  return `hsl(${HUES[i % HUES.length]}, 62%, 52%)`;
}

/** FNV-1a: a small, stable string hash (same result in every browser and in Node). */
export function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Colours for the steps of one pipeline, in notebook order.
 *
 * @returns step name -> CSS colour.
 */
export function assignColours(steps: readonly string[]): Map<string, string> {
  const used = new Set<number>();
  const out = new Map<string, string>();
  for (const name of steps) {
    if (out.has(name)) {
      continue;
    }
    let slot = hashName(name) % PALETTE_SIZE;
    if (used.size < PALETTE_SIZE) {
      while (used.has(slot)) {
        slot = (slot + 1) % PALETTE_SIZE;
      }
    }
    used.add(slot);
    out.set(name, paletteColour(slot));
  }
  return out;
}
