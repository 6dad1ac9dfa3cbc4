import { NotebookLike, runContent, sameForRun, stableJSON } from '../src/model/unsaved';

const saved = (): NotebookLike => ({
  metadata: {
    kernelspec: { display_name: 'Python 3', language: 'python', name: 'python3' },
    language_info: { name: 'python' },
    pipeline: { image: 'python:3.11' }
  },
  cells: [
    { cell_type: 'code', source: ['x = 1\n', 'y = 2'], metadata: { tags: ['step:a'] } },
    { cell_type: 'markdown', source: '# notes', metadata: {} }
  ]
});

describe('sameForRun', () => {
  it('ignores what JupyterLab writes when a kernel starts (language_info, display name)', () => {
    const current = saved();
    current.metadata!.language_info = {
      name: 'python',
      version: '3.11.7',
      codemirror_mode: { name: 'ipython', version: 3 }
    };
    current.metadata!.kernelspec = {
      name: 'python3',
      display_name: 'Python 3 (ipykernel)',
      language: 'python'
    };
    expect(sameForRun(current, saved())).toBe(true);
  });

  it('ignores outputs, execution counts, ids, view state and key order', () => {
    const current: NotebookLike = {
      metadata: {
        pipeline: { image: 'python:3.11' },
        kernelspec: { name: 'python3' }
      },
      cells: [
        {
          cell_type: 'code',
          source: 'x = 1\ny = 2',
          metadata: {
            collapsed: true,
            execution: { 'iopub.status.idle': 'now' },
            tags: ['step:a']
          },
          outputs: [{ output_type: 'stream', text: 'hi' }],
          execution_count: 3,
          id: 'abc'
        } as any,
        { cell_type: 'markdown', source: '# notes', metadata: { jupyter: { source_hidden: true } } }
      ]
    };
    expect(sameForRun(current, saved())).toBe(true);
  });

  it.each([
    ['a source', (nb: NotebookLike) => (nb.cells![0].source = 'x = 2')],
    ['a tag', (nb: NotebookLike) => (nb.cells![0].metadata = { tags: ['step:b'] })],
    ['a cell type', (nb: NotebookLike) => (nb.cells![1].cell_type = 'raw')],
    ['a new cell', (nb: NotebookLike) => nb.cells!.push({ cell_type: 'code', source: '' })],
    ['the kernel', (nb: NotebookLike) => (nb.metadata!.kernelspec = { name: 'ir' })],
    ['pipeline metadata', (nb: NotebookLike) => (nb.metadata!.pipeline = { image: 'x' })]
  ])('sees a real edit: %s', (_what, edit) => {
    const current = saved();
    edit(current);
    expect(sameForRun(current, saved())).toBe(false);
  });

  it('writes canonical JSON', () => {
    expect(stableJSON({ b: 1, a: [{ d: 2, c: undefined }] })).toBe('{"a":[{"d":2}],"b":1}');
    expect(runContent({})).toBe('{"cells":[],"metadata":{}}');
  });
});
