/**
 * Cell decorations of one notebook: a coloured stripe and a header line above each code cell's
 * input with a badge (the cell's step or role; a button that opens the role editor) and the
 * diagnostics the analysis pinned on the cell.
 */
import { Cell } from '@jupyterlab/cells';
import { NotebookPanel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { Diagnostic } from '../api/shapes';
import { mark } from '../model/marks';
import { NotebookPipeline } from '../model/pipeline';
import { kfpName, parseTags } from '../model/tags';

const HEADER = 'jp-PipelineCellHeader';
const SEVERITY_GLYPH: Record<string, string> = { error: '✖', warning: '⚠', info: 'ℹ' };

/** What a code cell's decoration shows; equal looks need no DOM write. */
interface Look {
  kind: string;
  label: string;
  tagged: boolean;
  title: string;
  colour?: string;
  diagnostics: Diagnostic[];
}

function sameLook(a: Look | undefined, b: Look): boolean {
  return (
    a !== undefined &&
    a.kind === b.kind &&
    a.label === b.label &&
    a.tagged === b.tagged &&
    a.title === b.title &&
    a.colour === b.colour &&
    a.diagnostics.length === b.diagnostics.length &&
    a.diagnostics.every((d, i) => {
      const e = b.diagnostics[i];
      return (
        d.severity === e.severity &&
        d.code === e.code &&
        d.message === e.message &&
        d.line === e.line
      );
    })
  );
}

export class CellDecorator {
  constructor(
    private _panel: NotebookPanel,
    private _pipeline: NotebookPipeline,
    private _trans: TranslationBundle,
    private _openEditor: (index: number) => void
  ) {
    _pipeline.changed.connect(this._schedule, this);
    _panel.content.modelContentChanged.connect(this._schedule, this);
    _panel.model?.cells.changed.connect(this._schedule, this);
    this._schedule();
  }

  dispose(): void {
    this._pipeline.changed.disconnect(this._schedule, this);
    this._panel.content.modelContentChanged.disconnect(this._schedule, this);
    this._panel.model?.cells.changed.disconnect(this._schedule, this);
    if (this._frame !== null) {
      cancelAnimationFrame(this._frame);
    }
  }

  private _schedule(): void {
    this._all = true;
    this._request();
  }

  private _request(): void {
    if (this._frame !== null) {
      return;
    }
    // Coalesce bursts of changes (typing, cells rendering) into one DOM pass per frame.
    this._frame = requestAnimationFrame(() => {
      this._frame = null;
      if (this._all) {
        this.update();
      } else {
        this._update([...this._pending]);
      }
    });
  }

  /** Bring every cell's decoration in line with the current tags and analysis. */
  update(): void {
    this._all = false;
    this._update(null);
  }

  /**
   * Decorate the cells `only` (or every cell). A cell whose look has not changed is left
   * alone: writing a cell's classes or its colour variable makes the browser recompute the
   * style of the cell's whole editor, and an edit of one step changes few cells' looks.
   */
  private _update(only: Cell[] | null): void {
    mark('decorate:start');
    this._pending.clear();
    const notebook = this._panel.content;
    const result = this._pipeline.result;
    const byCell = new Map<number, Diagnostic[]>();
    for (const d of result?.pipeline.diagnostics ?? []) {
      if (d.cell !== null && d.cell !== undefined) {
        byCell.set(d.cell, [...(byCell.get(d.cell) ?? []), d]);
      }
    }
    const visit = (cell: Cell, index: number) => {
      if (cell.isDisposed) {
        return;
      }
      if (cell.model.type !== 'code') {
        this._clear(cell);
        return;
      }
      this._decorate(cell, index, byCell.get(index) ?? []);
    };
    if (only) {
      for (const cell of only) {
        const index = notebook.widgets.indexOf(cell);
        if (index >= 0) {
          visit(cell, index);
        }
      }
    } else {
      notebook.widgets.forEach(visit);
    }
    mark('decorate:end');
  }

  private _clear(cell: Cell): void {
    if (!this._looks.has(cell) && !cell.hasClass('jp-pipeline-cell')) {
      return;
    }
    this._looks.delete(cell);
    cell.node.querySelector(`:scope > .${HEADER}`)?.remove();
    cell.removeClass('jp-pipeline-cell');
    cell.removeClass('jp-pipeline-cell-error');
    cell.node.style.removeProperty('--jp-pipeline-colour');
  }

  /** What cell `index` shows: its own tags first, else what the analysis says about it. */
  private _look(cell: Cell, index: number, diagnostics: Diagnostic[]): Look {
    const trans = this._trans;
    const tags = cell.model.getMetadata('tags');
    const own = parseTags(Array.isArray(tags) ? tags.map(String) : []);
    const info = this._pipeline.cells.get(index);
    let text: string;
    let kind: string;
    let colour: string | undefined;
    let tagged = true;
    if (own.kind === 'step' && own.step) {
      kind = 'step';
      text = own.step;
      colour = info?.colour ?? this._pipeline.colours.get(kfpName(own.step));
    } else if (own.kind !== 'none') {
      kind = own.kind;
      text = own.kind;
      colour = info?.colour;
    } else if (info?.group) {
      // Untagged: it continues a step (or an imports/functions block), as the analysis says.
      tagged = false;
      kind = info.kind ?? 'step';
      text = info.label ?? info.group;
      colour = info.colour;
    } else {
      tagged = false;
      kind = 'none';
      text = this._pipeline.result ? trans.__('not in the pipeline') : trans.__('untagged');
    }
    const what = tagged ? `${kind === 'step' ? trans.__('step') : ''} ${text}` : text;
    return {
      kind,
      label: tagged || kind === 'none' ? text : `↳ ${text}`,
      tagged,
      title: trans.__('Pipeline: %1. Click to edit the role of this cell.', what.trim()),
      colour,
      diagnostics
    };
  }

  private _decorate(cell: Cell, index: number, diagnostics: Diagnostic[]): void {
    const look = this._look(cell, index, diagnostics);
    let header = cell.node.querySelector(`:scope > .${HEADER}`) as HTMLElement | null;
    const input = cell.node.querySelector(':scope > .jp-Cell-inputWrapper');
    if (
      header &&
      sameLook(this._looks.get(cell), look) &&
      (!input || header.nextElementSibling === input)
    ) {
      return;
    }
    const created = !header;
    if (!header) {
      header = document.createElement('div');
      header.className = HEADER;
      const badge = document.createElement('button');
      badge.className = 'jp-PipelineBadge';
      badge.type = 'button';
      badge.addEventListener('click', event => {
        event.stopPropagation();
        const i = this._panel.content.widgets.indexOf(cell);
        if (i >= 0) {
          this._openEditor(i);
        }
      });
      // Keep clicks on the badge from entering edit mode on the cell below it.
      badge.addEventListener('mousedown', event => event.stopPropagation());
      const dot = document.createElement('span');
      dot.className = 'jp-PipelineBadge-dot';
      const label = document.createElement('span');
      label.className = 'jp-PipelineBadge-label';
      badge.append(dot, label);
      const diags = document.createElement('span');
      diags.className = 'jp-PipelineCellDiagnostics';
      header.append(badge, diags);
    }
    // Above the input. A cell the windowed notebook has not rendered yet has no input: place
    // the header once it renders (the layout would otherwise put the input after it).
    if (input) {
      if (header.nextElementSibling !== input) {
        cell.node.insertBefore(header, input);
      }
    } else {
      if (!header.parentElement) {
        cell.node.appendChild(header);
      }
      if (!this._waiting.has(cell)) {
        this._waiting.add(cell);
        void cell.ready.then(() => this._scheduleCell(cell));
      }
    }
    const before = created ? undefined : this._looks.get(cell);
    this._looks.set(cell, look);
    if (sameLook(before, look)) {
      return; // only the header's place changed
    }
    const { kind, tagged, colour, diagnostics: diags } = look;
    const badge = header.querySelector('.jp-PipelineBadge') as HTMLButtonElement;
    badge.dataset.kind = kind;
    badge.dataset.tagged = String(tagged);
    badge.classList.toggle('jp-mod-continued', !tagged);
    (badge.querySelector('.jp-PipelineBadge-label') as HTMLElement).textContent = look.label;
    badge.title = look.title;
    badge.setAttribute('aria-label', look.title);
    if (colour) {
      cell.node.style.setProperty('--jp-pipeline-colour', colour);
      cell.addClass('jp-pipeline-cell');
    } else {
      cell.node.style.removeProperty('--jp-pipeline-colour');
      cell.removeClass('jp-pipeline-cell');
    }
    const diagBox = header.querySelector('.jp-PipelineCellDiagnostics') as HTMLElement;
    diagBox.replaceChildren(
      ...diags.map(d => {
        const el = document.createElement('span');
        el.className = `jp-PipelineCellDiagnostic jp-mod-${d.severity}`;
        el.textContent = `${SEVERITY_GLYPH[d.severity] ?? ''} ${d.code}`;
        el.title = d.line ? `${d.message} (line ${d.line})` : d.message;
        return el;
      })
    );
    cell.toggleClass(
      'jp-pipeline-cell-error',
      diags.some(d => d.severity === 'error')
    );
  }

  /** Decorate `cell` alone on the next frame (it has just rendered its input). */
  private _scheduleCell(cell: Cell): void {
    this._pending.add(cell);
    this._request();
  }

  private _frame: number | null = null;
  private _all = false;
  /** Cells to decorate on the next frame when not all of them are. */
  private _pending = new Set<Cell>();
  private _waiting = new WeakSet<Cell>();
  /** The look each cell's decoration shows now. */
  private _looks = new WeakMap<Cell, Look>();
}
