import ELK from 'elkjs/lib/elk.bundled.js';
import {
  LayoutCache,
  MARGIN,
  NODE_WIDTH_STEP,
  nodeWidth,
  cachedLayout,
  edgeLabel,
  layoutGraph,
  mergeEdges,
  toElkGraph
} from '../src/model/layout';

const nodes = [
  { id: 'load', label: 'load' },
  { id: 'split', label: 'split' },
  { id: 'train', label: 'train' },
  { id: 'evaluate', label: 'evaluate' }
];
const edges = [
  { source: 'load', target: 'split', kind: 'data', variables: ['df'], reason: 'split reads df' },
  {
    source: 'split',
    target: 'train',
    kind: 'data',
    variables: ['X_train', 'y_train'],
    reason: 'train reads X_train, y_train'
  },
  { source: 'split', target: 'evaluate', kind: 'data', variables: ['X_test'], reason: 'r' },
  { source: 'train', target: 'evaluate', kind: 'prev', variables: [], reason: 'prev:train' }
];

describe('layout adapter', () => {
  it('labels edges with their variables, or their kind', () => {
    expect(edgeLabel(edges[1])).toBe('X_train, y_train');
    expect(edgeLabel(edges[3])).toBe('prev');
    expect(edgeLabel({ ...edges[0], variables: ['a', 'b', 'c', 'd', 'e'] })).toBe('a, b, c +2');
  });

  it('drops edges to unknown steps and self-loops', () => {
    const g = toElkGraph(nodes, [
      ...edges,
      { ...edges[0], target: 'ghost' },
      { ...edges[0], target: 'load' }
    ]);
    expect(g.edges).toHaveLength(4);
  });

  it('lays the graph out top-down with elkjs, labels placed, every edge a polyline', async () => {
    const g = await layoutGraph(new ELK(), nodes, edges);
    const y = Object.fromEntries(g.nodes.map(n => [n.id, n.y]));
    expect(y.load).toBeLessThan(y.split);
    expect(y.split).toBeLessThan(y.train);
    expect(y.train).toBeLessThan(y.evaluate);
    expect(g.edges).toHaveLength(4);
    for (const e of g.edges) {
      expect(e.points.length).toBeGreaterThanOrEqual(2);
    }
    const trainEdge = g.edges.find(e => e.target === 'train')!;
    expect(trainEdge.label?.text).toBe('X_train, y_train');
    expect(trainEdge.reason).toBe('train reads X_train, y_train');
    // Everything fits in the reported size.
    for (const n of g.nodes) {
      expect(n.x + n.width).toBeLessThanOrEqual(g.width);
      expect(n.y + n.height).toBeLessThanOrEqual(g.height);
    }
  });
});

describe('layout bounds and margins', () => {
  it('keeps every box and label, the widest label included, MARGIN inside the picture', async () => {
    // A label much wider than the boxes beside a vertical edge: elkjs' own size cut it.
    const wide = [
      { id: 'a', label: 'a' },
      { id: 'b', label: 'b' },
      { id: 'c', label: 'c' }
    ];
    const wideEdges = [
      { source: 'a', target: 'b', kind: 'data', variables: ['x'], reason: 'r' },
      {
        source: 'a',
        target: 'c',
        kind: 'data',
        variables: ['a_rather_long_name', 'another_long_name', 'third_one'],
        reason: 'r'
      },
      { source: 'b', target: 'c', kind: 'data', variables: ['y'], reason: 'r' }
    ];
    const g = await layoutGraph(new ELK(), wide, wideEdges);
    const boxes = [
      ...g.nodes,
      ...g.edges.flatMap(e => (e.label ? [e.label] : [])),
      ...g.edges.flatMap(e => e.points.map(p => ({ ...p, width: 0, height: 0 })))
    ];
    for (const b of boxes) {
      expect(b.x).toBeGreaterThanOrEqual(MARGIN);
      expect(b.y).toBeGreaterThanOrEqual(MARGIN);
      expect(b.x + b.width).toBeLessThanOrEqual(g.width - MARGIN);
      expect(b.y + b.height).toBeLessThanOrEqual(g.height - MARGIN);
    }
    // The widest thing sets the width: it sits exactly MARGIN from one side or the other.
    const left = Math.min(...boxes.map(b => b.x));
    const right = Math.max(...boxes.map(b => b.x + b.width));
    expect(left).toBe(MARGIN);
    expect(Math.ceil(right + MARGIN)).toBe(g.width);
  });

  it('sizes edge labels with their own measure (they are drawn in the code font)', () => {
    const g = toElkGraph(
      nodes,
      edges,
      t => t.length * 7,
      t => t.length * 10
    );
    const label = g.edges!.find(e => e.id === 'split->train:data')!.labels![0];
    expect(label.width).toBe('X_train, y_train'.length * 10 + 8);
    expect(g.children![0].width).toBe(64); // node: the minimum, 64 >= 4 * 7 + 24
  });
});

