/**
 * One run: its state, duration and parameters; the graph coloured by step state; every step
 * with its state as a word, duration (ticking while it runs) and attempts; the failing step's
 * error with "Go to cell"; the selected step's log, executed notebook and saved values ("Load
 * into kernel"); Cancel, Re-run, the merged notebook and the Kubeflow link.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { Edge, Step } from '../api/shapes';
import {
  LogChunk,
  RunInfo,
  StepInfo,
  durationOf,
  firstFailure,
  formatDuration,
  formatSize,
  isFinished
} from '../model/runs';
import { Graph } from './Graph';
import { LogPane } from './LogPane';
import { STATE_COLOURS, StateBadge } from './RunBadge';
import { startLabel } from './RunList';

export interface RunViewProps {
  run: RunInfo;
  now: number;
  trans: TranslationBundle;
  /** The pipeline's graph when the run is of the open notebook (else no picture). */
  graph: { steps: Step[]; edges: Edge[] } | null;
  fetchLog: (step: string, offset: number) => Promise<LogChunk & { finished: boolean }>;
  onBack: () => void;
  onCancel: () => Promise<void>;
  onRerun: () => Promise<void>;
  onGoToCell: (cell: number) => void;
  onOpenStepNotebook: (step: string) => void;
  onOpenMerged: () => void;
  onLoadIntoKernel: (step: string) => void;
  /** Why values cannot be loaded into a kernel now (no notebook open, …), or null. */
  loadDisabledReason: string | null;
}

/** The step whose details show first: a running one, else the failing one, else the last. */
function defaultStep(run: RunInfo): string | null {
  const steps = run.steps ?? [];
  const pick =
    steps.find(s => s.state === 'running') ?? firstFailure(run) ?? steps[steps.length - 1];
  return pick?.name ?? null;
}

function Outputs(props: {
  step: StepInfo;
  run: RunInfo;
  trans: TranslationBundle;
  onLoad: () => void;
  loadDisabledReason: string | null;
}): JSX.Element | null {
  const { step, trans } = props;
  const entries = Object.entries(step.outputs ?? {});
  if (entries.length === 0) {
    return null;
  }
  const loadable =
    (step.state === 'succeeded' || step.state === 'cached') && props.run.backend !== 'kfp';
  const reason = !loadable
    ? props.run.backend === 'kfp'
      ? trans.__('Values of Kubeflow runs are in the cluster’s object store')
      : trans.__('Only a succeeded or cached step has saved values')
    : props.loadDisabledReason;
  return (
    <div className="jp-PipelineOutputs">
      <div className="jp-PipelineOutputs-header">
        <span>{trans.__('Saved values')}</span>
        <button
          type="button"
          className="jp-mod-styled jp-PipelineLoadValues"
          disabled={reason !== null}
          title={
            reason ??
            trans.__(
              'Insert jupyter_pipeline.load_outputs("%1", "%2") in a new cell and run it',
              props.run.id,
              step.name
            )
          }
          onClick={props.onLoad}
        >
          {trans.__('Load into kernel')}
        </button>
      </div>
      <ul className="jp-PipelineOutputs-list">
        {entries.map(([name, info]) => (
          <li key={name} data-name={name}>
            <span className="jp-PipelineOutputs-line">
              <code>{name}</code>
              <span className="jp-PipelineOutputs-size">
                {info.size !== null && info.size !== undefined ? formatSize(info.size) : ''}
              </span>
            </span>
            <span className="jp-PipelineOutputs-type">{info.type ?? ''}</span>
          </li>
        ))}
      </ul>
    </div>
  );
}

