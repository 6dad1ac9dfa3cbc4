/**
 * The Pipeline sidebar's content for one notebook: status and actions, the untagged hint, the
 * graph, the steps with their inputs/outputs and what a run would do, the diagnostics, and the
 * parameters form. It renders what the analysis says; its only writes are cell tags (through
 * the callbacks) and the parameter values it keeps on the model.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { Diagnostic, Parameter, PlanEntry, SplitMode, Step } from '../api/shapes';
import { NotebookPipeline } from '../model/pipeline';
import { Graph } from './Graph';

export interface PipelineViewProps {
  pipeline: NotebookPipeline;
  /** Notebook has any step tags (else the untagged hint shows). */
  tagged: boolean;
  trans: TranslationBundle;
  onSelectCell: (index: number) => void;
  onCompile: () => void;
  onTagSelection: () => void;
}

const GLYPH: Record<string, string> = { error: '✖', warning: '⚠', info: 'ℹ' };

function Section(props: {
  title: string;
  count?: number;
  children: React.ReactNode;
  className?: string;
}) {
  return (
    <section className={`jp-PipelineSection ${props.className ?? ''}`}>
      <h3 className="jp-PipelineSection-title">
        {props.title}
        {props.count !== undefined && (
          <span className="jp-PipelineSection-count">{props.count}</span>
        )}
      </h3>
      {props.children}
    </section>
  );
}

// Cells are numbered as the engine numbers them everywhere (the CLI, REST answers and the
// messages shown here): by their index in the .ipynb, so "cell 3" means the same cell in
// the sidebar, in a diagnostic's text and in `jupyter-pipeline analyze`.
function cellRange(step: Step, trans: TranslationBundle): string {
  const first = step.cells[0];
  const last = step.cells[step.cells.length - 1];
  if (first === undefined) {
    return '';
  }
  return first === last ? trans.__('cell %1', first) : trans.__('cells %1–%2', first, last);
}

export function StepList(props: {
  steps: Step[];
  plan: Map<string, PlanEntry>;
  colours: Map<string, string>;
  trans: TranslationBundle;
  onSelectCell: (index: number) => void;
  firstCodeCell: (step: Step) => number | undefined;
}): JSX.Element {
  const { trans } = props;
  return (
    <ul className="jp-PipelineSteps">
      {props.steps.map(step => {
        const plan = props.plan.get(step.name);
        const firstCode = props.firstCodeCell(step);
        return (
          <li
            key={step.name}
            className="jp-PipelineStep"
            data-step={step.name}
            style={{ '--jp-pipeline-colour': props.colours.get(step.name) } as React.CSSProperties}
          >
            <button
              type="button"
              className="jp-PipelineStep-name"
              title={trans.__('Select the first cell of step %1', step.display_name)}
              onClick={() => firstCode !== undefined && props.onSelectCell(firstCode)}
            >
              <span className="jp-PipelineStep-swatch" />
              {step.display_name}
              {step.role === 'metrics' && (
                <span className="jp-PipelineStep-role">{trans.__('metrics')}</span>
              )}
            </button>
            <span className="jp-PipelineStep-cells">{cellRange(step, trans)}</span>
            {plan && (
              <span
                className={`jp-PipelinePlan jp-mod-${plan.action === 'cached' ? 'cached' : 'run'}`}
                title={plan.reason}
              >
                {plan.action === 'cached' ? trans.__('cached') : trans.__('will run')}
                <span className="jp-PipelinePlan-reason">— {plan.reason}</span>
              </span>
            )}
            <div className="jp-PipelineStep-io">
              {step.inputs.length > 0 && (
                <div>
                  <span className="jp-PipelineStep-ioLabel">{trans.__('in')}</span>
                  {step.inputs.map(v => (
                    <code
                      key={v}
                      title={
                        step.input_sources?.[v]
                          ? trans.__('from %1', step.input_sources[v])
                          : undefined
                      }
                    >
                      {v}
                    </code>
                  ))}
                </div>
              )}
              {step.outputs.length > 0 && (
                <div>
                  <span className="jp-PipelineStep-ioLabel">{trans.__('out')}</span>
                  {step.outputs.map(v => (
                    <code key={v}>{v}</code>
                  ))}
                </div>
              )}
            </div>
          </li>
        );
      })}
    </ul>
  );
}

