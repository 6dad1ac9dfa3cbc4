import {
  EMPTY_RUNS,
  LogTail,
  RunInfo,
  RunsEvent,
  cellStates,
  durationOf,
  firstFailure,
  fromServerEvent,
  formatDuration,
  formatSize,
  newlyFinished,
  nextLogPoll,
  overprint,
  reduceAll,
  reduceRuns,
  runTargets,
  runsFor,
  sameNotebook
} from '../src/model/runs';

const run = (id: string, created: number, extra: Partial<RunInfo> = {}): RunInfo => ({
  id,
  state: 'queued',
  created,
  notebook: `/home/u/work/${id}.ipynb`,
  steps: [
    { name: 'prepare', state: 'queued' },
    { name: 'train', state: 'queued' }
  ],
  ...extra
});

const states = (r: RunInfo | undefined) => (r?.steps ?? []).map(s => `${s.name}:${s.state}`);

describe('reduceRuns', () => {
  it('walks a run through queued → running → succeeded from step events', () => {
    const events: RunsEvent[] = [
      { kind: 'run', run: run('a', 100), seq: 1 },
      {
        kind: 'step',
        runId: 'a',
        step: { name: 'prepare', state: 'running', started: 101 },
        seq: 2
      },
      {
        kind: 'step',
        runId: 'a',
        step: { name: 'prepare', state: 'succeeded', finished: 103 },
        seq: 3
      },
      { kind: 'step', runId: 'a', step: { name: 'train', state: 'cached' }, seq: 4 },
      { kind: 'run', run: { id: 'a', state: 'succeeded', finished: 104 }, seq: 5 }
    ];
    const s = reduceAll(EMPTY_RUNS, events);
    expect(s.runs.a.state).toBe('succeeded');
    expect(states(s.runs.a)).toEqual(['prepare:succeeded', 'train:cached']);
    expect(s.runs.a.steps?.[0]).toMatchObject({ started: 101, finished: 103 });
    expect(s.runs.a.started).toBe(101); // the first running step starts the run
    expect(s.seq).toBe(5);
  });

  it('moves a queued run to running on its first running step', () => {
    let s = reduceRuns(EMPTY_RUNS, { kind: 'run', run: run('a', 1) });
    s = reduceRuns(s, { kind: 'step', runId: 'a', step: { name: 'train', state: 'running' } });
    expect(s.runs.a.state).toBe('running');
  });

  it('ignores events the resume cursor already covers (replayed after a reconnect)', () => {
    const s1 = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1), seq: 7 },
      {
        kind: 'step',
        runId: 'a',
        step: { name: 'prepare', state: 'failed', error: 'boom' },
        seq: 8
      }
    ]);
    const replay: RunsEvent = {
      kind: 'step',
      runId: 'a',
      step: { name: 'prepare', state: 'running' },
      seq: 8
    };
    expect(reduceRuns(s1, replay)).toBe(s1); // same object: nothing to render
    expect(states(s1.runs.a)[0]).toBe('prepare:failed');
  });

  it('never lets a late running event reopen a finished step or run', () => {
    let s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1) },
      {
        kind: 'step',
        runId: 'a',
        step: { name: 'prepare', state: 'succeeded', attempts: 1, finished: 5 }
      },
      { kind: 'run', run: { id: 'a', state: 'succeeded' } }
    ]);
    s = reduceAll(s, [
      {
        kind: 'step',
        runId: 'a',
        step: { name: 'prepare', state: 'running', attempts: 1, finished: null }
      },
      { kind: 'run', run: { id: 'a', state: 'running' } }
    ]);
    expect(states(s.runs.a)[0]).toBe('prepare:succeeded');
    expect(s.runs.a.steps?.[0].finished).toBe(5);
    expect(s.runs.a.state).toBe('succeeded');
  });

  it('lets a retry (a new attempt) move a failed step back to running', () => {
    const s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1) },
      { kind: 'step', runId: 'a', step: { name: 'train', state: 'failed', attempts: 1 } },
      { kind: 'step', runId: 'a', step: { name: 'train', state: 'running', attempts: 2 } }
    ]);
    expect(s.runs.a.steps?.[1]).toMatchObject({ state: 'running', attempts: 2 });
  });

  it('keeps a finished step but takes its outputs listed later', () => {
    const s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1) },
      { kind: 'step', runId: 'a', step: { name: 'prepare', state: 'succeeded', attempts: 1 } },
      {
        kind: 'step',
        runId: 'a',
        step: {
          name: 'prepare',
          state: 'running',
          outputs: { df: { type: 'pandas.DataFrame', size: 10 } }
        }
      }
    ]);
    expect(s.runs.a.steps?.[0].state).toBe('succeeded');
    expect(s.runs.a.steps?.[0].outputs?.df.type).toBe('pandas.DataFrame');
  });

  it('orders runs newest first and marks runs known only from a step event as incomplete', () => {
    let s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('old', 10) },
      { kind: 'run', run: run('new', 30) },
      { kind: 'run', run: run('mid', 20) }
    ]);
    expect(s.order).toEqual(['new', 'mid', 'old']);
    s = reduceRuns(s, { kind: 'step', runId: 'cli', step: { name: 'x', state: 'running' } });
    expect(s.incomplete).toEqual(['cli']);
    expect(s.runs.cli.steps?.map(x => x.name)).toEqual(['x']);
    s = reduceRuns(s, { kind: 'run', run: run('cli', 40, { state: 'running' }) });
    expect(s.incomplete).toEqual([]);
    expect(s.order[0]).toBe('cli');
    // The fetched record keeps the live step state the event already gave.
    expect(s.runs.cli.state).toBe('running');
  });

  it('merges a (possibly older) snapshot without regressing states or dropping runs', () => {
    let s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1) },
      { kind: 'step', runId: 'a', step: { name: 'prepare', state: 'succeeded' }, seq: 3 },
      { kind: 'run', run: run('b', 2), seq: 4 }
    ]);
    s = reduceRuns(s, { kind: 'snapshot', runs: [run('a', 1), run('c', 3)], seq: 2 });
    expect(states(s.runs.a)[0]).toBe('prepare:succeeded');
    expect(s.order).toEqual(['c', 'b', 'a']);
    expect(s.seq).toBe(4); // a snapshot never moves the cursor back
  });

  it('removes deleted runs', () => {
    let s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1) },
      { kind: 'run', run: run('b', 2) }
    ]);
    s = reduceRuns(s, { kind: 'deleted', runId: 'a' });
    expect(s.order).toEqual(['b']);
    expect(s.runs.a).toBeUndefined();
  });

  it('reports runs that just finished, once', () => {
    const s1 = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1, { state: 'running' }) },
      { kind: 'run', run: run('b', 2, { state: 'running' }) }
    ]);
    const s2 = reduceRuns(s1, { kind: 'run', run: { id: 'a', state: 'failed', error: 'x' } });
    expect(newlyFinished(s1, s2)).toEqual(['a']);
    const s3 = reduceRuns(s2, { kind: 'run', run: { id: 'a', state: 'failed' } });
    expect(newlyFinished(s2, s3)).toEqual([]);
    // A run first seen already finished (history) is no news.
    const s4 = reduceRuns(s3, { kind: 'run', run: run('z', 0, { state: 'succeeded' }) });
    expect(newlyFinished(s3, s4)).toEqual([]);
  });
});

