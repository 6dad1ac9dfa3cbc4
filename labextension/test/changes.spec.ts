import { YNotebook } from '@jupyter/ydoc';
import { EditKind, editKind } from '../src/model/changes';

/** A real notebook shared model (@jupyter/ydoc, as JupyterLab uses) and the kinds of its edits. */
function notebook(): { nb: YNotebook; kinds: EditKind[] } {
  const nb = YNotebook.create();
  nb.insertCells(0, [
    { cell_type: 'code', source: 'x = 1', metadata: {} },
    { cell_type: 'code', source: 'y = x', metadata: { tags: ['step:b'] } }
  ]);
  const kinds: EditKind[] = [];
  const cells = nb.ydoc.getArray('cells');
  nb.ydoc.on('afterTransaction', (tr: { changed: Map<unknown, Set<string | null>> }) => {
    const kind = editKind(tr.changed, cells);
    if (kind !== 'none') {
      kinds.push(kind);
    }
  });
  return { nb, kinds };
}

describe('edit kinds of the notebook document', () => {
  let nb: YNotebook;
  let kinds: EditKind[];
  beforeEach(() => ({ nb, kinds } = notebook()));
  afterEach(() => nb.dispose());

  it('a tag edit is discrete, in the notebook transaction or alone', () => {
    nb.getCell(0).setMetadata('tags', ['step:a']);
    nb.transact(() => nb.getCell(1).setMetadata('tags', ['step:c', 'prev:a']));
    nb.getCell(1).deleteMetadata('tags');
    expect(kinds).toEqual(['discrete', 'discrete', 'discrete']);
  });

  it('typing in a source is typing, even with a tag edit in the same transaction', () => {
    nb.getCell(0).updateSource(0, 0, 'z = 2\n');
    nb.transact(() => {
      nb.getCell(0).setMetadata('tags', ['step:a']);
      nb.getCell(1).updateSource(0, 1, 'w');
    });
    expect(kinds).toEqual(['typing', 'typing']);
  });

  it('cells added, moved and deleted, and notebook metadata, are discrete', () => {
    nb.insertCell(1, { cell_type: 'code', source: 'z = 3', metadata: {} });
    nb.moveCell(0, 2);
    nb.deleteCell(0);
    nb.setMetadata('pipeline', { image: 'python:3.11' });
    expect(kinds).toEqual(['discrete', 'discrete', 'discrete', 'discrete']);
  });

  it('running a cell (execution count, outputs) waits like typing', () => {
    const cell = nb.getCell(0) as any;
    cell.execution_count = 3;
    cell.setOutputs([{ output_type: 'stream', name: 'stdout', text: 'hi\n' }]);
    expect(kinds).toEqual(['other', 'other']);
  });

  it('nothing changed is no edit', () => {
    expect(editKind(new Map(), nb.ydoc.getArray('cells'))).toBe('none');
  });
});