export function DiagnosticList(props: {
  diagnostics: Diagnostic[];
  trans: TranslationBundle;
  onSelectCell: (index: number) => void;
}): JSX.Element {
  const { trans } = props;
  return (
    <ul className="jp-PipelineDiagnostics">
      {props.diagnostics.map((d, i) => {
        const where =
          d.cell !== null && d.cell !== undefined
            ? d.line
              ? trans.__('cell %1, line %2', d.cell, d.line)
              : trans.__('cell %1', d.cell)
            : '';
        return (
          <li key={i} className={`jp-PipelineDiagnostic jp-mod-${d.severity}`} data-code={d.code}>
            <button
              type="button"
              disabled={d.cell === null || d.cell === undefined}
              onClick={() => d.cell !== null && d.cell !== undefined && props.onSelectCell(d.cell)}
              title={where ? trans.__('Select %1', where) : undefined}
            >
              <span className="jp-PipelineDiagnostic-icon" aria-label={d.severity}>
                {GLYPH[d.severity]}
              </span>
              <span className="jp-PipelineDiagnostic-code">{d.code}</span>
              {where && <span className="jp-PipelineDiagnostic-cell">{where}</span>}
              <span className="jp-PipelineDiagnostic-message">{d.message}</span>
            </button>
          </li>
        );
      })}
    </ul>
  );
}

/** Parse a form string into a value of the parameter's type; undefined when it does not parse. */
export function parseParameter(
  param: Parameter,
  text: string
): { value?: unknown; error?: string } {
  switch (param.type) {
    case 'int':
      return /^[-+]?\d+$/.test(text.trim())
        ? { value: parseInt(text, 10) }
        : { error: 'an integer' };
    case 'float': {
      const v = Number(text);
      return text.trim() !== '' && Number.isFinite(v) ? { value: v } : { error: 'a number' };
    }
    case 'bool':
      return { value: text === 'true' };
    case 'list':
    case 'dict':
      try {
        const v = JSON.parse(text);
        const ok =
          param.type === 'list'
            ? Array.isArray(v)
            : v !== null && typeof v === 'object' && !Array.isArray(v);
        return ok
          ? { value: v }
          : { error: param.type === 'list' ? 'a JSON list' : 'a JSON object' };
      } catch {
        return { error: param.type === 'list' ? 'a JSON list' : 'a JSON object' };
      }
    default:
      return { value: text };
  }
}

function display(value: unknown, type: string): string {
  if (type === 'list' || type === 'dict') {
    return JSON.stringify(value);
  }
  return value === null || value === undefined ? '' : String(value);
}

export function ParametersForm(props: {
  pipeline: NotebookPipeline;
  params: Parameter[];
  trans: TranslationBundle;
}): JSX.Element {
  const { pipeline, trans } = props;
  const values = pipeline.parameterValues;
  const [drafts, setDrafts] = React.useState<Record<string, string>>({});
  const [errors, setErrors] = React.useState<Record<string, string>>({});
  return (
    <form className="jp-PipelineParameters" onSubmit={e => e.preventDefault()}>
      {props.params.map(p => {
        const id = `jp-pipeline-param-${p.name}`;
        const current = p.name in values ? values[p.name] : p.default;
        const text = drafts[p.name] ?? display(current, p.type);
        const changed = p.name in values;
        const update = (t: string) => {
          setDrafts({ ...drafts, [p.name]: t });
          const parsed = parseParameter(p, t);
          setErrors({
            ...errors,
            [p.name]: parsed.error ? trans.__('expects %1', parsed.error) : ''
          });
          if (!parsed.error) {
            const same = JSON.stringify(parsed.value) === JSON.stringify(p.default);
            pipeline.setParameterValue(p, same ? undefined : parsed.value);
          }
        };
        return (
          <div key={p.name} className="jp-PipelineParameter" data-name={p.name}>
            <label htmlFor={id}>
              <code>{p.name}</code>
              <span className="jp-PipelineParameter-type">{p.type}</span>
            </label>
            {p.type === 'bool' ? (
              <input
                id={id}
                type="checkbox"
                checked={text === 'true'}
                onChange={e => update(String(e.target.checked))}
              />
            ) : (
              <input
                id={id}
                className="jp-mod-styled"
                type={p.type === 'int' || p.type === 'float' ? 'number' : 'text'}
                step={p.type === 'float' ? 'any' : undefined}
                value={text}
                aria-invalid={!!errors[p.name]}
                onChange={e => update(e.target.value)}
              />
            )}
            {changed && (
              <button
                type="button"
                className="jp-PipelineParameter-reset"
                title={trans.__('Back to the default, %1', display(p.default, p.type))}
                onClick={() => {
                  const rest = { ...drafts };
                  delete rest[p.name];
                  setDrafts(rest);
                  setErrors({ ...errors, [p.name]: '' });
                  pipeline.setParameterValue(p, undefined);
                }}
              >
                ↺
              </button>
            )}
            {errors[p.name] && <span className="jp-PipelineParameter-error">{errors[p.name]}</span>}
          </div>
        );
      })}
    </form>
  );
}

