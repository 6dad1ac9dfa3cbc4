import ELK from 'elkjs/lib/elk.bundled.js';
import { edgeLabel, layoutGraph, mergeEdges, toElkGraph } from '../src/model/layout';

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
