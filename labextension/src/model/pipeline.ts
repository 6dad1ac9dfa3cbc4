/**
 * What the server's analysis says about one open notebook, kept fresh as the notebook is edited.
 *
 * Every change to the notebook's shared document leads to a `POST analyze` with the editor's
 * live content; nothing is saved to do it. Typing in a source (and running cells) waits for a
 * quiet delay; a discrete edit (tags and other metadata, cells added, moved or deleted, their
 * undo and redo) is analyzed at once: there is no burst to wait out, and the sidebar should
 * show its effect as soon as the server answers.
 * Answers to requests overtaken by a newer edit are dropped, so the view never goes back in time.
 * The browser adds no pipeline logic: it shows what analyze says.
 */
import { INotebookModel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { ApiError, requestAPI } from '../api/request';
import { AnalyzeResponse, Parameter, SplitMode } from '../api/shapes';
import { EditKind, editKind } from './changes';
import { assignColours } from './colours';
import { mark } from './marks';

export type AnalysisState = 'idle' | 'analyzing' | 'ready' | 'error';

/** Per-cell view of the analysis: which step or role a cell is in, and its diagnostics. */
export interface CellInfo {
  /** Step name (for cells of a step) or role name (imports, functions, parameters, …). */
  group?: string;
  /** The step's display name. */
  label?: string;
  /** `step`, `metrics`, `imports`, `functions`, `parameters`. */
  kind?: string;
  colour?: string;
  /** True for the first code cell of its step. */
  first?: boolean;
}

export interface PipelineOptions {
  /** Quiet time (ms) after the last edit before analyzing. */
  delay: () => number;
  /** Analyze while editing (else only on demand). */
  auto: () => boolean;
}

export class NotebookPipeline {
  constructor(
    readonly model: INotebookModel,
    private _path: () => string,
    private _options: PipelineOptions
  ) {
    const ydoc = (model.sharedModel as any).ydoc;
    const cells = ydoc?.getArray('cells');
    // One listener sees every change of the document (local, undo/redo, or a collaborator's).
    this._onTransaction = (transaction: { changed: Map<unknown, Set<string | null>> }) =>
      this._edited(editKind(transaction.changed, cells));
    ydoc?.on('afterTransaction', this._onTransaction);
    this._ydoc = ydoc;
  }

  /** The kind of the last edit of the notebook's document (tests and benches read it). */
  get lastEdit(): EditKind {
    return this._lastEdit;
  }

  /** Emitted whenever the state, the analysis or the parameter values change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get state(): AnalysisState {
    return this._state;
  }

  /** The latest analysis, kept while a newer one runs (and after an error). */
  get result(): AnalyzeResponse | null {
    return this._result;
  }

  /** One-line message of the last failure, if the last analysis failed. */
  get error(): ApiError | null {
    return this._error;
  }

  get split(): SplitMode {
    return this._split;
  }

  set split(value: SplitMode) {
    if (value !== this._split) {
      this._split = value;
      this._version++;
      void this.analyze();
    }
  }

  /** Milliseconds the last analysis took (request to answer), for the status line and benches. */
  get lastDuration(): number {
    return this._lastDuration;
  }

  /** Step name -> CSS colour, stable across reloads. */
  get colours(): Map<string, string> {
    return this._colours;
  }

  /** Cell index -> what the analysis says about that cell. */
  get cells(): Map<number, CellInfo> {
    return this._cells;
  }

  /**
   * Values of the pipeline parameters as the form holds them (name -> value, typed as the
   * parameter's type). Part 2's Run button sends these; a parameter left at its default is absent.
   */
  get parameterValues(): Record<string, unknown> {
    return { ...this._values };
  }

  setParameterValue(param: Parameter, value: unknown | undefined): void {
    if (value === undefined) {
      delete this._values[param.name];
    } else {
      this._values[param.name] = value;
    }
    this._version++;
    this._changed.emit();
    this.schedule();
  }

  /** The first code cell of `step` (what clicking a step selects), if any. */
  firstCodeCell(step: { cells: number[] }): number | undefined {
    return step.cells.find(i => this.model.cells.get(i)?.type === 'code') ?? step.cells[0];
  }

  /** Analyze after the configured quiet delay (when analyzing while editing is on). */
  schedule(): void {
    if (this._disposed || !this._options.auto()) {
      return;
    }
    mark('analyze:scheduled');
    this._generation++;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this.analyze();
    }, this._options.delay());
  }

  /**
   * Analyze the live content at once (in a microtask, so a burst of discrete edits in one task
   * is one request), unless that content is already analyzed or being analyzed. What an
   * explicit edit (the role editor, "tag as new step", "clear tags") calls, whether or not
   * analyzing while editing is on.
   */
  refresh(): void {
    if (this._disposed || this._refreshQueued) {
      return;
    }
    this._refreshQueued = true;
    queueMicrotask(() => {
      this._refreshQueued = false;
      if (this._analyzedVersion !== this._version || this._state === 'error') {
        void this.analyze();
      }
    });
  }

  /** Analyze the live content now. */
  async analyze(): Promise<void> {
    if (this._disposed) {
      return;
    }
    if (this._timer !== null) {
      clearTimeout(this._timer); // this request covers the scheduled one
      this._timer = null;
    }
    const generation = ++this._generation;
    this._analyzedVersion = this._version;
    mark('analyze:start');
    this._state = 'analyzing';
    this._changed.emit();
    const started = performance.now();
    try {
      const body = JSON.stringify({
        notebook: this.model.toJSON(),
        path: this._path(),
        split: this._split,
        // The plan assumes the parameter values the form holds.
        parameters: this._values
      });
      mark('analyze:serialized');
      const result = await requestAPI<AnalyzeResponse>('analyze', { method: 'POST', body });
      mark('analyze:answered');
      if (generation !== this._generation || this._disposed) {
        return; // overtaken by a newer edit
      }
      this._lastDuration = performance.now() - started;
      this._setResult(result);
      this._error = null;
      this._state = 'ready';
    } catch (error) {
      if (generation !== this._generation || this._disposed) {
        return;
      }
      this._error =
        error instanceof ApiError ? error : new ApiError(String(error), 'client-error', 0);
      this._state = 'error';
    }
    this._changed.emit();
    mark('analyze:applied');
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._ydoc?.off('afterTransaction', this._onTransaction);
    Signal.clearData(this);
  }

  private _edited(kind: EditKind): void {
    if (kind === 'none') {
      return;
    }
    this._lastEdit = kind;
    this._version++;
    if (!this._options.auto()) {
      return;
    }
    if (kind === 'discrete') {
      this.refresh();
    } else {
      this.schedule();
    }
  }

  private _setResult(result: AnalyzeResponse): void {
    this._result = result;
    const pipeline = result.pipeline;
    this._colours = assignColours(pipeline.steps.map(s => s.name));
    const cells = new Map<number, CellInfo>();
    const code = new Set<number>();
    for (let i = 0; i < this.model.cells.length; i++) {
      if (this.model.cells.get(i).type === 'code') {
        code.add(i);
      }
    }
    for (const step of pipeline.steps) {
      let first = true;
      for (const i of step.cells) {
        if (!code.has(i)) {
          continue;
        }
        cells.set(i, {
          group: step.name,
          label: step.display_name,
          kind: step.role,
          colour: this._colours.get(step.name),
          first
        });
        first = false;
      }
    }
    // Role cells are not steps: the analysis names them by their definitions and parameters.
    for (const step of pipeline.steps) {
      for (const d of step.definitions ?? []) {
        if ((d.kind === 'imports-cell' || d.kind === 'functions-cell') && !cells.has(d.cell)) {
          const kind = d.kind === 'imports-cell' ? 'imports' : 'functions';
          cells.set(d.cell, { group: kind, label: kind, kind });
        }
      }
    }
    for (const p of pipeline.parameters) {
      if (!cells.has(p.cell)) {
        cells.set(p.cell, { group: 'parameters', label: 'parameters', kind: 'parameters' });
      }
    }
    this._cells = cells;
    // Drop values of parameters that no longer exist.
    const names = new Set(pipeline.parameters.map(p => p.name));
    for (const k of Object.keys(this._values)) {
      if (!names.has(k)) {
        delete this._values[k];
      }
    }
  }

  private _changed = new Signal<this, void>(this);
  private _state: AnalysisState = 'idle';
  private _result: AnalyzeResponse | null = null;
  private _error: ApiError | null = null;
  private _split: SplitMode = 'tags';
  private _timer: ReturnType<typeof setTimeout> | null = null;
  private _generation = 0;
  private _lastDuration = 0;
  private _colours = new Map<string, string>();
  private _cells = new Map<number, CellInfo>();
  private _values: Record<string, unknown> = {};
  private _disposed = false;
  private _ydoc: any;
  private _onTransaction: (transaction: { changed: Map<unknown, Set<string | null>> }) => void;
  /** Counts the changes of what an analysis depends on (document, parameters, split). */
  private _version = 0;
  /** `_version` of the content the latest analysis request was made of. */
  private _analyzedVersion = -1;
  private _refreshQueued = false;
  private _lastEdit: EditKind = 'none';
}
