/**
 * The pipeline graph as SVG: boxes laid out by elkjs (model/layout.ts), edges labelled with the
 * variables they carry, the analysis' reason on hover; clicking a step selects its first cell.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { Edge, Step } from '../api/shapes';
import { mark } from '../model/marks';
import { getElk } from './elk';
import {
  LaidOutGraph,
  LayoutCache,
  Measure,
  approxMeasure,
  cachedLayout,
  layoutGraph,
  mergeEdges
} from '../model/layout';

const cache = new LayoutCache();

/** Text measurers in the graph's fonts: step names (UI font) and edge labels (code font). */
interface Measures {
  node: Measure;
  label: Measure;
}

let measures: Measures | null = null;

/**
 * Canvas measurers, made once: reading the fonts' computed style forces a style pass over a
 * large notebook's DOM, which a layout should not pay each time.
 */
function getMeasures(): Measures {
  if (measures) {
    return measures;
  }
  const ctx = document.createElement('canvas').getContext('2d');
  if (!ctx) {
    return { node: approxMeasure, label: approxMeasure };
  }
  const style = getComputedStyle(document.body);
  const ui = style.getPropertyValue('--jp-ui-font-family') || 'sans-serif';
  const code = style.getPropertyValue('--jp-code-font-family') || 'monospace';
  const measurer = (font: string): Measure => {
    const widths = new Map<string, number>();
    return text => {
      let w = widths.get(text);
      if (w === undefined) {
        if (widths.size > 2000) {
          widths.clear(); // names typed one letter at a time
        }
        ctx.font = font;
        w = Math.ceil(ctx.measureText(text).width);
        widths.set(text, w);
      }
      return w;
    };
  };
  // The fonts and sizes of base.css: `.jp-PipelineGraph svg` and its edge labels.
  measures = { node: measurer(`12px ${ui}`), label: measurer(`11px ${code}`) };
  return measures;
}

export interface GraphProps {
  steps: Step[];
  edges: Edge[];
  colours: Map<string, string>;
  onSelectStep: (step: Step) => void;
  trans: TranslationBundle;
}

export function Graph(props: GraphProps): JSX.Element {
  const { steps, edges, colours, trans } = props;
  // Lay out again only when the graph's shape changes, not on every analysis.
  const key = JSON.stringify([
    steps.map(s => [s.name, s.display_name]),
    edges.map(e => [e.source, e.target, e.kind, e.variables, e.reason])
  ]);
  const input = React.useMemo(
    () => ({
      nodes: steps.map(s => ({ id: s.name, label: s.display_name })),
      edges: mergeEdges(edges)
    }),
    [key]
  );
  // A graph of a shape laid out before (a rename, a new reason) is drawn in this render.
  const cached = React.useMemo(() => {
    const m = getMeasures();
    const g = cachedLayout(cache, input.nodes, input.edges, m.node, m.label);
    if (g) {
      mark('layout:cached');
    }
    return g;
  }, [input]);
  const [laid, setLaid] = React.useState<LaidOutGraph | null>(null);
  // A layout effect: the worker starts laying out before the page paints this render, not
  // after (a frame of a large notebook page can take 100 ms on a loaded machine).
  React.useLayoutEffect(() => {
    if (cached) {
      return;
    }
    let live = true;
    const m = getMeasures();
    mark('layout:start');
    getElk()
      .then(elk =>
        layoutGraph(elk, input.nodes, input.edges, m.node, { measureLabel: m.label, cache })
      )
      .then(
        g => {
          mark('layout:end');
          if (live) {
            setLaid(g);
          }
        },
        err => console.warn('jupyter-pipeline: graph layout failed', err)
      );
    return () => {
      live = false;
    };
  }, [input]);
  // While a new shape is laid out, the previous picture stays.
  const graph = cached ?? laid;
  React.useLayoutEffect(() => {
    if (graph) {
      mark('graph:committed');
    }
  }, [graph]);
  if (!graph) {
    return <div className="jp-PipelineGraph jp-mod-empty">{trans.__('Laying out…')}</div>;
  }
  const byName = new Map(steps.map(s => [s.name, s]));
  return (
    <div
      className="jp-PipelineGraph"
      data-layout-key={key.length}
      aria-label={trans.__('Pipeline graph')}
    >
      <svg
        width="100%"
        viewBox={`0 0 ${graph.width} ${graph.height}`}
        // Natural size when it fits; scaled down (never cut) in a narrow sidebar.
        style={{ maxWidth: graph.width }}
        role="img"
        aria-label={trans.__('Pipeline graph with %1 steps', steps.length)}
      >
        <defs>
          <marker
            id="jp-pipeline-arrow"
            viewBox="0 0 10 10"
            refX="9"
            refY="5"
            markerWidth="7"
            markerHeight="7"
            orient="auto-start-reverse"
          >
            <path d="M 0 0 L 10 5 L 0 10 z" className="jp-PipelineGraph-arrow" />
          </marker>
        </defs>
        {graph.edges.map(e => (
          <g
            key={e.id}
            className={`jp-PipelineGraph-edge jp-mod-${e.kind}`}
            data-source={e.source}
            data-target={e.target}
            data-variables={e.variables.join(',')}
          >
            <title>{e.reason}</title>
            <polyline
              points={e.points.map(p => `${p.x},${p.y}`).join(' ')}
              markerEnd="url(#jp-pipeline-arrow)"
            />
            {e.label && (
              <g className="jp-PipelineGraph-edgeLabel">
                <rect
                  x={e.label.x}
                  y={e.label.y}
                  width={e.label.width}
                  height={e.label.height}
                  rx={3}
                />
                <text x={e.label.x + e.label.width / 2} y={e.label.y + e.label.height / 2}>
                  {e.label.text}
                </text>
              </g>
            )}
          </g>
        ))}
        {graph.nodes.map(n => {
          const step = byName.get(n.id);
          return (
            <g
              key={n.id}
              className="jp-PipelineGraph-node"
              data-step={n.id}
              tabIndex={0}
              role="button"
              aria-label={trans.__('Step %1: select its first cell', n.label)}
              style={
                {
                  '--jp-pipeline-colour': colours.get(n.id) ?? 'var(--jp-border-color1)'
                } as React.CSSProperties
              }
              onClick={() => step && props.onSelectStep(step)}
              onKeyDown={ev => {
                if ((ev.key === 'Enter' || ev.key === ' ') && step) {
                  ev.preventDefault();
                  props.onSelectStep(step);
                }
              }}
            >
              <title>
                {step
                  ? trans.__(
                      '%1 — in: %2; out: %3',
                      n.label,
                      step.inputs.join(', ') || '–',
                      step.outputs.join(', ') || '–'
                    )
                  : n.label}
              </title>
              <rect x={n.x} y={n.y} width={n.width} height={n.height} rx={5} />
              <rect
                className="jp-PipelineGraph-nodeBand"
                x={n.x}
                y={n.y}
                width={6}
                height={n.height}
                rx={2}
              />
              <text x={n.x + n.width / 2 + 3} y={n.y + n.height / 2}>
                {n.label}
              </text>
            </g>
          );
        })}
      </svg>
    </div>
  );
}
