/**
 * The role editor: a cell's role (step with a name, or imports/functions/parameters/metrics/skip,
 * or none), the steps it runs after (`prev:`) and the step's settings. A controlled form; the
 * dialog that holds it (widgets/roleDialog.tsx) turns its value into tags.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { CellRole, RoleKind, ROLE_KINDS, isValidStepName } from '../model/tags';

export interface RoleEditorProps {
  value: CellRole;
  onChange: (value: CellRole) => void;
  /** Step names tagged in the notebook (completion for the name). */
  steps: string[];
  /** Steps above this cell (the possible `prev:` targets). */
  earlier: string[];
  /** The GPU limit's resource key (`nvidia.com/gpu` unless the cell already uses another). */
  gpuKey: string;
  trans: TranslationBundle;
}

function roleLabel(kind: RoleKind, trans: TranslationBundle): string {
  switch (kind) {
    case 'none':
      return trans.__('No tag (continues the cells above)');
    case 'step':
      return trans.__('Step');
    case 'imports':
      return trans.__('Imports (run at the start of every step)');
    case 'functions':
      return trans.__('Functions (run at the start of every step)');
    case 'parameters':
      return trans.__('Pipeline parameters');
    case 'metrics':
      return trans.__('Pipeline metrics');
    case 'skip':
      return trans.__('Skip (left out of the pipeline)');
  }
}

export function RoleEditor(props: RoleEditorProps): JSX.Element {
  const { value, onChange, trans } = props;
  const set = (patch: Partial<CellRole>) => onChange({ ...value, ...patch });
  const setLimit = (key: string, v: string) =>
    set({ limits: { ...value.limits, [key]: v.trim() } });
  const nameInvalid = value.kind === 'step' && !!value.step && !isValidStepName(value.step);
  const stepSettings = value.kind === 'step';
  return (
    <div className="jp-PipelineRoleEditor">
      <fieldset>
        <legend>{trans.__('Role')}</legend>
        {ROLE_KINDS.map(kind => (
          <label key={kind} className="jp-PipelineRoleEditor-radio">
            <input
              type="radio"
              name="jp-pipeline-role"
              value={kind}
              checked={value.kind === kind}
              onChange={() => set({ kind })}
            />
            {roleLabel(kind, trans)}
          </label>
        ))}
      </fieldset>
      {value.kind === 'step' && (
        <label className="jp-PipelineRoleEditor-field">
          {trans.__('Step name')}
          <input
            type="text"
            className="jp-mod-styled jp-PipelineRoleEditor-name"
            list="jp-pipeline-step-names"
            value={value.step ?? ''}
            autoFocus
            aria-invalid={nameInvalid}
            onChange={e => set({ step: e.target.value.trim() })}
          />
          <datalist id="jp-pipeline-step-names">
            {props.steps.map(s => (
              <option key={s} value={s} />
            ))}
          </datalist>
          {nameInvalid && (
            <span className="jp-PipelineRoleEditor-error">
              {trans.__('Use letters, digits, _ and - only.')}
            </span>
          )}
        </label>
      )}
      {value.kind !== 'skip' && value.kind !== 'none' && props.earlier.length > 0 && (
        <fieldset>
          <legend>{trans.__('Also runs after (prev:)')}</legend>
          {props.earlier.map(s => (
            <label key={s} className="jp-PipelineRoleEditor-check">
              <input
                type="checkbox"
                checked={value.prev.includes(s)}
                onChange={e =>
                  set({
                    prev: e.target.checked ? [...value.prev, s] : value.prev.filter(p => p !== s)
                  })
                }
              />
              {s}
            </label>
          ))}
        </fieldset>
      )}
      {stepSettings && (
        <fieldset className="jp-PipelineRoleEditor-settings">
          <legend>{trans.__('Step settings (Kubeflow and local runner)')}</legend>
          <label className="jp-PipelineRoleEditor-field">
            {trans.__('Image')}
            <input
              type="text"
              className="jp-mod-styled"
              placeholder={trans.__('default image')}
              value={value.image ?? ''}
              onChange={e => set({ image: e.target.value.trim() || undefined })}
            />
          </label>
          <div className="jp-PipelineRoleEditor-row">
            <label className="jp-PipelineRoleEditor-field">
              {trans.__('CPU limit')}
              <input
                type="text"
                className="jp-mod-styled"
                placeholder="2"
                value={value.limits.cpu ?? ''}
                onChange={e => setLimit('cpu', e.target.value)}
              />
            </label>
            <label className="jp-PipelineRoleEditor-field">
              {trans.__('Memory limit')}
              <input
                type="text"
                className="jp-mod-styled"
                placeholder="4Gi"
                value={value.limits.memory ?? ''}
                onChange={e => setLimit('memory', e.target.value)}
              />
            </label>
            <label className="jp-PipelineRoleEditor-field">
              {trans.__('GPUs')}
              <input
                type="text"
                className="jp-mod-styled"
                placeholder="1"
                value={value.limits[props.gpuKey] ?? ''}
                onChange={e => setLimit(props.gpuKey, e.target.value)}
              />
            </label>
          </div>
          <div className="jp-PipelineRoleEditor-row">
            <label className="jp-PipelineRoleEditor-field">
              {trans.__('Cache')}
              <select
                className="jp-mod-styled"
                value={value.cache === undefined ? 'default' : value.cache ? 'enabled' : 'disabled'}
                onChange={e =>
                  set({
                    cache: e.target.value === 'default' ? undefined : e.target.value === 'enabled'
                  })
                }
              >
                <option value="default">{trans.__('default')}</option>
                <option value="enabled">{trans.__('enabled')}</option>
                <option value="disabled">{trans.__('disabled')}</option>
              </select>
            </label>
            <label className="jp-PipelineRoleEditor-field">
              {trans.__('Retries')}
              <input
                type="number"
                min={0}
                className="jp-mod-styled"
                value={value.retries ?? ''}
                onChange={e =>
                  set({
                    retries:
                      e.target.value === ''
                        ? undefined
                        : Math.max(0, parseInt(e.target.value, 10) || 0)
                  })
                }
              />
            </label>
          </div>
        </fieldset>
      )}
    </div>
  );
}
