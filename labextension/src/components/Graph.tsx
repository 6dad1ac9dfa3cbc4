/**
 * The pipeline graph as SVG: boxes laid out by elkjs (model/layout.ts), edges labelled with the
 * variables they carry, the analysis' reason on hover; clicking a step selects its first cell.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import ELK from 'elkjs/lib/elk.bundled.js';
import * as React from 'react';
import { Edge, Step } from '../api/shapes';
import { LaidOutGraph, Measure, approxMeasure, layoutGraph, mergeEdges } from '../model/layout';

const elk = new ELK();

/**
 * A text measurer in the graph's font, on a canvas. The font is read once per layout: reading
 * computed style for every label forces a style pass over a large notebook's DOM each time.
 */
function makeMeasure(): Measure {
  const ctx = document.createElement('canvas').getContext('2d');
  if (!ctx) {
    return approxMeasure;
  }
  const family =
    getComputedStyle(document.body).getPropertyValue('--jp-ui-font-family') || 'sans-serif';
  ctx.font = `12px ${family}`;
  return text => Math.ceil(ctx.measureText(text).width);
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
  const [graph, setGraph] = React.useState<LaidOutGraph | null>(null);
  // Lay out again only when the graph's shape changes, not on every analysis.
  const key = JSON.stringify([
    steps.map(s => [s.name, s.display_name]),
    edges.map(e => [e.source, e.target, e.kind, e.variables, e.reason])
  ]);
  React.useEffect(() => {
    let live = true;
    layoutGraph(
      elk,
      steps.map(s => ({ id: s.name, label: s.display_name })),
      mergeEdges(edges),
      makeMeasure()
    ).then(
      g => live && setGraph(g),
      err => console.warn('jupyter-pipeline: graph layout failed', err)
    );
    return () => {
      live = false;
    };
  }, [key]);
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
