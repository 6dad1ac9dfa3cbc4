/**
 * Tag edits on a notebook model. Every write goes through the shared model in one notebook
 * transaction, so the notebook becomes dirty and the notebook's undo manager records the whole
 * edit (a rename touching many cells included) as one step: `z` / `Shift Z` in command mode undo
 * and redo it, with per-cell or document-wide undo alike.
 */
import { INotebookModel } from '@jupyterlab/notebook';
import {
  CellRole,
  emptyRole,
  freshStepName,
  kfpName,
  parseTags,
  renameStep,
  roleToTags,
  sameTags,
  stepPrefixOf,
  taggedStepNames
} from './tags';

/** Every cell's tags, in cell order. */
export function allTags(model: INotebookModel): string[][] {
  const out: string[][] = [];
  for (let i = 0; i < model.cells.length; i++) {
    out.push(tagsOf(model, i));
  }
  return out;
}

/** One cell's tags. */
export function tagsOf(model: INotebookModel, index: number): string[] {
  const tags = model.cells.get(index)?.getMetadata('tags');
  return Array.isArray(tags) ? tags.map(String) : [];
}

function write(model: INotebookModel, changes: Map<number, string[]>): void {
  if (changes.size === 0) {
    return;
  }
  const apply = () => {
    for (const [index, tags] of changes) {
      const cell = model.cells.get(index);
      if (!cell) {
        continue;
      }
      if (tags.length) {
        cell.setMetadata('tags', tags);
      } else {
        cell.deleteMetadata('tags');
      }
    }
  };
  // The notebook's transaction (origin: the notebook) is what its undo manager tracks; the
  // cells' own setMetadata transactions join it.
  model.sharedModel.transact(apply);
}

/**
 * Give cell `index` the role `role`. When the cell's step is renamed to a name no other step
 * uses, the step is renamed everywhere: in the step tags of its other cells and in every
 * `prev:` that names it.
 */
export function setRole(model: INotebookModel, index: number, role: CellRole): void {
  const tags = allTags(model);
  const before = parseTags(tags[index] ?? []);
  const changes = new Map<number, string[]>();
  let working = tags;
  if (
    before.kind === 'step' &&
    before.step &&
    role.kind === 'step' &&
    role.step &&
    kfpName(before.step) !== kfpName(role.step) &&
    !taggedStepNames(tags).some(s => kfpName(s) === kfpName(role.step!))
  ) {
    working = renameStep(tags, before.step, role.step);
    working.forEach((t, i) => {
      if (t !== tags[i]) {
        changes.set(i, t);
      }
    });
  }
  const next = roleToTags(role, working[index] ?? [], stepPrefixOf(tags));
  if (!sameTags(next, tags[index] ?? [])) {
    changes.set(index, next);
  } else if (changes.has(index)) {
    changes.delete(index);
  }
  write(model, changes);
}

/**
 * Make the cells `indices` a new step: the first gets a fresh `step:` tag, the others lose
 * their step/role tags so they continue it. Returns the new step's name.
 */
export function tagAsNewStep(model: INotebookModel, indices: number[], name?: string): string {
  const tags = allTags(model);
  const stepName = name ?? freshStepName(taggedStepNames(tags));
  const sorted = [...indices].sort((a, b) => a - b);
  const changes = new Map<number, string[]>();
  sorted.forEach((index, k) => {
    const role: CellRole =
      k === 0 ? { ...parseTags(tags[index]), kind: 'step', step: stepName } : emptyRole();
    const next = roleToTags(role, tags[index], stepPrefixOf(tags));
    if (!sameTags(next, tags[index])) {
      changes.set(index, next);
    }
  });
  write(model, changes);
  return stepName;
}

/** Remove every pipeline tag from the cells `indices` (other tools' tags stay). */
export function clearTags(model: INotebookModel, indices: number[]): void {
  const tags = allTags(model);
  const changes = new Map<number, string[]>();
  for (const index of indices) {
    const next = roleToTags(emptyRole(), tags[index]);
    if (!sameTags(next, tags[index])) {
      changes.set(index, next);
    }
  }
  write(model, changes);
}
