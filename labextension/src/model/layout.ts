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
const NODE_PAD_X = 24;
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

/** The elkjs input graph for `nodes` and `edges` (edges to unknown nodes are dropped). */
export function toElkGraph(
  nodes: readonly GraphNodeInput[],
  edges: readonly GraphEdgeInput[],
  measure: Measure = approxMeasure
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
        ? [{ id: `${edgeId(e)}#label`, text, width: measure(text) + 8, height: LABEL_HEIGHT }]
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
      width: Math.max(60, measure(n.label) + NODE_PAD_X),
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
  return { width: laid.width ?? 0, height: laid.height ?? 0, nodes: outNodes, edges: outEdges };
}

/** Lay out a pipeline graph with elkjs. */
export async function layoutGraph(
  elk: ELK,
  nodes: readonly GraphNodeInput[],
  edges: readonly GraphEdgeInput[],
  measure: Measure = approxMeasure
): Promise<LaidOutGraph> {
  const laid = await elk.layout(toElkGraph(nodes, edges, measure));
  return fromElkGraph(laid, nodes, edges);
}
