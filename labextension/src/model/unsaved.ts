/**
 * Does an unsaved notebook differ from its file in anything a run would use?
 *
 * JupyterLab marks a notebook changed as soon as its kernel starts: it writes the kernel's
 * `language_info` (and the kernelspec's display name) into the notebook's metadata, and any
 * notebook saved elsewhere (another Python, nbformat, a text editor) differs there. Running
 * cells adds outputs and execution counts. None of that changes what a pipeline run executes,
 * so Run asks to save only when sources, cell types, tags or other metadata the run reads
 * differ from the saved file (see runPlugin's `saved`).
 */

/** The nbformat shape this module reads (a model's `toJSON()` or the contents API's). */
export interface NotebookLike {
  metadata?: Record<string, unknown>;
  cells?: CellLike[];
}

export interface CellLike {
  cell_type?: string;
  source?: string | string[];
  metadata?: Record<string, unknown>;
  attachments?: unknown;
}

/** Cell metadata that records how a cell was viewed or last executed, not what it runs. */
const VIEW_KEYS = new Set(['collapsed', 'scrolled', 'execution', 'jupyter', 'trusted']);

/** JSON with object keys sorted, so key order (Y maps keep insertion order) does not count. */
export function stableJSON(value: unknown): string {
  if (Array.isArray(value)) {
    return `[${value.map(stableJSON).join(',')}]`;
  }
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter(k => obj[k] !== undefined)
      .sort();
    return `{${keys.map(k => `${JSON.stringify(k)}:${stableJSON(obj[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function source(cell: CellLike): string {
  const s = cell.source ?? '';
  return Array.isArray(s) ? s.join('') : s;
}

/** What a run of `nb` depends on: sources, cell types, run-relevant metadata. */
export function runContent(nb: NotebookLike): string {
  const meta: Record<string, unknown> = { ...(nb.metadata ?? {}) };
  delete meta.language_info;
  const spec = meta.kernelspec as { name?: unknown } | undefined;
  if (spec && typeof spec === 'object') {
    // The kernel's name picks the kernel the steps run in; its display name and language
    // are JupyterLab's to refresh.
    meta.kernelspec = { name: spec.name };
  }
  const cells = (nb.cells ?? []).map(cell => {
    const metadata: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(cell.metadata ?? {})) {
      if (!VIEW_KEYS.has(k)) {
        metadata[k] = v;
      }
    }
    return {
      cell_type: cell.cell_type ?? 'code',
      source: source(cell),
      metadata,
      attachments: cell.attachments ?? null
    };
  });
  return stableJSON({ metadata: meta, cells });
}

/** True when running `saved` (the file) runs what `current` (the editor) shows. */
export function sameForRun(current: NotebookLike, saved: NotebookLike): boolean {
  return runContent(current) === runContent(saved);
}
