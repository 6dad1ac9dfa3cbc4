/**
 * The Run section of the Pipeline sidebar: the Run bar, then the runs list or one run's view.
 * It renders the RunsClient's state (fed by the event stream) and ticks once a second while a
 * run it shows is going; every action goes through RunActions (the plugin's, which knows the
 * notebook panels, the kernel and the documents).
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';
import { RunControls, RunOptions } from '../components/RunControls';
import { RunList } from '../components/RunList';
import { RunView } from '../components/RunView';
import { RunInfo, isFinished, runTargets, runsFor } from '../model/runs';
import { IPipelineTracker } from '../tokens';
import { RunsClient } from './runClient';

export interface RunActions {
  /** Start a run of the panel's notebook (asks to save unsaved changes first). */
  run: (panel: NotebookPanel, options: RunOptions) => Promise<RunInfo | null>;
  rerun: (run: RunInfo) => Promise<RunInfo | null>;
  cancel: (run: RunInfo) => Promise<void>;
  goToCell: (run: RunInfo, cell: number) => void;
  openStepNotebook: (run: RunInfo, step: string) => void;
  openMerged: (run: RunInfo) => void;
  loadIntoKernel: (run: RunInfo, step: string) => void;
  /** Called when the run shown in the view changes (cell marks follow it). */
  shown: (run: RunInfo | null) => void;
}

export class RunSection extends ReactWidget {
  constructor(
    private _client: RunsClient,
    private _tracker: IPipelineTracker,
    private _actions: RunActions,
    readonly trans: TranslationBundle,
    defaults: () => RunOptions
  ) {
    super();
    this.addClass('jp-PipelineRunSection');
    this.id = 'jupyter-pipeline-runs';
    this._defaults = defaults;
    this._options = defaults();
    _client.changed.connect(this._onChange, this);
    _tracker.currentChanged.connect(this._onNotebook, this);
    this._onNotebook();
  }

  /** Show one run's view (e.g. from a notification), scrolled into sight. */
  showRun(id: string | null): void {
    this._selected = id;
    this._sync();
    this.update();
    if (id) {
      requestAnimationFrame(() => this.node.scrollIntoView({ block: 'start' }));
    }
  }

  get selected(): string | null {
    return this._selected;
  }

  dispose(): void {
    if (this._ticker !== null) {
      clearInterval(this._ticker);
    }
    this._watched?.changed.disconnect(this._onChange, this);
    super.dispose();
  }

  protected render(): JSX.Element {
    const trans = this.trans;
    const panel = this._tracker.currentPanel;
    const pipeline = this._tracker.currentPipeline;
    const info = this._tracker.info;
    const path = panel?.context.path ?? null;
    const state = this._client.state;
    const now = Date.now() / 1000;
    const run = this._selected ? (state.runs[this._selected] ?? null) : null;
    const analysis = pipeline?.result?.pipeline;
    const errors = analysis?.diagnostics.filter(d => d.severity === 'error').length ?? 0;
    let disabled: string | null = null;
    if (!info) {
      disabled = trans.__('The server extension is not available');
    } else if (!panel) {
      disabled = trans.__('Open a notebook to run it');
    } else if (!analysis) {
      disabled = trans.__('Waiting for the analysis');
    } else if (errors > 0) {
      disabled = trans.__('Fix the %1 error(s) in Diagnostics first', errors);
    } else if (this._starting) {
      disabled = trans.__('Starting…');
    }
    const options = this._effectiveOptions();
    const targets = runTargets(info, panel?.model?.metadata ?? null);
    const graph =
      run && analysis && path !== null && run.path === path
        ? { steps: analysis.steps, edges: analysis.edges }
        : null;
    const loadReason = panel ? null : trans.__('Open a notebook to load values into its kernel');
    return (
      <section className="jp-PipelineSection jp-PipelineRunSectionBody">
        <h3 className="jp-PipelineSection-title">
          {trans.__('Run')}
          {this._client.status !== 'live' && (
            <span className="jp-PipelineRunStream" data-status={this._client.status}>
              {this._client.status === 'offline'
                ? trans.__('live updates lost, reconnecting…')
                : this._client.status === 'reconnecting'
                  ? trans.__('reconnecting…')
                  : trans.__('connecting…')}
            </span>
          )}
        </h3>
        <RunControls
          targets={targets}
          options={options}
          onOptions={o => {
            this._options = o;
            this.update();
          }}
          onRun={() => void this._run()}
          disabledReason={disabled}
          starting={this._starting}
          parameters={pipeline?.parameterValues ?? {}}
          trans={trans}
        />
        {this._error && (
          <div className="jp-PipelineError jp-PipelineRunStartError" role="alert">
            {this._error}
          </div>
        )}
        {run ? (
          <RunView
            run={run}
            now={now}
            trans={trans}
            graph={graph}
            fetchLog={(step, offset) => this._client.log(run.id, step, offset)}
            onBack={() => this.showRun(null)}
            onCancel={() => this._actions.cancel(run)}
            onRerun={async () => {
              const started = await this._actions.rerun(run);
              if (started) {
                this.showRun(started.id);
              }
            }}
            onGoToCell={cell => this._actions.goToCell(run, cell)}
            onOpenStepNotebook={step => this._actions.openStepNotebook(run, step)}
            onOpenMerged={() => this._actions.openMerged(run)}
            onLoadIntoKernel={step => this._actions.loadIntoKernel(run, step)}
            loadDisabledReason={loadReason}
          />
        ) : (
          <RunList
            runs={runsFor(state, path, this._showAll)}
            selected={this._selected}
            onSelect={id => this.showRun(id)}
            showAll={this._showAll || path === null}
            onShowAll={all => {
              this._showAll = all;
              this.update();
            }}
            hasMore={this._client.hasMore}
            onLoadMore={() => void this._client.loadMore().then(() => this.update())}
            currentPath={path}
            now={now}
            trans={trans}
          />
        )}
      </section>
    );
  }

