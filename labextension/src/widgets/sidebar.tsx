/**
 * The "Pipeline" sidebar: follows the current notebook and shows its analysis (PipelineView).
 * It first asks the server extension who it is (`GET info`); a missing or older server
 * extension shows what to install instead of a blank panel.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Panel } from '@lumino/widgets';
import * as React from 'react';
import { ApiError, INSTALL_HINT, requestAPI } from '../api/request';
import { API_VERSION } from '../api/types';
import { InfoResponse } from '../api/shapes';
import { PipelineView } from '../components/PipelineView';
import { pipelineIcon } from '../icons';
import { mark } from '../model/marks';
import { NotebookPipeline } from '../model/pipeline';
import { allTags } from '../model/edits';
import { taggedStepNames } from '../model/tags';

export interface SidebarActions {
  selectCell: (panel: NotebookPanel, index: number) => void;
  compile: (panel: NotebookPanel) => void;
  tagSelection: (panel: NotebookPanel) => void;
}

class SidebarBody extends ReactWidget {
  constructor(private _owner: PipelineSidebar) {
    super();
    this.addClass('jp-PipelineSidebar-body');
  }

  render(): JSX.Element {
    mark('sidebar:render');
    const o = this._owner;
    const trans = o.trans;
    const panel = o.panel;
    const pipeline = o.pipeline;
    return (
      <>
        <header className="jp-PipelineSidebar-header">
          <h2>{trans.__('Pipeline')}</h2>
          {panel && <span className="jp-PipelineSidebar-notebook">{panel.context.path}</span>}
        </header>
        {o.infoError && (
          <div className="jp-PipelineError jp-mod-server-extension-missing" role="alert">
            {o.infoError}
          </div>
        )}
        {!o.infoError && !panel && (
          <p className="jp-PipelineEmpty">{trans.__('Open a notebook to see its pipeline.')}</p>
        )}
        {!o.infoError && panel && pipeline && (
          <PipelineView
            pipeline={pipeline}
            tagged={taggedStepNames(allTags(pipeline.model)).length > 0}
            trans={trans}
            onSelectCell={i => o.actions.selectCell(panel, i)}
            onCompile={() => o.actions.compile(panel)}
            onTagSelection={() => o.actions.tagSelection(panel)}
          />
        )}
      </>
    );
  }
}

export class PipelineSidebar extends Panel {
  constructor(
    readonly trans: TranslationBundle,
    readonly actions: SidebarActions
  ) {
    super();
    this.id = 'jupyter-pipeline-sidebar';
    this.addClass('jp-PipelinePanel');
    this.title.icon = pipelineIcon;
    this.title.label = trans.__('Pipeline');
    this.title.caption = trans.__('Pipeline: steps, graph and diagnostics of the current notebook');
    this._body = new SidebarBody(this);
    this.addWidget(this._body);
  }

  /** The server extension's answer to `GET info`, once it came. */
  info: InfoResponse | null = null;
  /** Why the server extension cannot be used, if so. */
  infoError: string | null = null;

  get panel(): NotebookPanel | null {
    return this._panel;
  }

  get pipeline(): NotebookPipeline | null {
    return this._pipeline;
  }

  /** Ask the server extension for its version; remember what to tell the user if it is unusable. */
  async handshake(): Promise<void> {
    try {
      const info = await requestAPI<InfoResponse>('info');
      if (typeof info.api_version !== 'number' || info.api_version < API_VERSION) {
        this.infoError = this.trans.__(
          'server extension missing or outdated (API %1, this panel needs %2): %3',
          String(info.api_version ?? '?'),
          API_VERSION,
          INSTALL_HINT
        );
      } else {
        this.info = info;
        this.infoError = null;
      }
    } catch (error) {
      this.infoError =
        error instanceof ApiError && error.code === 'server-extension-missing'
          ? error.message
          : this.trans.__(
              'server extension missing or outdated (%1): %2',
              String((error as Error).message ?? error),
              INSTALL_HINT
            );
    }
    this._body.update();
  }

  /** Show `panel` (or nothing) with its pipeline model. */
  showNotebook(panel: NotebookPanel | null, pipeline: NotebookPipeline | null): void {
    if (this._pipeline) {
      this._pipeline.changed.disconnect(this._refresh, this);
    }
    this._panel = panel;
    this._pipeline = pipeline;
    if (pipeline) {
      pipeline.changed.connect(this._refresh, this);
      if (!pipeline.result && pipeline.state !== 'analyzing' && !this.infoError) {
        void pipeline.analyze();
      }
    }
    this._body.update();
  }

  private _refresh(): void {
    this._body.update();
  }

  private _body: SidebarBody;
  private _panel: NotebookPanel | null = null;
  private _pipeline: NotebookPipeline | null = null;
}
