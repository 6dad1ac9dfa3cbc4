/**
 * Graph layout adapter: pipeline steps and edges -> an elkjs graph -> positioned boxes, polylines
 * and label boxes that the SVG view draws as they are. elkjs does the layout (layered, top-down);
 * this module only translates, so it is pure and tested under Node with the real elkjs.
 */
import type { ELK, ElkExtendedEdge, ElkNode } from 'elkjs/lib/elk-api';

/** A step as the graph shows it. */
export interface GraphNodeInput {
  id: string;
  label: string;
}

/** A dependency as the graph shows it. */
export interface GraphEdgeInput {
  source: string;
  target: string;
  kind: string;
  variables: string[];
  reason: string;
}

export interface Point {
  x: number;
  y: number;
}

export interface LaidOutNode {
  id: string;
  label: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface LaidOutEdge {
  id: string;
  source: string;
  target: string;
  kind: string;
  reason: string;
  variables: string[];
  /** Polyline from the source's border to the target's border. */
  points: Point[];
  /** The label text and its box (top-left corner), if the edge has one. */
  label?: { text: string; x: number; y: number; width: number; height: number };
}

export interface LaidOutGraph {
  width: number;
  height: number;
  nodes: LaidOutNode[];
  edges: LaidOutEdge[];
}

/** Measures a text's width in pixels (the browser passes a canvas measurer; tests a fixed one). */
export type Measure = (text: string) => number;

export const NODE_HEIGHT = 28;
export const LABEL_HEIGHT = 16;
/** Space kept around the drawing: nothing (box, label, arrow) touches the picture's edge. */
export const MARGIN = 8;
const NODE_PAD_X = 24;
/**
 * Box widths are whole multiples of this: a step renamed to a name of about the same length
 * keeps its box, so the picture does not shift and its layout comes from the cache by shape.
 */
export const NODE_WIDTH_STEP = 16;
const NODE_MIN_WIDTH = 64;

/** The width of a step's box for a name `textWidth` pixels wide. */
export function nodeWidth(textWidth: number): number {
  const w = Math.ceil((textWidth + NODE_PAD_X) / NODE_WIDTH_STEP) * NODE_WIDTH_STEP;
  return Math.max(NODE_MIN_WIDTH, w);
}
const MAX_LABEL_VARS = 3;

/** Default measure: a fixed advance per character (close enough for 12px UI fonts). */
export const approxMeasure: Measure = text => text.length * 7;

/**
 * The label an edge shows: its variables (the first three, then "+N"), or its kind when it
 * carries no variables (`prev`, random state, a file).
 */
export function edgeLabel(edge: GraphEdgeInput): string {
  if (edge.variables.length === 0) {
    return edge.kind === 'data' ? '' : edge.kind;
  }
  const shown = edge.variables.slice(0, MAX_LABEL_VARS).join(', ');
  const more = edge.variables.length - MAX_LABEL_VARS;
  return more > 0 ? `${shown} +${more}` : shown;
}

/**
 * One edge per pair of steps: the analysis may report a data edge and a `prev:` edge (or a state
 * edge) between the same two steps; the picture draws one arrow with every variable on it and
 * every reason in its tooltip. Its kind is `data` when any of them carries data.
 */
export function mergeEdges(edges: readonly GraphEdgeInput[]): GraphEdgeInput[] {
  const byPair = new Map<string, GraphEdgeInput>();
  for (const e of edges) {
    const key = `${e.source}\u0000${e.target}`;
    const seen = byPair.get(key);
    if (!seen) {
      byPair.set(key, { ...e, variables: [...e.variables] });
      continue;
    }
    const data = seen.kind === 'data' || e.kind === 'data';
    byPair.set(key, {
      source: e.source,
      target: e.target,
      kind: data ? 'data' : seen.kind,
      variables: [...seen.variables, ...e.variables.filter(v => !seen.variables.includes(v))],
      reason: e.kind === 'data' ? `${e.reason}; ${seen.reason}` : `${seen.reason}; ${e.reason}`
    });
  }
  return [...byPair.values()];
}

/** Stable edge id (one edge per source/target/kind in the analysis). */
export function edgeId(edge: GraphEdgeInput): string {
  return `${edge.source}->${edge.target}:${edge.kind}`;
}

/**
 * The elkjs input graph for `nodes` and `edges` (edges to unknown nodes are dropped). `measure`
 * sizes the step names, `measureLabel` the edge labels (drawn in another font).
 */
export function toElkGraph(
  nodes: readonly GraphNodeInput[],
  edges: readonly GraphEdgeInput[],
  measure: Measure = approxMeasure,
  measureLabel: Measure = measure
): ElkNode {
  const known = new Set(nodes.map(n => n.id));
  const elkEdges: ElkExtendedEdge[] = [];
  for (const e of edges) {
    if (!known.has(e.source) || !known.has(e.target) || e.source === e.target) {
      continue;
    }
    const text = edgeLabel(e);
    elkEdges.push({
      id: edgeId(e),
      sources: [e.source],
      targets: [e.target],
      labels: text
        ? [
            {
              id: `${edgeId(e)}#label`,
              text,
              width: measureLabel(text) + 8,
              height: LABEL_HEIGHT
            }
          ]
        : []
    });
  }
  return {
    id: 'root',
    layoutOptions: {
      'elk.algorithm': 'layered',
      'elk.direction': 'DOWN',
      'elk.edgeRouting': 'POLYLINE',
      'elk.edgeLabels.placement': 'CENTER',
      'elk.layered.spacing.nodeNodeBetweenLayers': '36',
      'elk.layered.spacing.edgeNodeBetweenLayers': '12',
      'elk.spacing.nodeNode': '24',
      'elk.spacing.edgeLabel': '2',
      'elk.padding': '[top=8,left=8,bottom=8,right=8]',
      // Keep notebook order among siblings, so the picture reads like the notebook.
      'elk.layered.considerModelOrder.strategy': 'NODES_AND_EDGES'
    },
    children: nodes.map(n => ({
      id: n.id,
      width: nodeWidth(measure(n.label)),
      height: NODE_HEIGHT
    })),
    edges: elkEdges
  };
}

/** Read elkjs' result back into plain positioned shapes. */
export function fromElkGraph(
  laid: ElkNode,
  nodes: readonly GraphNodeInput[],
  edges: readonly GraphEdgeInput[]
): LaidOutGraph {
  const labels = new Map(nodes.map(n => [n.id, n.label]));
  const byId = new Map(edges.map(e => [edgeId(e), e]));
  const outNodes: LaidOutNode[] = (laid.children ?? []).map(c => ({
    id: c.id,
    label: labels.get(c.id) ?? c.id,
    x: c.x ?? 0,
    y: c.y ?? 0,
    width: c.width ?? 0,
    height: c.height ?? 0
  }));
  const outEdges: LaidOutEdge[] = [];
  for (const e of (laid.edges ?? []) as ElkExtendedEdge[]) {
    const src = byId.get(e.id);
    if (!src) {
      continue;
    }
    const points: Point[] = [];
    for (const s of e.sections ?? []) {
      points.push(s.startPoint, ...(s.bendPoints ?? []), s.endPoint);
    }
    const l = e.labels?.[0];
    outEdges.push({
      id: e.id,
      source: src.source,
      target: src.target,
      kind: src.kind,
      reason: src.reason,
      variables: src.variables,
      points: points.map(p => ({ x: p.x, y: p.y })),
      label:
        l && l.text
          ? { text: l.text, x: l.x ?? 0, y: l.y ?? 0, width: l.width ?? 0, height: l.height ?? 0 }
          : undefined
    });
  }
  return withMargins({ width: 0, height: 0, nodes: outNodes, edges: outEdges });
}

/**
 * `graph` moved so that the bounding box of everything drawn (boxes, edge points, labels) starts
 * at `MARGIN`, and sized to that box plus `MARGIN` on every side. elkjs' own graph size leaves
 * edge labels beside a vertical edge hanging over its padding, so a wide label touched the
 * sidebar's edge.
 */
export function withMargins(graph: LaidOutGraph): LaidOutGraph {
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  const box = (x: number, y: number, w = 0, h = 0) => {
    minX = Math.min(minX, x);
    minY = Math.min(minY, y);
    maxX = Math.max(maxX, x + w);
    maxY = Math.max(maxY, y + h);
  };
  for (const n of graph.nodes) {
    box(n.x, n.y, n.width, n.height);
  }
  for (const e of graph.edges) {
    e.points.forEach(p => box(p.x, p.y));
    if (e.label) {
      box(e.label.x, e.label.y, e.label.width, e.label.height);
    }
  }
  if (minX === Infinity) {
    return { ...graph, width: 2 * MARGIN, height: 2 * MARGIN };
  }
  const dx = MARGIN - minX;
  const dy = MARGIN - minY;
  return {
    width: Math.ceil(maxX - minX + 2 * MARGIN),
    height: Math.ceil(maxY - minY + 2 * MARGIN),
    nodes: graph.nodes.map(n => ({ ...n, x: n.x + dx, y: n.y + dy })),
    edges: graph.edges.map(e => ({
      ...e,
      points: e.points.map(p => ({ x: p.x + dx, y: p.y + dy })),
      label: e.label ? { ...e.label, x: e.label.x + dx, y: e.label.y + dy } : undefined
    }))
  };
}

/**
 * The shape of an elkjs input graph: what its layout depends on (box and label sizes, edges
 * between positions, in order), not what the boxes are called. Renaming a step to a name of
 * the same width, or an analysis that changes only an edge's reason, keeps the shape.
 */
export function shapeKey(graph: ElkNode): string {
  const index = new Map((graph.children ?? []).map((c, i) => [c.id, i]));
  return JSON.stringify([
    (graph.children ?? []).map(c => [c.width, c.height]),
    ((graph.edges ?? []) as ElkExtendedEdge[]).map(e => [
      index.get(e.sources[0]),
      index.get(e.targets[0]),
      (e.labels ?? []).map(l => [l.width, l.height])
    ])
  ]);
}

/**
 * `laid` (elkjs' layout of a graph of the same shape as `input`) with `input`'s ids and label
 * texts: the layout of `input` without running elkjs again.
 */
export function relabel(laid: ElkNode, input: ElkNode): ElkNode {
  const children = input.children ?? [];
  const edges = (input.edges ?? []) as ElkExtendedEdge[];
  return {
    ...laid,
    children: (laid.children ?? []).map((c, i) => ({ ...c, id: children[i].id })),
    edges: ((laid.edges ?? []) as ElkExtendedEdge[]).map((e, i) => ({
      ...e,
      id: edges[i].id,
      sources: edges[i].sources,
      targets: edges[i].targets,
      labels: (e.labels ?? []).map((l, j) => ({ ...l, ...edges[i].labels?.[j] }))
    }))
  };
}

/** Recent layouts by shape (a few: a notebook's graph goes back and forth between shapes). */
export class LayoutCache {
  constructor(private _size = 16) {}

