/**
 * A run or step state as a word and a colour (never the colour alone), in theme colours so it
 * reads on light and dark themes.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import * as React from 'react';
import { RunState } from '../model/runs';

/** Theme colour of each state (also used to colour the graph's nodes by state). */
export const STATE_COLOURS: Record<RunState, string> = {
  queued: 'var(--jp-ui-font-color3)',
  running: 'var(--jp-brand-color1)',
  succeeded: 'var(--jp-success-color1)',
  failed: 'var(--jp-error-color1)',
  cached: 'var(--jp-info-color1)',
  skipped: 'var(--jp-warn-color1)',
  cancelled: 'var(--jp-ui-font-color2)'
};

/** The state's word, translated (the words are the run store's). */
export function stateLabel(state: RunState, trans: TranslationBundle): string {
  switch (state) {
    case 'queued':
      return trans.__('queued');
    case 'running':
      return trans.__('running');
    case 'succeeded':
      return trans.__('succeeded');
    case 'failed':
      return trans.__('failed');
    case 'cached':
      return trans.__('cached');
    case 'skipped':
      return trans.__('skipped');
    case 'cancelled':
      return trans.__('cancelled');
  }
}

export function StateBadge(props: { state: RunState; trans: TranslationBundle }): JSX.Element {
  return (
    <span className={`jp-PipelineRunState jp-mod-${props.state}`} data-state={props.state}>
      <span className="jp-PipelineRunState-dot" aria-hidden="true" />
      {stateLabel(props.state, props.trans)}
    </span>
  );
}
