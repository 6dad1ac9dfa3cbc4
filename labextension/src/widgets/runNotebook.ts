/**
 * Executed notebooks of a run (one step's, or the merged one) opened in the main area as
 * read-only documents: a StaticNotebook rendering the JSON the server sent, with JupyterLab's
 * own renderers. Nothing is written under the server root and no kernel starts: these are
 * records of what ran, not notebooks to edit.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { NotebookModel, StaticNotebook } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { TranslationBundle } from '@jupyterlab/translation';
import { notebookIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

export interface ReadOnlyNotebookDeps {
  rendermime: IRenderMimeRegistry;
  contentFactory: StaticNotebook.IContentFactory;
  editorServices: IEditorServices;
}

/** The open read-only views by key, so a second click reveals instead of duplicating. */
const open = new Map<string, MainAreaWidget<StaticNotebook>>();

/**
 * Show `json` (nbformat 4) read-only in a main-area tab.
 *
 * @param key - identifies the document (e.g. `run/step`); an open tab with it is reused.
 */
export function openReadOnlyNotebook(
  app: JupyterFrontEnd,
  deps: ReadOnlyNotebookDeps,
  key: string,
  title: string,
  caption: string,
  json: any,
  trans: TranslationBundle
): MainAreaWidget<StaticNotebook> {
  // Cells read `editable: false` from their metadata when they are created (and their
  // editors become read-only); the JSON is the server's copy, changing it changes no file.
  json = {
    ...json,
    cells: (json?.cells ?? []).map((c: any) => ({
      ...c,
      metadata: { ...(c.metadata ?? {}), editable: false }
    }))
  };
  const existing = open.get(key);
  if (existing && !existing.isDisposed) {
    existing.content.model?.fromJSON(json);
    markReadOnly(existing.content);
    app.shell.activateById(existing.id);
    return existing;
  }
  const model = new NotebookModel();
  model.fromJSON(json);
  model.readOnly = true;
  const content = new StaticNotebook({
    rendermime: deps.rendermime,
    contentFactory: deps.contentFactory,
    mimeTypeService: deps.editorServices.mimeTypeService
  });
  content.model = model;
  markReadOnly(content);
  content.addClass('jp-PipelineReadOnlyNotebook');
  const widget = new MainAreaWidget({ content });
  widget.id = `jupyter-pipeline-view-${key.replace(/[^A-Za-z0-9_-]/g, '-')}`;
  widget.title.label = title;
  widget.title.caption = caption;
  widget.title.icon = notebookIcon;
  widget.title.closable = true;
  const banner = new Widget();
  banner.addClass('jp-PipelineReadOnlyBanner');
  banner.node.textContent = trans.__('Read-only: %1', caption);
  widget.toolbar.addItem('jupyter-pipeline-read-only', banner);
  widget.disposed.connect(() => {
    open.delete(key);
    model.dispose();
  });
  open.set(key, widget);
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
  return widget;
}

function markReadOnly(content: StaticNotebook): void {
  for (const cell of content.widgets) {
    cell.readOnly = true;
  }
}
