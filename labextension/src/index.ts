/**
 * jupyter-pipeline's lab extension: plugins and commands only. The pieces live in api/ (the one
 * requestAPI helper and the contract's shapes), model/ (tags, colours, layout, the per-notebook
 * analysis, tag edits), components/ (React views) and widgets/ (the sidebar, cell decorations,
 * the role dialog).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, InputDialog, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { clearIcon, downloadIcon, editIcon, refreshIcon, tagIcon } from '@jupyterlab/ui-components';
import { requestAPI } from './api/request';
import { pipelineIcon } from './icons';
import { allTags, clearTags, tagAsNewStep } from './model/edits';
import { NotebookPipeline } from './model/pipeline';
import { freshStepName, isValidStepName, taggedStepNames } from './model/tags';
import { IPipelineTracker } from './tokens';
import { CellDecorator } from './widgets/cellDecorator';
import { editCellRole } from './widgets/roleDialog';
import { PipelineSidebar } from './widgets/sidebar';
import { runsPlugin } from './widgets/runPlugin';
import { PipelineTracker } from './widgets/tracker';

export { IPipelineTracker } from './tokens';
export type { NotebookPipeline } from './model/pipeline';

const PLUGIN_ID = 'jupyter-pipeline:plugin';

/** Command IDs of the extension (palette, toolbar, menus). */
export const CommandIDs = {
  openPanel: 'jupyter-pipeline:open-panel',
  tagNewStep: 'jupyter-pipeline:tag-new-step',
  clearTags: 'jupyter-pipeline:clear-tags',
  editRole: 'jupyter-pipeline:edit-cell-role',
  compile: 'jupyter-pipeline:compile',
  analyze: 'jupyter-pipeline:analyze'
} as const;

/** Settings as the schema (schema/plugin.json) defines them. */
interface Settings {
  defaultTarget: string;
  kfpHost: string;
  defaultImage: string;
  maxParallel: number;
  autoAnalyze: boolean;
  analyzeDelay: number;
}

const DEFAULTS: Settings = {
  defaultTarget: 'local',
  kfpHost: '',
  defaultImage: '',
  maxParallel: 2,
  autoAnalyze: true,
  analyzeDelay: 400
};