export function PipelineView(props: PipelineViewProps): JSX.Element {
  const { pipeline, trans } = props;
  const result = pipeline.result;
  const error = pipeline.error;
  const p = result?.pipeline;
  const plan = new Map((result?.plan ?? []).map(e => [e.step, e]));
  const counts = { error: 0, warning: 0, info: 0 } as Record<string, number>;
  for (const d of p?.diagnostics ?? []) {
    counts[d.severity]++;
  }
  const status =
    pipeline.state === 'analyzing'
      ? trans.__('analyzing…')
      : pipeline.state === 'ready' && p
        ? trans._n(
            '%1 step · %2 ms',
            '%1 steps · %2 ms',
            p.steps.length,
            Math.round(pipeline.lastDuration)
          )
        : '';
  return (
    <div className="jp-PipelineView" data-state={pipeline.state}>
      <div className="jp-PipelineToolbar">
        <label className="jp-PipelineSplit">
          {trans.__('Split by')}
          <select
            className="jp-mod-styled"
            value={pipeline.split}
            onChange={e => (pipeline.split = e.target.value as SplitMode)}
          >
            <option value="tags">{trans.__('tags')}</option>
            <option value="headings">{trans.__('headings')}</option>
            <option value="cells">{trans.__('cells')}</option>
          </select>
        </label>
        <button
          type="button"
          className="jp-mod-styled jp-PipelineCompile"
          onClick={props.onCompile}
          disabled={!p || counts.error > 0}
          title={
            counts.error > 0
              ? trans.__('Fix the errors below first')
              : trans.__('Download the Kubeflow Pipelines YAML of this notebook')
          }
        >
          {trans.__('Compile for Kubeflow')}
        </button>
        <span className="jp-PipelineStatus" aria-live="polite">
          {status}
        </span>
      </div>
      {error && (
        <div className={`jp-PipelineError jp-mod-${error.code}`} role="alert">
          {error.message}
        </div>
      )}
      {p && !props.tagged && pipeline.split === 'tags' && (
        <div className="jp-PipelineHint">
          {trans.__(
            'This notebook has no step tags, so it runs as one step. To split it, click a cell’s badge and make it a step, select cells and use “Tag as new step”, or split by headings or cells above.'
          )}
          <button type="button" className="jp-mod-styled" onClick={props.onTagSelection}>
            {trans.__('Tag selected cells as a new step')}
          </button>
        </div>
      )}
      {p && (
        <>
          <Section title={trans.__('Graph')} className="jp-PipelineSection-graph">
            <Graph
              steps={p.steps}
              edges={p.edges}
              colours={pipeline.colours}
              trans={trans}
              onSelectStep={s => {
                const i = pipeline.firstCodeCell(s);
                if (i !== undefined) {
                  props.onSelectCell(i);
                }
              }}
            />
          </Section>
          <Section title={trans.__('Steps')} count={p.steps.length}>
            <StepList
              steps={p.steps}
              plan={plan}
              colours={pipeline.colours}
              trans={trans}
              onSelectCell={props.onSelectCell}
              firstCodeCell={s => pipeline.firstCodeCell(s)}
            />
          </Section>
          <Section title={trans.__('Diagnostics')} count={p.diagnostics.length}>
            {p.diagnostics.length ? (
              <DiagnosticList
                diagnostics={p.diagnostics}
                trans={trans}
                onSelectCell={props.onSelectCell}
              />
            ) : (
              <p className="jp-PipelineEmpty">{trans.__('No problems found.')}</p>
            )}
          </Section>
          <Section title={trans.__('Parameters')} count={p.parameters.length}>
            {p.parameters.length ? (
              <ParametersForm pipeline={pipeline} params={p.parameters} trans={trans} />
            ) : (
              <p className="jp-PipelineEmpty">
                {trans.__(
                  'No parameters. Tag a cell of literal assignments “pipeline-parameters” to add some.'
                )}
              </p>
            )}
          </Section>
        </>
      )}
      {!p && !error && <p className="jp-PipelineEmpty">{trans.__('Analyzing the notebook…')}</p>}
    </div>
  );
}
