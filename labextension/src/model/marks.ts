/**
 * User-timing marks on the path from a notebook edit to the updated sidebar graph (analysis
 * request, answer, cell decorations, layout, render). Only the latest mark of each name is kept,
 * so a long session does not grow the timeline. bench/ui_tagging.py reads them to tell where the
 * time goes.
 */
export const MARK_PREFIX = 'jupyter-pipeline:';

/** Record `name` now (replacing its previous mark). */
export function mark(name: string): void {
  if (typeof performance === 'undefined' || typeof performance.mark !== 'function') {
    return;
  }
  const full = MARK_PREFIX + name;
  performance.clearMarks(full);
  performance.mark(full);
}
