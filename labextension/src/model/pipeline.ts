/**
 * What the server's analysis says about one open notebook, kept fresh as the notebook is edited.
 *
 * Every change to the notebook's shared document (source, tags, cells added or moved) schedules
 * a `POST analyze` with the editor's live content after a quiet delay; nothing is saved to do it.
 * Answers to requests overtaken by a newer edit are dropped, so the view never goes back in time.
 * The browser adds no pipeline logic: it shows what analyze says.
 */
import { INotebookModel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { ApiError, requestAPI } from '../api/request';
import { AnalyzeResponse, Parameter, SplitMode } from '../api/shapes';
import { assignColours } from './colours';

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
    this._onUpdate = () => this.schedule();
    // One listener catches every change of the document, tags included.
    ydoc?.on('update', this._onUpdate);
    this._ydoc = ydoc;
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
    this._generation++;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._timer = setTimeout(() => {
      this._timer = null;
      void this.analyze();
    }, this._options.delay());
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
    this._state = 'analyzing';
    this._changed.emit();
    const started = performance.now();
    try {
      const result = await requestAPI<AnalyzeResponse>('analyze', {
        method: 'POST',
        body: JSON.stringify({
          notebook: this.model.toJSON(),
          path: this._path(),
          split: this._split,
          // The plan assumes the parameter values the form holds.
          parameters: this._values
        })
      });
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
  }

  dispose(): void {
    this._disposed = true;
    if (this._timer !== null) {
      clearTimeout(this._timer);
    }
    this._ydoc?.off('update', this._onUpdate);
    Signal.clearData(this);
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
  private _onUpdate: () => void;
}
