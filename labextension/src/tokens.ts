/**
 * What the lab extension offers other plugins (part 2's run view): the sidebar to add sections
 * to, and the current notebook's pipeline model (its analysis and the parameter values).
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { Token } from '@lumino/coreutils';
import { ISignal } from '@lumino/signaling';
import { Panel } from '@lumino/widgets';
import { InfoResponse } from './api/shapes';
import { NotebookPipeline } from './model/pipeline';

export interface IPipelineTracker {
  /** The Pipeline sidebar (a Lumino Panel: `addWidget` appends a section below the analysis). */
  readonly sidebar: Panel;
  /** The notebook the sidebar shows, if any. */
  readonly currentPanel: NotebookPanel | null;
  /** Its pipeline model (analysis, colours, parameter values), if any. */
  readonly currentPipeline: NotebookPipeline | null;
  /** Emitted when the sidebar switches notebooks. */
  readonly currentChanged: ISignal<IPipelineTracker, NotebookPanel | null>;
  /** The server extension's `GET info` (null until it answered, or when it is missing). */
  readonly info: InfoResponse | null;
  /** The pipeline model of any open notebook. */
  pipelineFor(panel: NotebookPanel): NotebookPipeline | undefined;
}

export const IPipelineTracker = new Token<IPipelineTracker>(
  'jupyter-pipeline:IPipelineTracker',
  'The Pipeline sidebar and the pipeline model of each open notebook.'
);