describe('fromServerEvent', () => {
  it('folds wire messages (each with the run’s record) and deletions', () => {
    const record = run('a', 5, { state: 'running', path: 'proj/nb.ipynb' });
    let s = reduceRuns(
      EMPTY_RUNS,
      fromServerEvent({
        seq: 11,
        time: 5,
        kind: 'step',
        run_id: 'a',
        step: 'prepare',
        state: 'running',
        run: record
      })
    );
    expect(s.seq).toBe(11);
    expect(runsFor(s, 'proj/nb.ipynb', false).map(r => r.id)).toEqual(['a']);
    s = reduceRuns(
      s,
      fromServerEvent({ seq: 12, time: 6, kind: 'deleted', run_id: 'a', run: null })
    );
    expect(s.order).toEqual([]);
    expect(s.seq).toBe(12);
  });
});

describe('selectors', () => {
  it('lists this notebook’s runs first, others on demand', () => {
    const s = reduceAll(EMPTY_RUNS, [
      { kind: 'run', run: run('a', 1, { notebook: '/srv/root/proj/nb.ipynb' }) },
      { kind: 'run', run: run('b', 2, { notebook: '/srv/root/other.ipynb' }) },
      { kind: 'run', run: run('c', 3, { notebook: '/srv/root/proj/nb.ipynb' }) },
      { kind: 'run', run: run('d', 4, { notebook: '/srv/root/xproj/nb.ipynb' }) }
    ]);
    expect(runsFor(s, 'proj/nb.ipynb', false).map(r => r.id)).toEqual(['c', 'a']);
    expect(runsFor(s, 'proj/nb.ipynb', true).map(r => r.id)).toEqual(['c', 'a', 'd', 'b']);
    expect(runsFor(s, null, false).map(r => r.id)).toEqual(['d', 'c', 'b', 'a']);
    expect(sameNotebook('/srv/root/xproj/nb.ipynb', 'proj/nb.ipynb')).toBe(false);
  });

  it('computes live and final durations and formats them', () => {
    expect(durationOf({ started: 10 }, 12.5)).toBe(2.5);
    expect(durationOf({ started: 10, finished: 11 }, 99)).toBe(1);
    expect(durationOf({ started: null }, 99)).toBeNull();
    expect(formatDuration(0.42)).toBe('0.4s');
    expect(formatDuration(42.9)).toBe('42s');
    expect(formatDuration(185)).toBe('3m 05s');
    expect(formatDuration(7260)).toBe('2h 01m');
    expect(formatSize(812)).toBe('812 B');
    expect(formatSize(1536)).toBe('1.5 KB');
  });

  it('finds the failing step and each cell’s state', () => {
    const r = run('a', 1, {
      steps: [
        { name: 'prepare', state: 'succeeded' },
        { name: 'train', state: 'failed', error_cell: 4 },
        { name: 'report', state: 'skipped' }
      ]
    });
    expect(firstFailure(r)?.name).toBe('train');
    const cells = cellStates(r, { prepare: [0, 1], train: [3, 4], report: [5] });
    expect([...cells.entries()]).toEqual([
      [0, 'succeeded'],
      [1, 'succeeded'],
      [3, 'failed'],
      [4, 'failed'],
      [5, 'skipped']
    ]);
  });
});

