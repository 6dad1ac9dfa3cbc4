/**
 * Marks the cells of an open notebook with their step's state in a run: a data attribute on
 * every cell of the step (the stylesheet colours its edge) and the state as a word next to the
 * step badge of the step's first cell. Cleared when the notebook has no run to show.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { NotebookPipeline } from '../model/pipeline';
import { RunInfo, RunState } from '../model/runs';
import { stateLabel } from '../components/RunBadge';

const ATTR = 'data-pipeline-run-state';
const LABEL = 'jp-PipelineCellRunState';

export function markCells(
  panel: NotebookPanel,
  pipeline: NotebookPipeline | undefined,
  run: RunInfo | null,
  trans: TranslationBundle
): void {
  const states = new Map<string, RunState>();
  for (const s of run?.steps ?? []) {
    states.set(s.name, s.state);
  }
  panel.content.widgets.forEach((cell, index) => {
    const info = pipeline?.cells.get(index);
    const state =
      run && info?.group && (info.kind === 'step' || info.kind === 'metrics')
        ? states.get(info.group)
        : undefined;
    const node = cell.node;
    let label = node.querySelector(`.${LABEL}`) as HTMLElement | null;
    if (!state) {
      node.removeAttribute(ATTR);
      label?.remove();
      return;
    }
    node.setAttribute(ATTR, state);
    if (!info?.first) {
      label?.remove();
      return;
    }
    if (!label) {
      label = document.createElement('span');
      label.className = LABEL;
      // Next to part 1's step badge when there is one, else at the top of the cell.
      const header = node.querySelector(':scope > .jp-PipelineCellHeader');
      if (header) {
        header.appendChild(label);
      } else {
        node.insertBefore(label, node.firstChild);
      }
    }
    label.dataset.state = state;
    label.textContent = stateLabel(state, trans);
    label.title = trans.__('Step %1 in run %2: %3', info.group ?? '', run?.id ?? '', state);
  });
}
