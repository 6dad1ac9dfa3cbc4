/**
 * Part 2's plugin: Run, the runs and one run's view in the Pipeline sidebar (a section added
 * to part 1's sidebar through IPipelineTracker), cell marks with each step's state, read-only
 * executed notebooks, "Load into kernel", and a notification when a run this browser started
 * finishes (the RunsClient lives here, so that works with the sidebar closed).
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { IEditorServices } from '@jupyterlab/codeeditor';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { ApiError } from '../api/request';
import { RunOptions } from '../components/RunControls';
import { RunInfo, isFinished, runTargets } from '../model/runs';
import { NotebookLike, sameForRun } from '../model/unsaved';
import { IPipelineTracker } from '../tokens';
import { RunRequest, RunsClient } from './runClient';
import { markCells } from './runCells';
import { openReadOnlyNotebook } from './runNotebook';
import { RunSection } from './runSection';

/** The settings part 1's plugin owns (schema/plugin.json); part 2 reads them. */
const SETTINGS_ID = 'jupyter-pipeline:plugin';

export const RunCommandIDs = {
  run: 'jupyter-pipeline:run',
  showRuns: 'jupyter-pipeline:show-runs'
} as const;

interface RunSettings {
  defaultTarget: string;
  maxParallel: number;
  saveBeforeRun: 'ask' | 'always';
  notifyRunFinished: boolean;
}

/** How long a run's finish notification stays when the sidebar shows that run. */
const WATCHING_TOAST_MS = 4000;

/** The Python a "Load into kernel" cell runs. */
export function loadOutputsCode(runId: string, step: string): string {
  return `import jupyter_pipeline\njupyter_pipeline.load_outputs(${JSON.stringify(runId)}, ${JSON.stringify(step)})`;
}