describe('node widths', () => {
  it('are whole steps of NODE_WIDTH_STEP, at least 64 px, never narrower than the name', () => {
    expect(nodeWidth(0)).toBe(64);
    expect(nodeWidth(40)).toBe(64);
    expect(nodeWidth(41)).toBe(80);
    for (const w of [3, 57, 100, 233]) {
      expect(nodeWidth(w) % NODE_WIDTH_STEP).toBe(0);
      expect(nodeWidth(w)).toBeGreaterThanOrEqual(w + 24);
      expect(nodeWidth(w)).toBeLessThanOrEqual(Math.max(64, w + 24 + NODE_WIDTH_STEP - 1));
    }
  });
});

describe('layout cache by shape', () => {
  it('lays a renamed step of the same width out without elkjs, under its new name', async () => {
    const cache = new LayoutCache();
    const first = await layoutGraph(new ELK(), nodes, edges, undefined, { cache });
    // "train" -> "fit" keeps the box width (64 px minimum) and every edge label.
    const renamed = nodes.map(n => (n.id === 'train' ? { id: 'fit', label: 'fit' } : n));
    const renamedEdges = edges.map(e => ({
      ...e,
      source: e.source === 'train' ? 'fit' : e.source,
      target: e.target === 'train' ? 'fit' : e.target,
      reason: e.reason.replace('train', 'fit')
    }));
    const hit = cachedLayout(cache, renamed, renamedEdges);
    expect(hit).toBeDefined();
    const at = (g: typeof first, id: string) => g.nodes.find(n => n.id === id)!;
    expect(at(hit!, 'fit')).toEqual({ ...at(first, 'train'), id: 'fit', label: 'fit' });
    expect(hit!.nodes.map(n => n.id)).toEqual(['load', 'split', 'fit', 'evaluate']);
    const edge = hit!.edges.find(e => e.target === 'fit')!;
    expect(edge.source).toBe('split');
    expect(edge.reason).toBe('fit reads X_train, y_train');
    expect(edge.label?.text).toBe('X_train, y_train');
    expect(edge.points).toEqual(first.edges.find(e => e.target === 'train')!.points);
    expect([hit!.width, hit!.height]).toEqual([first.width, first.height]);
  });

  it('misses when a box, a label or an edge changes', async () => {
    const cache = new LayoutCache();
    await layoutGraph(new ELK(), nodes, edges, undefined, { cache });
    const longer = nodes.map(n => (n.id === 'train' ? { ...n, label: 'train_a_long_model' } : n));
    expect(cachedLayout(cache, longer, edges)).toBeUndefined();
    const moreVars = edges.map((e, i) => (i === 0 ? { ...e, variables: ['df', 'meta'] } : e));
    expect(cachedLayout(cache, nodes, moreVars)).toBeUndefined();
    expect(cachedLayout(cache, nodes, edges.slice(1))).toBeUndefined();
    expect(cachedLayout(cache, nodes, edges)).toBeDefined();
  });

  it('keeps the most recent shapes only', async () => {
    const cache = new LayoutCache(1);
    await layoutGraph(new ELK(), nodes, edges, undefined, { cache });
    await layoutGraph(new ELK(), nodes, edges.slice(1), undefined, { cache });
    expect(cachedLayout(cache, nodes, edges)).toBeUndefined();
    expect(cachedLayout(cache, nodes, edges.slice(1))).toBeDefined();
  });
});

describe('mergeEdges', () => {
  it('draws one arrow per pair of steps, data first, all reasons kept', () => {
    const merged = mergeEdges([
      { source: 'a', target: 'b', kind: 'prev', variables: [], reason: 'prev:a tag' },
      { source: 'a', target: 'b', kind: 'data', variables: ['df'], reason: 'b reads df' },
      { source: 'a', target: 'c', kind: 'state', variables: ['random'], reason: 'seeded' }
    ]);
    expect(merged).toHaveLength(2);
    expect(merged[0]).toEqual({
      source: 'a',
      target: 'b',
      kind: 'data',
      variables: ['df'],
      reason: 'b reads df; prev:a tag'
    });
    expect(merged[1].kind).toBe('state');
  });
});
