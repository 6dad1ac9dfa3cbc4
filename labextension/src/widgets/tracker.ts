/** The IPipelineTracker other plugins get: the sidebar and each open notebook's pipeline model. */
import { NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { InfoResponse } from '../api/shapes';
import { NotebookPipeline } from '../model/pipeline';
import { IPipelineTracker } from '../tokens';
import { PipelineSidebar } from './sidebar';

export class PipelineTracker implements IPipelineTracker {
  constructor(
    readonly sidebar: PipelineSidebar,
    private _pipelines: Map<NotebookPanel, NotebookPipeline>
  ) {}

  get currentPanel(): NotebookPanel | null {
    return this.sidebar.panel;
  }

  get currentPipeline(): NotebookPipeline | null {
    return this.sidebar.pipeline;
  }

  get currentChanged(): ISignal<this, NotebookPanel | null> {
    return this._currentChanged;
  }

  get info(): InfoResponse | null {
    return this.sidebar.info;
  }

  pipelineFor(panel: NotebookPanel): NotebookPipeline | undefined {
    return this._pipelines.get(panel);
  }

  /** Tell listeners the sidebar now shows `panel`. */
  emitCurrent(panel: NotebookPanel | null): void {
    this._currentChanged.emit(panel);
  }

  private _currentChanged = new Signal<this, NotebookPanel | null>(this);
}