export function RunView(props: RunViewProps): JSX.Element {
  const { run, now, trans } = props;
  const steps = run.steps ?? [];
  const [selected, setSelected] = React.useState<string | null>(() => defaultStep(run));
  const [busy, setBusy] = React.useState<string | null>(null);
  // Follow the action while nobody picked a step: the running step, then the failing one.
  const picked = React.useRef(false);
  React.useEffect(() => {
    picked.current = false;
    setSelected(defaultStep(run));
  }, [run.id]);
  const auto = defaultStep(run);
  React.useEffect(() => {
    if (!picked.current && auto !== selected) {
      setSelected(auto);
    }
  }, [auto]);
  const select = (name: string) => {
    picked.current = true;
    setSelected(name);
  };
  const step = steps.find(s => s.name === selected) ?? null;
  const failure = firstFailure(run);
  const finished = isFinished(run.state);
  const act = (name: string, f: () => Promise<void>) => {
    setBusy(name);
    f().finally(() => setBusy(null));
  };
  const colours = new Map(steps.map(s => [s.name, STATE_COLOURS[s.state]]));
  // Steps are shown as tagged (`load_data`), as the graph and the cells show them; the run
  // records their normalized names (`load-data`), which stay the keys.
  const tagged = new Map((props.graph?.steps ?? []).map(s => [s.name, s.display_name]));
  const label = (name: string): string => tagged.get(name) || name;
  // The attempts column only when a step was retried: the step names get its room.
  const retried = steps.some(s => (s.attempts ?? 0) > 1);
  // Logs and executed notebooks of a Kubeflow run stay in the cluster (pod logs, artifacts).
  const kfp = run.backend === 'kfp';
  const params = Object.entries(run.parameters ?? {});
  return (
    <div className="jp-PipelineRunView" data-run={run.id} data-state={run.state}>
      <div className="jp-PipelineRunView-header">
        <button
          type="button"
          className="jp-PipelineRunView-back"
          onClick={props.onBack}
          title={trans.__('Back to the runs')}
          aria-label={trans.__('Back to the runs')}
        >
          ‹ <span className="jp-PipelineRunView-backLabel">{trans.__('Runs')}</span>
        </button>
        <code className="jp-PipelineRunView-id" title={run.id}>
          {run.id}
        </code>
        <StateBadge state={run.state} trans={trans} />
        <span className="jp-PipelineRunView-duration">{formatDuration(durationOf(run, now))}</span>
      </div>
      <div className="jp-PipelineRunView-meta">
        <span>
          {run.backend === 'kfp' ? trans.__('Kubeflow Pipelines') : trans.__('this machine')}
        </span>
        <span>{trans.__('started %1', startLabel(run.created, now))}</span>
        {run.path && (
          <span className="jp-PipelineRunView-notebook" title={run.path}>
            {run.path}
          </span>
        )}
      </div>
      {params.length > 0 && (
        <div className="jp-PipelineRunParams">
          {params.map(([k, v]) => (
            <code key={k}>
              {k}={JSON.stringify(v)}
            </code>
          ))}
        </div>
      )}
      <div className="jp-PipelineRunView-actions">
        {!finished && (
          <button
            type="button"
            className="jp-mod-styled jp-mod-warn jp-PipelineCancel"
            disabled={busy === 'cancel'}
            onClick={() => act('cancel', props.onCancel)}
          >
            {busy === 'cancel' ? trans.__('Cancelling…') : trans.__('Cancel')}
          </button>
        )}
        <button
          type="button"
          className="jp-mod-styled jp-PipelineRerun"
          disabled={busy === 'rerun'}
          onClick={() => act('rerun', props.onRerun)}
          title={trans.__('Run the same notebook again with the same parameters')}
        >
          {trans.__('Re-run')}
        </button>
        {!kfp && (
          <button
            type="button"
            className="jp-mod-styled jp-PipelineOpenMerged"
            disabled={!run.has_merged_notebook && !steps.some(s => s.has_notebook)}
            onClick={props.onOpenMerged}
            title={trans.__(
              'Open the notebook with every cell’s outputs from this run (read-only)'
            )}
          >
            {trans.__('Open merged notebook')}
          </button>
        )}
        {run.url && (
          <a
            className="jp-PipelineKfpLink"
            href={run.url}
            target="_blank"
            rel="noopener noreferrer"
          >
            {trans.__('Open in Kubeflow')} ↗
          </a>
        )}
      </div>
      {(failure || (run.error && run.state !== 'succeeded')) && (
        <div className="jp-PipelineError jp-PipelineRunError" role="alert">
          <div>
            {failure
              ? (failure.error ?? trans.__('Step %1 failed', label(failure.name)))
              : run.error}
          </div>
          {failure && failure.error_cell !== null && failure.error_cell !== undefined && (
            <button
              type="button"
              className="jp-mod-styled jp-PipelineGoToCell"
              onClick={() => props.onGoToCell(failure.error_cell as number)}
            >
              {trans.__('Go to cell')}
            </button>
          )}
        </div>
      )}
      {props.graph && (
        <div className="jp-PipelineRunGraph">
          <Graph
            steps={props.graph.steps}
            edges={props.graph.edges}
            colours={colours}
            trans={trans}
            onSelectStep={s => select(s.name)}
          />
        </div>
      )}
      <table className="jp-PipelineRunSteps">
        <thead>
          <tr>
            <th className="jp-PipelineRunSteps-name">{trans.__('step')}</th>
            <th className="jp-PipelineRunSteps-state">{trans.__('state')}</th>
            <th className="jp-PipelineRunSteps-duration">{trans.__('duration')}</th>
            {retried && (
              <th className="jp-PipelineRunSteps-attempts" title={trans.__('attempts')}>
                #
              </th>
            )}
          </tr>
        </thead>
        <tbody>
          {steps.map(s => (
            <tr
              key={s.name}
              data-step={s.name}
              data-state={s.state}
              className={s.name === selected ? 'jp-mod-selected' : ''}
              onClick={() => select(s.name)}
              tabIndex={0}
              onKeyDown={e => {
                if (e.key === 'Enter' || e.key === ' ') {
                  e.preventDefault();
                  select(s.name);
                }
              }}
            >
              <td className="jp-PipelineRunSteps-name" title={label(s.name)}>
                {label(s.name)}
              </td>
              <td>
                <StateBadge state={s.state} trans={trans} />
              </td>
              <td className="jp-PipelineRunSteps-duration">
                {s.state === 'cached' ? '' : formatDuration(durationOf(s, now))}
              </td>
              {retried && (
                <td className="jp-PipelineRunSteps-attempts">
                  {(s.attempts ?? 0) > 1 ? s.attempts : ''}
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {step && (
        <div className="jp-PipelineStepDetail" data-step={step.name}>
          <div className="jp-PipelineStepDetail-actions">
            {!kfp && (
              <button
                type="button"
                className="jp-mod-styled jp-PipelineOpenStep"
                disabled={!step.has_notebook}
                onClick={() => props.onOpenStepNotebook(step.name)}
                title={trans.__(
                  'Open the executed notebook of step %1 (read-only)',
                  label(step.name)
                )}
              >
                {trans.__('Open executed notebook')}
              </button>
            )}
            {step.state === 'failed' &&
              step.error_cell !== null &&
              step.error_cell !== undefined && (
                <button
                  type="button"
                  className="jp-mod-styled"
                  onClick={() => props.onGoToCell(step.error_cell as number)}
                >
                  {trans.__('Go to cell')}
                </button>
              )}
          </div>
          <Outputs
            step={step}
            run={run}
            trans={trans}
            onLoad={() => props.onLoadIntoKernel(step.name)}
            loadDisabledReason={props.loadDisabledReason}
          />
          {kfp ? (
            <p className="jp-PipelineEmpty jp-PipelineKfpLogs">
              {trans.__(
                'Step %1 runs in a pod of the cluster: its log and executed notebook are in the Kubeflow UI.',
                label(step.name)
              )}{' '}
              {run.url && (
                <a
                  className="jp-PipelineKfpLink"
                  href={run.url}
                  target="_blank"
                  rel="noopener noreferrer"
                >
                  {trans.__('Open in Kubeflow')} ↗
                </a>
              )}
            </p>
          ) : step.state !== 'queued' && step.state !== 'skipped' && step.state !== 'cached' ? (
            <LogPane
              key={`${run.id}/${step.name}`}
              runId={run.id}
              step={step.name}
              label={label(step.name)}
              state={step.state}
              fetchLog={offset => props.fetchLog(step.name, offset)}
              trans={trans}
            />
          ) : (
            <p className="jp-PipelineEmpty">
              {step.state === 'cached'
                ? trans.__('Cached: its results came from an earlier run.')
                : step.state === 'skipped'
                  ? trans.__('Skipped: a step it needs did not succeed.')
                  : trans.__('Waiting for the steps it needs.')}
            </p>
          )}
        </div>
      )}
    </div>
  );
}
