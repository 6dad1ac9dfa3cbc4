/**
 * What kind of edit one transaction of a notebook's shared document (Yjs) was, so the analysis
 * can follow it at the right pace: typing in a cell's source comes in bursts and waits for a
 * pause (the analyze delay); a tag edit, a metadata edit, cells added, moved or deleted, undo and
 * redo of those are discrete and are analyzed at once; outputs and execution counts (running
 * cells) wait like typing.
 */

/** `typing`: a source changed; `discrete`: only metadata or the cell list; `other`: the rest. */
export type EditKind = 'none' | 'typing' | 'discrete' | 'other';

/** The part of a Yjs type this module reads: the key it has in its parent map, if any. */
interface SharedType {
  _item?: { parentSub?: string | null } | null;
}

/**
 * Classify a transaction by the shared types it changed (`transaction.changed`: type -> the
 * keys changed, null for a text or array). `cells` is the document's cell list
 * (`ydoc.getArray('cells')`, @jupyter/ydoc's layout).
 */
export function editKind(changed: Map<unknown, Set<string | null>>, cells: unknown): EditKind {
  let kind: EditKind = 'none';
  for (const [type, keys] of changed) {
    const key = (type as SharedType)._item?.parentSub ?? null;
    if (key === 'source') {
      return 'typing'; // a cell's Y.Text: typing wins over anything in the same transaction
    }
    if (key === 'metadata' || type === cells) {
      kind = 'discrete'; // cell or notebook metadata (tags), cells added/moved/deleted
    } else if (kind === 'none') {
      // A cell's own fields are discrete only when its whole metadata was replaced.
      kind = type !== null && keys.has('metadata') ? 'discrete' : 'other';
    }
  }
  return kind;
}
