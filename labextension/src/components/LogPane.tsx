/**
 * One step's log: follows the log endpoint's byte offsets while the step runs (scrolled to the
 * end unless the reader scrolled up), drains the last bytes once it finished, then keeps the
 * whole text. The offset bookkeeping is LogTail's (model/runs.ts, unit-tested).
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { LogChunk, LogTail, RunState, nextLogPoll } from '../model/runs';

export interface LogPaneProps {
  runId: string;
  step: string;
  /** The step's name as shown (as tagged); `step` when not given. */
  label?: string;
  state: RunState;
  fetchLog: (offset: number) => Promise<LogChunk & { finished: boolean }>;
  trans: TranslationBundle;
}

export function LogPane(props: LogPaneProps): JSX.Element {
  const { runId, step, trans } = props;
  const tail = React.useMemo(() => new LogTail(), [runId, step]);
  const [, setVersion] = React.useState(0);
  const [error, setError] = React.useState<string | null>(null);
  const [loading, setLoading] = React.useState(true);
  const stateRef = React.useRef(props.state);
  stateRef.current = props.state;
  const fetchRef = React.useRef(props.fetchLog);
  fetchRef.current = props.fetchLog;
  const pre = React.useRef<HTMLPreElement>(null);
  const stick = React.useRef(true);
  // A state change (e.g. the step just finished) ends the current wait early.
  const wake = React.useRef<() => void>(() => undefined);
  React.useEffect(() => wake.current(), [props.state]);

  React.useEffect(() => {
    let live = true;
    let timer: ReturnType<typeof setTimeout> | null = null;
    let finalFetched = false;
    const loop = async () => {
      let hadData = false;
      try {
        const chunk = await fetchRef.current(tail.offset);
        if (!live) {
          return;
        }
        hadData = tail.apply(chunk);
        if (hadData) {
          setVersion(tail.version);
        }
        setError(null);
        if (chunk.finished) {
          finalFetched = true;
        }
      } catch (e) {
        if (!live) {
          return;
        }
        const message = (e as Error).message ?? String(e);
        if (stateRef.current === 'queued' || stateRef.current === 'running') {
          hadData = false; // no log yet: keep trying
        } else {
          setError(message);
          finalFetched = true;
        }
      }
      setLoading(false);
      const delay = nextLogPoll(stateRef.current, hadData, finalFetched);
      if (delay === null || !live) {
        return;
      }
      await new Promise<void>(resolve => {
        timer = setTimeout(resolve, delay);
        wake.current = () => {
          if (timer !== null) {
            clearTimeout(timer);
          }
          resolve();
        };
      });
      if (live) {
        void loop();
      }
    };
    void loop();
    return () => {
      live = false;
      if (timer !== null) {
        clearTimeout(timer);
      }
    };
  }, [tail]);

  React.useLayoutEffect(() => {
    const el = pre.current;
    if (el && stick.current) {
      el.scrollTop = el.scrollHeight;
    }
  });

  const text = tail.text;
  const running = props.state === 'running' || props.state === 'queued';
  return (
    <div className="jp-PipelineLog" data-step={step} data-following={running}>
      <div className="jp-PipelineLog-header">
        <span>{trans.__('Log of %1', props.label ?? step)}</span>
        <span className="jp-PipelineLog-meta">
          {trans.__('%1 lines', tail.lines.length + (tail.partial ? 1 : 0))}
          {running ? ` · ${trans.__('following')}` : ''}
        </span>
      </div>
      {error ? (
        <p className="jp-PipelineEmpty">{error}</p>
      ) : (
        <pre
          ref={pre}
          className="jp-PipelineLog-text"
          onScroll={e => {
            const el = e.currentTarget;
            stick.current = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
          }}
        >
          {text ||
            (loading
              ? trans.__('Loading…')
              : running
                ? trans.__('Waiting for output…')
                : trans.__('(no output)'))}
        </pre>
      )}
    </div>
  );
}