  /** The chosen options, with a target the open notebook can use (what the bar shows). */
  private _effectiveOptions(): RunOptions {
    const targets = runTargets(
      this._tracker.info,
      this._tracker.currentPanel?.model?.metadata ?? null
    );
    return targets.includes(this._options.target)
      ? this._options
      : { ...this._options, target: targets[0] };
  }

  private async _run(): Promise<void> {
    const panel = this._tracker.currentPanel;
    if (!panel || this._starting) {
      return;
    }
    this._starting = true;
    this._error = null;
    this.update();
    try {
      const run = await this._actions.run(panel, this._effectiveOptions());
      if (run) {
        this.showRun(run.id);
      }
    } catch (error) {
      this._error = (error as Error).message ?? String(error);
    } finally {
      this._starting = false;
      this.update();
    }
  }

  private _onNotebook(): void {
    const pipeline = this._tracker.currentPipeline;
    if (this._watched !== pipeline) {
      this._watched?.changed.disconnect(this._onChange, this);
      pipeline?.changed.connect(this._onChange, this);
      this._watched = pipeline;
    }
    // A run of another notebook stays open only if the list shows all notebooks.
    const run = this._selected ? this._client.state.runs[this._selected] : undefined;
    const path = this._tracker.currentPanel?.context.path ?? null;
    if (run && !this._showAll && path !== null && run.path !== path) {
      this._selected = null;
    }
    this._options = { ...this._defaults(), target: this._options.target };
    this._onChange();
  }

  private _onChange(): void {
    this._sync();
    this.update();
  }

  /** Tick while a shown run goes on; tell the plugin which run the view shows. */
  private _sync(): void {
    const state = this._client.state;
    const path = this._tracker.currentPanel?.context.path ?? null;
    const shown = this._selected ? (state.runs[this._selected] ?? null) : null;
    const visible = shown ? [shown] : runsFor(state, path, this._showAll).slice(0, 60);
    const live = visible.some(r => !isFinished(r.state));
    if (live && this._ticker === null) {
      this._ticker = setInterval(() => this.update(), 1000);
    } else if (!live && this._ticker !== null) {
      clearInterval(this._ticker);
      this._ticker = null;
    }
    if (shown !== this._lastShown) {
      this._lastShown = shown;
      this._actions.shown(shown);
    }
  }

  private _defaults: () => RunOptions;
  private _options: RunOptions;
  private _selected: string | null = null;
  private _showAll = false;
  private _starting = false;
  private _error: string | null = null;
  private _ticker: ReturnType<typeof setInterval> | null = null;
  private _watched: IPipelineTracker['currentPipeline'] = null;
  private _lastShown: RunInfo | null = null;
}
