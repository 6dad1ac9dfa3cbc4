/**
 * The dialog around the role editor: opens for one cell, writes its answer as tags through the
 * notebook model (so undo/redo and the dirty flag work), renaming a step everywhere it is named.
 */
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookModel } from '@jupyterlab/notebook';
import { TranslationBundle } from '@jupyterlab/translation';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';
import { RoleEditor } from '../components/RoleEditor';
import { allTags, setRole } from '../model/edits';
import { mark } from '../model/marks';
import { CellRole, isValidStepName, parseTags, taggedStepNames } from '../model/tags';

class RoleEditorBody extends ReactWidget implements Dialog.IBodyWidget<CellRole> {
  constructor(
    private _value: CellRole,
    private _steps: string[],
    private _earlier: string[],
    private _trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-PipelineRoleDialog');
  }

  getValue(): CellRole {
    return this._value;
  }

  render(): JSX.Element {
    const gpuKey = Object.keys(this._value.limits).find(k => k.includes('gpu')) ?? 'nvidia.com/gpu';
    return (
      <RoleEditor
        value={this._value}
        onChange={v => {
          this._value = v;
          this.update();
        }}
        steps={this._steps}
        earlier={this._earlier}
        gpuKey={gpuKey}
        trans={this._trans}
      />
    );
  }
}

/**
 * Open the role editor for cell `index` of `model`; apply the answer. Resolves to true when
 * the tags changed.
 */
export async function editCellRole(
  model: INotebookModel,
  index: number,
  trans: TranslationBundle
): Promise<boolean> {
  const tags = allTags(model);
  const current = parseTags(tags[index] ?? []);
  const steps = taggedStepNames(tags);
  const earlier = taggedStepNames(tags.slice(0, index)).filter(
    s => !(current.kind === 'step' && s === current.step)
  );
  const body = new RoleEditorBody(current, steps, earlier, trans);
  const result = await showDialog<CellRole>({
    // The engine's numbering (the cell's index in the .ipynb), as in the sidebar.
    title: trans.__('Pipeline role of cell %1', index),
    body,
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({ label: trans.__('Apply') })
    ],
    focusNodeSelector: 'input'
  });
  if (!result.button.accept || !result.value) {
    return false;
  }
  const role = result.value;
  if (role.kind === 'step' && (!role.step || !isValidStepName(role.step))) {
    Notification.error(
      trans.__(
        'Step name %1 is not valid: use letters, digits, _ and - only.',
        JSON.stringify(role.step ?? '')
      )
    );
    return false;
  }
  mark('edit:accepted');
  const before = JSON.stringify(model.cells.get(index)?.getMetadata('tags') ?? []);
  setRole(model, index, role);
  mark('edit:written');
  return JSON.stringify(model.cells.get(index)?.getMetadata('tags') ?? []) !== before;
}