describe('LogTail', () => {
  it('appends chunks at their offsets and splits lines, keeping the unfinished one', () => {
    const t = new LogTail();
    expect(t.apply({ offset: 0, data: 'epoch 1\nepo', nextOffset: 11 })).toBe(true);
    expect(t.lines).toEqual(['epoch 1']);
    expect(t.text).toBe('epoch 1\nepo');
    expect(t.apply({ offset: 11, data: 'ch 2\n', nextOffset: 16 })).toBe(true);
    expect(t.lines).toEqual(['epoch 1', 'epoch 2']);
    expect(t.offset).toBe(16);
    expect(t.last(1)).toEqual(['epoch 2']);
  });

  it('ignores duplicate and out-of-order answers', () => {
    const t = new LogTail();
    t.apply({ offset: 0, data: 'a\n', nextOffset: 2 });
    const v = t.version;
    expect(t.apply({ offset: 0, data: 'a\n', nextOffset: 2 })).toBe(false); // duplicate
    expect(t.apply({ offset: 7, data: 'zzz\n', nextOffset: 11 })).toBe(false); // gap
    expect(t.text).toBe('a');
    expect(t.version).toBe(v);
  });

  it('moves the offset on an empty answer without a change', () => {
    const t = new LogTail();
    expect(t.apply({ offset: 0, data: '', nextOffset: 0 })).toBe(false);
    expect(t.offset).toBe(0);
  });

  it('offsets are bytes: multi-byte text advances by the server’s next offset', () => {
    const t = new LogTail();
    t.apply({ offset: 0, data: 'größe\n', nextOffset: 8 });
    expect(t.offset).toBe(8);
    expect(t.apply({ offset: 8, data: 'ok\n', nextOffset: 11 })).toBe(true);
    expect(t.lines).toEqual(['größe', 'ok']);
  });

  it('starts over when the log was truncated (a retry restarts it)', () => {
    const t = new LogTail();
    t.apply({ offset: 0, data: 'try 1\n', nextOffset: 6 });
    expect(t.apply({ offset: 6, data: '', nextOffset: 3 })).toBe(true);
    expect(t.offset).toBe(0);
    expect(t.text).toBe('');
    t.apply({ offset: 0, data: 'tr\n', nextOffset: 3 });
    expect(t.lines).toEqual(['tr']);
  });

  it('shows what a terminal shows for progress bars and CRLF', () => {
    expect(overprint('10%\r50%\r100%')).toBe('100%');
    expect(overprint('dos line\r')).toBe('dos line');
    const t = new LogTail();
    t.apply({ offset: 0, data: 'a\r\n 1%\r 2%', nextOffset: 10 });
    expect(t.lines).toEqual(['a']);
    expect(t.text).toBe('a\n 2%');
  });

  it('keeps a 10,000-line log whole', () => {
    const t = new LogTail();
    const data = Array.from({ length: 10000 }, (_, i) => `line ${i}`).join('\n') + '\n';
    t.apply({ offset: 0, data, nextOffset: data.length });
    expect(t.lines.length).toBe(10000);
    expect(t.lines[9999]).toBe('line 9999');
  });

  it('polls fast while running, drains once after the step finished, then stops', () => {
    expect(nextLogPoll('running', true, false)).toBe(200);
    expect(nextLogPoll('running', false, false)).toBe(500);
    expect(nextLogPoll('succeeded', false, false)).toBe(0);
    expect(nextLogPoll('failed', true, true)).toBe(0);
    expect(nextLogPoll('failed', false, true)).toBeNull();
  });
});

describe('runTargets', () => {
  it('offers kfp only when the server lists it and a host is configured', () => {
    expect(runTargets({ targets: ['local', 'kfp'], kfp_host: 'http://kfp:8888' })).toEqual([
      'local',
      'kfp'
    ]);
    expect(runTargets({ targets: ['local', 'kfp'], kfp_host: null })).toEqual(['local']);
    expect(runTargets({ targets: ['local'], kfp_host: 'http://kfp:8888' })).toEqual(['local']);
    expect(runTargets(null)).toEqual(['local']);
  });

  it("takes the notebook's own KFP host into account", () => {
    const meta = { jupyter_pipeline: { kfp: { host: 'http://cluster' } } };
    expect(runTargets({ targets: ['local', 'kfp'], kfp_host: null }, meta)).toEqual([
      'local',
      'kfp'
    ]);
    expect(runTargets({ targets: ['local', 'kfp'] }, { jupyter_pipeline: { kfp: {} } })).toEqual([
      'local'
    ]);
  });
});