  /** The layout of `input` if a graph of its shape was laid out, relabelled for it. */
  get(input: ElkNode): ElkNode | undefined {
    const key = shapeKey(input);
    const laid = this._laid.get(key);
    if (laid === undefined) {
      return undefined;
    }
    this._laid.delete(key); // most recently used last
    this._laid.set(key, laid);
    return relabel(laid, input);
  }

  set(input: ElkNode, laid: ElkNode): void {
    const key = shapeKey(input);
    this._laid.delete(key);
    this._laid.set(key, laid);
    while (this._laid.size > this._size) {
      this._laid.delete(this._laid.keys().next().value as string);
    }
  }

  private _laid = new Map<string, ElkNode>();
}

/** The layout of the graph from `cache`, if one of its shape is there (synchronous). */
export function cachedLayout(
  cache: LayoutCache,
  nodes: readonly GraphNodeInput[],
  edges: readonly GraphEdgeInput[],
  measure: Measure = approxMeasure,
  measureLabel: Measure = measure
): LaidOutGraph | undefined {
  const laid = cache.get(toElkGraph(nodes, edges, measure, measureLabel));
  return laid && fromElkGraph(laid, nodes, edges);
}

/** Lay out a pipeline graph with elkjs (or take the layout of its shape from `cache`). */
export async function layoutGraph(
  elk: ELK,
  nodes: readonly GraphNodeInput[],
  edges: readonly GraphEdgeInput[],
  measure: Measure = approxMeasure,
  options: { measureLabel?: Measure; cache?: LayoutCache } = {}
): Promise<LaidOutGraph> {
  const input = toElkGraph(nodes, edges, measure, options.measureLabel);
  let laid = options.cache?.get(input);
  if (!laid) {
    laid = await elk.layout(input);
    options.cache?.set(input, laid);
  }
  return fromElkGraph(laid, nodes, edges);
}
