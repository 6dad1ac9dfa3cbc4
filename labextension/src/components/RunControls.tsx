/**
 * The Run bar: target (from `GET info`), Run options (no cache, max parallel) and the Run
 * button. The parameters come from part 1's form (the pipeline model holds their values).
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';

export interface RunOptions {
  target: string;
  noCache: boolean;
  maxParallel: number;
}

export interface RunControlsProps {
  targets: string[];
  options: RunOptions;
  onOptions: (options: RunOptions) => void;
  onRun: () => void;
  /** Why Run cannot be pressed now (no notebook, errors, starting), or null. */
  disabledReason: string | null;
  starting: boolean;
  /** Parameter values that differ from the defaults, shown so nobody runs them unknowingly. */
  parameters: Record<string, unknown>;
  trans: TranslationBundle;
}

export function RunControls(props: RunControlsProps): JSX.Element {
  const { options, trans } = props;
  const [open, setOpen] = React.useState(false);
  const set = (patch: Partial<RunOptions>) => props.onOptions({ ...options, ...patch });
  const params = Object.entries(props.parameters);
  return (
    <div className="jp-PipelineRunControls">
      <div className="jp-PipelineRunControls-row">
        <button
          type="button"
          className="jp-mod-styled jp-mod-accept jp-PipelineRunButton"
          onClick={props.onRun}
          disabled={props.disabledReason !== null}
          title={props.disabledReason ?? trans.__('Run this notebook as a pipeline')}
        >
          {props.starting ? trans.__('Starting…') : trans.__('Run')}
        </button>
        <label className="jp-PipelineRunTarget">
          {trans.__('on')}
          <select
            className="jp-mod-styled"
            value={options.target}
            onChange={e => set({ target: e.target.value })}
            aria-label={trans.__('Target')}
          >
            {props.targets.map(t => (
              <option key={t} value={t}>
                {t === 'kfp' ? trans.__('Kubeflow Pipelines') : trans.__('this machine')}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          className="jp-PipelineRunOptions-toggle"
          aria-expanded={open}
          onClick={() => setOpen(!open)}
        >
          {trans.__('Options')} {open ? '▾' : '▸'}
        </button>
      </div>
      {open && (
        <div className="jp-PipelineRunOptions">
          <label>
            <input
              type="checkbox"
              checked={options.noCache}
              onChange={e => set({ noCache: e.target.checked })}
            />
            {trans.__('No cache (run every step again)')}
          </label>
          <label>
            {trans.__('Max parallel steps')}
            <input
              type="number"
              className="jp-mod-styled"
              min={1}
              max={64}
              value={options.maxParallel}
              disabled={options.target !== 'local'}
              onChange={e => set({ maxParallel: Math.max(1, parseInt(e.target.value, 10) || 1) })}
            />
          </label>
        </div>
      )}
      {params.length > 0 && (
        <div className="jp-PipelineRunParams" title={trans.__('Set in the Parameters section')}>
          {trans.__('with')}{' '}
          {params.map(([k, v]) => (
            <code key={k}>
              {k}={JSON.stringify(v)}
            </code>
          ))}
        </div>
      )}
    </div>
  );
}