const plugin: JupyterFrontEndPlugin<IPipelineTracker> = {
  id: PLUGIN_ID,
  description: 'Tag cells into pipeline steps and see the inferred pipeline while editing.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ISettingRegistry, ITranslator, ICommandPalette],
  provides: IPipelineTracker,
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    registry: ISettingRegistry | null,
    translator: ITranslator | null,
    palette: ICommandPalette | null
  ): IPipelineTracker => {
    const trans = (translator ?? nullTranslator).load('jupyter_pipeline');
    const settings: Settings = { ...DEFAULTS };
    const pipelines = new Map<NotebookPanel, NotebookPipeline>();

    if (registry) {
      registry.load(PLUGIN_ID).then(
        loaded => {
          const apply = () =>
            Object.assign(settings, loaded.composite as unknown as Partial<Settings>);
          apply();
          loaded.changed.connect(apply);
        },
        reason => console.warn('jupyter-pipeline: settings not loaded, using defaults', reason)
      );
    }

    const selectCell = (panel: NotebookPanel, index: number) => {
      app.shell.activateById(panel.id);
      const notebook = panel.content;
      const cell = notebook.widgets[index];
      if (!cell) {
        return;
      }
      notebook.mode = 'command';
      notebook.deselectAll();
      notebook.activeCellIndex = index;
      void notebook.scrollToCell(cell, 'center');
      notebook.node.focus();
    };

    const compile = async (panel: NotebookPanel) => {
      const pipeline = pipelines.get(panel);
      if (!pipeline || !panel.model) {
        return;
      }
      try {
        const yaml = await requestAPI<string>('compile', {
          method: 'POST',
          body: JSON.stringify({
            notebook: panel.model.toJSON(),
            path: panel.context.path,
            split: pipeline.split,
            ...(settings.defaultImage ? { image: settings.defaultImage } : {})
          })
        });
        const name =
          (pipeline.result?.pipeline.name ??
            panel.context.path.replace(/.*\//, '').replace(/\.ipynb$/, '')) ||
          'pipeline';
        const url = URL.createObjectURL(
          new Blob([typeof yaml === 'string' ? yaml : JSON.stringify(yaml)], {
            type: 'application/yaml'
          })
        );
        const a = document.createElement('a');
        a.href = url;
        a.download = `${name}.yaml`;
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10_000);
        Notification.success(trans.__('Compiled %1.yaml for Kubeflow Pipelines', name), {
          autoClose: 4000
        });
      } catch (error) {
        Notification.error(
          trans.__('Compile failed: %1', (error as Error).message ?? String(error))
        );
      }
    };

    const selectedCodeCells = (panel: NotebookPanel): number[] => {
      const nb = panel.content;
      const out: number[] = [];
      nb.widgets.forEach((cell, i) => {
        if (nb.isSelectedOrActive(cell) && cell.model.type === 'code') {
          out.push(i);
        }
      });
      return out;
    };

    const tagSelection = async (panel: NotebookPanel) => {
      const model = panel.model;
      const cells = selectedCodeCells(panel);
      if (!model || cells.length === 0) {
        Notification.warning(trans.__('Select the code cells of the new step first.'));
        return;
      }
      const answer = await InputDialog.getText({
        title: trans.__('Tag %1 selected cells as a new step', cells.length),
        label: trans.__('Step name'),
        text: freshStepName(taggedStepNames(allTags(model)))
      });
      if (!answer.button.accept || !answer.value) {
        return;
      }
      if (!isValidStepName(answer.value)) {
        Notification.error(
          trans.__(
            'Step name %1 is not valid: use letters, digits, _ and - only.',
            JSON.stringify(answer.value)
          )
        );
        return;
      }
      tagAsNewStep(model, cells, answer.value);
      pipelines.get(panel)?.refresh();
    };

    const sidebar = new PipelineSidebar(trans, {
      selectCell,
      compile: panel => void compile(panel),
      tagSelection: panel => void tagSelection(panel)
    });
    app.shell.add(sidebar, 'right', { rank: 600 });
    void sidebar.handshake();

    const api = new PipelineTracker(sidebar, pipelines);

    const openEditor = (panel: NotebookPanel, index: number) => {
      if (!panel.model) {
        return;
      }
      void editCellRole(panel.model, index, trans).then(changed => {
        if (changed) {
          // A tag edit is analyzed at once (typing waits for a pause); with analyzing while
          // editing on, the edit itself has already asked for it and this adds nothing.
          pipelines.get(panel)?.refresh();
        }
        panel.content.activeCellIndex = index;
        panel.content.mode = 'command';
        panel.content.node.focus();
      });
    };

    const showCurrent = () => {
      const panel = tracker.currentWidget;
      sidebar.showNotebook(panel, panel ? (pipelines.get(panel) ?? null) : null);
      api.emitCurrent(panel);
    };

    tracker.widgetAdded.connect((_, panel) => {
      void panel.context.ready.then(() => {
        if (!panel.model || panel.isDisposed) {
          return;
        }
        const pipeline = new NotebookPipeline(panel.model, () => panel.context.path, {
          delay: () => settings.analyzeDelay,
          auto: () => settings.autoAnalyze
        });
        pipelines.set(panel, pipeline);
        const decorator = new CellDecorator(panel, pipeline, trans, i => openEditor(panel, i));
        panel.disposed.connect(() => {
          decorator.dispose();
          pipeline.dispose();
          pipelines.delete(panel);
          if (sidebar.panel === panel) {
            showCurrent();
          }
        });
        void pipeline.analyze();
        if (tracker.currentWidget === panel) {
          showCurrent();
        }
      });
    });
    tracker.currentChanged.connect(showCurrent);

    const current = (): NotebookPanel | null => tracker.currentWidget;
    const hasNotebook = () => current() !== null;
    app.commands.addCommand(CommandIDs.openPanel, {
      label: trans.__('Open the Pipeline Panel'),
      caption: trans.__('Show the steps, graph and diagnostics of this notebook'),
      icon: pipelineIcon,
      execute: () => app.shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.tagNewStep, {
      label: trans.__('Tag Selected Cells as a New Step'),
      caption: trans.__('Make the selected code cells a new pipeline step'),
      icon: tagIcon,
      isEnabled: hasNotebook,
      execute: () => {
        const panel = current();
        return panel ? tagSelection(panel) : undefined;
      }
    });
    app.commands.addCommand(CommandIDs.clearTags, {
      label: trans.__('Clear Pipeline Tags of Selected Cells'),
      caption: trans.__('Remove step, role and setting tags from the selected cells'),
      icon: clearIcon,
      isEnabled: hasNotebook,
      execute: () => {
        const panel = current();
        if (panel?.model) {
          clearTags(panel.model, selectedCodeCells(panel));
          pipelines.get(panel)?.refresh();
        }
      }
    });
    app.commands.addCommand(CommandIDs.editRole, {
      label: trans.__('Edit the Pipeline Role of the Active Cell'),
      icon: editIcon,
      isEnabled: hasNotebook,
      execute: () => {
        const panel = current();
        if (panel && panel.content.activeCell?.model.type === 'code') {
          openEditor(panel, panel.content.activeCellIndex);
        }
      }
    });
    app.commands.addCommand(CommandIDs.compile, {
      label: trans.__('Compile for Kubeflow'),
      caption: trans.__('Download the Kubeflow Pipelines YAML of this notebook'),
      icon: downloadIcon,
      isEnabled: hasNotebook,
      execute: () => {
        const panel = current();
        return panel ? compile(panel) : undefined;
      }
    });
    app.commands.addCommand(CommandIDs.analyze, {
      label: trans.__('Analyze the Notebook Now'),
      icon: refreshIcon,
      isEnabled: hasNotebook,
      execute: () => {
        const panel = current();
        return panel ? pipelines.get(panel)?.analyze() : undefined;
      }
    });
    if (palette) {
      const category = trans.__('Pipeline');
      for (const command of Object.values(CommandIDs)) {
        palette.addItem({ command, category });
      }
    }
    return api;
  }
};

export default [plugin, runsPlugin];
