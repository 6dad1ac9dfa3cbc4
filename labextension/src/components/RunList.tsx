/**
 * The runs list: this notebook's runs first (all runs on demand), each with its state as a word
 * and a colour, target, start, duration (ticking while it runs) and parameters. It renders what
 * the event stream put in the run-state model; it never fetches.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { RunInfo, durationOf, formatDuration } from '../model/runs';
import { StateBadge } from './RunBadge';

export interface RunListProps {
  runs: RunInfo[];
  selected: string | null;
  onSelect: (id: string) => void;
  showAll: boolean;
  onShowAll: (all: boolean) => void;
  hasMore: boolean;
  onLoadMore: () => void;
  /** The open notebook's path (runs of other notebooks name theirs). */
  currentPath: string | null;
  now: number;
  trans: TranslationBundle;
}

/** "14:03" today, "Dec 3 14:03" before. */
export function startLabel(seconds: number | null | undefined, now: number): string {
  if (!seconds) {
    return '';
  }
  const d = new Date(seconds * 1000);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' });
  const today = new Date(now * 1000).toDateString() === d.toDateString();
  return today ? time : `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

function paramsLabel(params: Record<string, unknown> | undefined): string {
  return Object.entries(params ?? {})
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(', ');
}

/** Only the rows in view are drawn, so hundreds of runs stay cheap to render. */
const ROW_HEIGHT = 44;
const WINDOW = 60;

export function RunList(props: RunListProps): JSX.Element {
  const { trans, now } = props;
  const [limit, setLimit] = React.useState(WINDOW);
  const shown = props.runs.slice(0, limit);
  return (
    <div className="jp-PipelineRuns">
      <div className="jp-PipelineRuns-toolbar">
        <label>
          <input
            type="checkbox"
            checked={props.showAll}
            onChange={e => props.onShowAll(e.target.checked)}
          />
          {trans.__('All notebooks')}
        </label>
      </div>
      {props.runs.length === 0 && (
        <p className="jp-PipelineEmpty">
          {props.showAll
            ? trans.__('No runs yet.')
            : trans.__('No runs of this notebook yet. Press Run, or run it from a terminal.')}
        </p>
      )}
      <ul className="jp-PipelineRunList" style={{ '--jp-pipeline-row': `${ROW_HEIGHT}px` } as any}>
        {shown.map(r => {
          const other = props.currentPath !== null && r.path !== props.currentPath;
          const params = paramsLabel(r.parameters);
          return (
            <li key={r.id} data-run={r.id} data-state={r.state}>
              <button
                type="button"
                className={`jp-PipelineRunRow${props.selected === r.id ? ' jp-mod-selected' : ''}`}
                onClick={() => props.onSelect(r.id)}
                title={trans.__('Show run %1', r.id)}
              >
                <span className="jp-PipelineRunRow-top">
                  <StateBadge state={r.state} trans={trans} />
                  <code className="jp-PipelineRunRow-id" title={r.id}>
                    {r.id}
                  </code>
                  <span className="jp-PipelineRunRow-target">{r.backend ?? 'local'}</span>
                  <span className="jp-PipelineRunRow-start">{startLabel(r.created, now)}</span>
                  <span className="jp-PipelineRunRow-duration">
                    {formatDuration(durationOf(r, now))}
                  </span>
                </span>
                {(other || params) && (
                  <span className="jp-PipelineRunRow-detail">
                    {other && (
                      <span
                        className="jp-PipelineRunRow-notebook"
                        title={r.path ?? r.notebook ?? ''}
                      >
                        {r.path ?? r.notebook ?? ''}
                      </span>
                    )}
                    {params && (
                      <code className="jp-PipelineRunRow-params" title={params}>
                        {params}
                      </code>
                    )}
                  </span>
                )}
              </button>
            </li>
          );
        })}
      </ul>
      {(props.runs.length > limit || props.hasMore) && (
        <button
          type="button"
          className="jp-mod-styled jp-PipelineRuns-more"
          onClick={() => {
            if (props.runs.length > limit) {
              setLimit(limit + WINDOW);
            } else {
              props.onLoadMore();
            }
          }}
        >
          {trans.__('Show older runs')}
        </button>
      )}
    </div>
  );
}