export const runsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-pipeline:runs',
  description: 'Run the notebook as a pipeline and watch its runs live in the Pipeline sidebar.',
  autoStart: true,
  requires: [IPipelineTracker, INotebookTracker],
  optional: [
    ITranslator,
    ISettingRegistry,
    IRenderMimeRegistry,
    IEditorServices,
    NotebookPanel.IContentFactory
  ],
  activate: (
    app: JupyterFrontEnd,
    pipelines: IPipelineTracker,
    notebooks: INotebookTracker,
    translator: ITranslator | null,
    registry: ISettingRegistry | null,
    rendermime: IRenderMimeRegistry | null,
    editorServices: IEditorServices | null,
    contentFactory: NotebookPanel.IContentFactory | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_pipeline');
    const settings: RunSettings = {
      defaultTarget: 'local',
      maxParallel: 2,
      saveBeforeRun: 'ask',
      notifyRunFinished: true
    };
    if (registry) {
      registry.load(SETTINGS_ID).then(
        loaded => {
          const apply = () => {
            const c = loaded.composite as any;
            for (const k of Object.keys(settings) as (keyof RunSettings)[]) {
              if (c[k] !== undefined) {
                (settings as any)[k] = c[k];
              }
            }
          };
          apply();
          loaded.changed.connect(apply);
        },
        () => undefined // part 1 reports settings that do not load
      );
    }

    const client = new RunsClient();
    const defaults = (): RunOptions => ({
      target: pipelines.info?.default_target ?? settings.defaultTarget,
      noCache: false,
      maxParallel: settings.maxParallel
    });

    const panelFor = async (path: string | null | undefined): Promise<NotebookPanel | null> => {
      if (!path) {
        return null;
      }
      let found: NotebookPanel | null = null;
      notebooks.forEach(p => {
        if (!found && p.context.path === path) {
          found = p;
        }
      });
      if (found) {
        return found;
      }
      const opened = await app.commands.execute('docmanager:open', { path });
      return opened instanceof NotebookPanel ? opened : null;
    };

    const selectCell = async (panel: NotebookPanel, index: number) => {
      app.shell.activateById(panel.id);
      await panel.context.ready;
      const notebook = panel.content;
      const cell = notebook.widgets[index];
      if (!cell) {
        return;
      }
      notebook.mode = 'command';
      notebook.deselectAll();
      notebook.activeCellIndex = index;
      await notebook.scrollToCell(cell, 'center');
      notebook.node.focus();
    };

    /** The file as saved, or null when it cannot be read (then unsaved changes count). */
    const savedContent = async (panel: NotebookPanel): Promise<NotebookLike | null> => {
      try {
        const file = await app.serviceManager.contents.get(panel.context.path, {
          type: 'notebook',
          content: true
        });
        return (file.content as NotebookLike) ?? null;
      } catch {
        return null;
      }
    };

    /**
     * Unsaved changes: save first (asking unless the setting says always); false: do not run.
     * Only changes a run would see count: JupyterLab marks a notebook changed when its kernel
     * starts (language_info, the kernelspec's display name) and when cells run (outputs); the
     * saved file runs the same pipeline then, so Run does not ask (see model/unsaved.ts).
     */
    const saved = async (panel: NotebookPanel): Promise<boolean> => {
      const model = panel.context.model;
      if (!model.dirty) {
        return true;
      }
      const onDisk = await savedContent(panel);
      if (onDisk && sameForRun(model.toJSON() as NotebookLike, onDisk)) {
        return true;
      }
      if (settings.saveBeforeRun !== 'always') {
        const answer = await showDialog({
          title: trans.__('Save before running?'),
          body: trans.__(
            '%1 has unsaved changes. A run uses the saved notebook, so save it first.',
            panel.context.path
          ),
          buttons: [
            Dialog.cancelButton({ label: trans.__('Cancel') }),
            Dialog.okButton({ label: trans.__('Save and Run') })
          ],
          checkbox: { label: trans.__('Always save before running'), checked: false }
        });
        if (!answer.button.accept) {
          return false;
        }
        if (answer.isChecked && registry) {
          settings.saveBeforeRun = 'always';
          void registry.set(SETTINGS_ID, 'saveBeforeRun', 'always').catch(() => undefined);
        }
      }
      await panel.context.save();
      return true;
    };

    const start = async (request: RunRequest): Promise<RunInfo> => {
      try {
        return await client.startRun(request);
      } catch (error) {
        if (error instanceof ApiError && Array.isArray((error.details as any)?.diagnostics)) {
          throw new Error(error.message); // the sidebar's diagnostics list has the rest
        }
        throw error;
      }
    };

    const section = new RunSection(
      client,
      pipelines,
      {
        run: async (panel, options) => {
          if (!(await saved(panel))) {
            return null;
          }
          const pipeline = pipelines.pipelineFor(panel);
          const request: RunRequest = {
            path: panel.context.path,
            parameters: pipeline?.parameterValues ?? {},
            target: options.target,
            split: pipeline?.split ?? 'tags'
          };
          if (options.noCache) {
            request.cache = false;
          }
          if (options.target === 'local') {
            request.max_parallel = options.maxParallel;
          }
          return start(request);
        },
        rerun: async run => {
          if (!run.path) {
            throw new Error(
              trans.__(
                'Run %1’s notebook is outside the server root: re-run it from a terminal.',
                run.id
              )
            );
          }
          return start({
            path: run.path,
            parameters: run.parameters ?? {},
            target: run.backend ?? 'local',
            rerun: run.id
          });
        },
        cancel: async run => {
          try {
            await client.cancel(run.id);
          } catch (error) {
            Notification.error((error as Error).message ?? String(error), { autoClose: 6000 });
          }
        },
        goToCell: (run, cell) => {
          void panelFor(run.path).then(panel => {
            if (panel) {
              void selectCell(panel, cell);
            } else {
              Notification.warning(
                trans.__('The notebook of run %1 is not under the server root.', run.id),
                { autoClose: 5000 }
              );
            }
          });
        },
        openStepNotebook: (run, step) => {
          void openView(run, step);
        },
        openMerged: run => {
          void openView(run, null);
        },
        loadIntoKernel: (run, step) => {
          void loadIntoKernel(run, step);
        },
        shown: () => scheduleMarks()
      },
      trans,
      defaults
    );
    // Right below part 1's header when it is a widget of its own, else after its content.
    pipelines.sidebar.insertWidget(Math.min(1, pipelines.sidebar.widgets.length), section);

    const openView = async (run: RunInfo, step: string | null) => {
      if (!rendermime || !editorServices || !contentFactory) {
        Notification.error(trans.__('This JupyterLab cannot show notebooks read-only here.'));
        return;
      }
      try {
        const json = step
          ? await client.stepNotebook(run.id, step)
          : await client.mergedNotebook(run.id);
        const title = step ? `${step} · ${run.id}` : `${run.pipeline ?? 'run'} · ${run.id}`;
        const caption = step
          ? trans.__('step %1 of run %2 as executed', step, run.id)
          : trans.__('run %1: every cell with the outputs of its step', run.id);
        openReadOnlyNotebook(
          app,
          { rendermime, editorServices, contentFactory },
          `${run.id}/${step ?? '*'}`,
          title,
          caption,
          json,
          trans
        );
      } catch (error) {
        Notification.error((error as Error).message ?? String(error), { autoClose: 6000 });
      }
    };

    const loadIntoKernel = async (run: RunInfo, step: string) => {
      const panel = notebooks.currentWidget;
      if (!panel) {
        Notification.warning(trans.__('Open a notebook to load the values into its kernel.'));
        return;
      }
      app.shell.activateById(panel.id);
      const notebook = panel.content;
      NotebookActions.insertBelow(notebook);
      notebook.activeCell?.model.sharedModel.setSource(loadOutputsCode(run.id, step));
      await NotebookActions.run(notebook, panel.sessionContext);
    };

    // Cell marks: the run the view shows if it is of that notebook, else its running run.
    let marksFrame: number | null = null;
    const scheduleMarks = () => {
      if (marksFrame === null) {
        marksFrame = requestAnimationFrame(() => {
          marksFrame = null;
          updateMarks();
        });
      }
    };
    const updateMarks = () => {
      const state = client.state;
      const shown = section.selected ? state.runs[section.selected] : undefined;
      notebooks.forEach(panel => {
        const path = panel.context.path;
        let run: RunInfo | null = shown && shown.path === path ? shown : null;
        if (!run) {
          for (const id of state.order) {
            const r = state.runs[id];
            if (r.path === path && !isFinished(r.state)) {
              run = r;
              break;
            }
          }
        }
        markCells(panel, pipelines.pipelineFor(panel), run, trans);
      });
    };
    client.changed.connect(scheduleMarks);
    notebooks.currentChanged.connect(scheduleMarks);
    pipelines.currentChanged.connect(scheduleMarks);

    client.finished.connect((_, { run, mine }) => {
      if (!mine || !settings.notifyRunFinished) {
        return;
      }
      const name = run.path ?? run.pipeline ?? run.id;
      const message =
        run.state === 'succeeded'
          ? trans.__('Run %1 of %2 succeeded', run.id, name)
          : trans.__('Run %1 of %2 %3', run.id, name, run.state);
      const type =
        run.state === 'succeeded' ? 'success' : run.state === 'failed' ? 'error' : 'warning';
      // Toasts sit at the bottom right, over the sidebar's log pane. When the sidebar shows
      // this very run the toast only confirms what is on screen: it goes away soon, also for
      // a failure, whose traceback is what the user reads next. Otherwise a failure stays
      // until dismissed (and in the notification centre) so it is not missed.
      const watching = section.selected === run.id && section.isVisible;
      Notification.emit(message, type, {
        autoClose: watching ? WATCHING_TOAST_MS : run.state === 'succeeded' ? 8000 : false,
        actions: [
          {
            label: trans.__('Show run'),
            callback: () => {
              app.shell.activateById(pipelines.sidebar.id);
              section.showRun(run.id);
            }
          }
        ]
      });
    });

    app.commands.addCommand(RunCommandIDs.run, {
      label: trans.__('Run the Notebook as a Pipeline'),
      isEnabled: () => notebooks.currentWidget !== null,
      execute: async () => {
        const panel = notebooks.currentWidget;
        if (!panel) {
          return;
        }
        app.shell.activateById(pipelines.sidebar.id);
        const options = defaults();
        const pipeline = pipelines.pipelineFor(panel);
        if (!(await saved(panel))) {
          return;
        }
        const targets = runTargets(pipelines.info, panel.model?.metadata ?? null);
        const run = await start({
          path: panel.context.path,
          parameters: pipeline?.parameterValues ?? {},
          target: targets.includes(options.target) ? options.target : targets[0],
          split: pipeline?.split ?? 'tags'
        });
        section.showRun(run.id);
      }
    });
    app.commands.addCommand(RunCommandIDs.showRuns, {
      label: trans.__('Show Pipeline Runs'),
      execute: () => {
        app.shell.activateById(pipelines.sidebar.id);
        section.showRun(null);
      }
    });

    const connect = () =>
      client.start().catch(error => {
        console.warn('jupyter-pipeline: runs unavailable', error);
        // No server extension: part 1's sidebar says what to install; else try again soon.
        if (!(error instanceof ApiError && error.code === 'server-extension-missing')) {
          setTimeout(connect, 5000);
        }
      });
    void app.restored.then(connect);
  }
};
