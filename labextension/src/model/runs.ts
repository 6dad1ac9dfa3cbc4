/**
 * Run state for the sidebar, kept from the server's event stream: a pure reducer (events in, a
 * new immutable state out) plus the log tail's offset bookkeeping. No DOM, no fetch: the widgets
 * feed it what the server says, React renders what it holds, Jest tests it under Node.
 *
 * Why a reducer and not per-run polling: one event stream carries every run's changes (CLI runs
 * included); the reducer folds them in order, drops what a reconnect replays twice, and never
 * lets a late "running" overwrite a step that already finished.
 */

/** States of a run and of each step, as the run store names them. */
export type RunState =
  'queued' | 'running' | 'succeeded' | 'failed' | 'cached' | 'skipped' | 'cancelled';

export const RUN_STATES: readonly RunState[] = [
  'queued',
  'running',
  'succeeded',
  'failed',
  'cached',
  'skipped',
  'cancelled'
];

/** True once nothing more will happen to a run or step in this state. */
export function isFinished(state: RunState): boolean {
  return state !== 'queued' && state !== 'running';
}

/** A saved value of a step, as the server describes it (loading it is the kernel's job). */
export interface SavedValueInfo {
  type: string;
  size: number;
}

/** One step of a run (the server's `GET runs/{id}` step, fields it may omit made optional). */
export interface StepInfo {
  name: string;
  state: RunState;
  started?: number | null;
  finished?: number | null;
  attempts?: number;
  cached?: boolean;
  error?: string | null;
  error_cell?: number | null;
  outputs?: Record<string, SavedValueInfo>;
  has_log?: boolean;
  has_notebook?: boolean;
}

/** One run (the server's `GET runs/{id}` / list item). */
export interface RunInfo {
  id: string;
  state: RunState;
  pipeline?: string;
  notebook?: string;
  /** The notebook's path relative to the server root, when it lies inside it. */
  path?: string | null;
  backend?: string;
  created?: number;
  started?: number | null;
  finished?: number | null;
  parameters?: Record<string, unknown>;
  url?: string | null;
  error?: string | null;
  steps?: StepInfo[];
  has_merged_notebook?: boolean;
}

/** What the reducer understands; `fromServerEvent` turns the wire format into these. */
export type RunsEvent =
  /** A full list from `GET runs` (replaces what is known, keeps the cursor). */
  | { kind: 'snapshot'; runs: RunInfo[]; seq?: number }
  /** A run was created or changed; fields not given keep their value. */
  | { kind: 'run'; run: Partial<RunInfo> & { id: string }; seq?: number }
  /** A step changed; fields not given keep their value. */
  | { kind: 'step'; runId: string; step: Partial<StepInfo> & { name: string }; seq?: number }
  /** The run was deleted (pruned) from the store. */
  | { kind: 'deleted'; runId: string; seq?: number };

/** One message of the server's event stream (`GET events`, Server-Sent Events). */
export interface EventMessage {
  seq: number;
  time: number;
  kind: 'run' | 'step' | 'deleted';
  run_id: string;
  step?: string | null;
  state?: RunState | null;
  /** The run's record when the server read the event (null once deleted). */
  run?: RunInfo | null;
}

/**
 * The wire message as a reducer event. Each message carries the run's whole record, so a run
 * or step change folds in as a `run` event (the reducer still refuses to regress a state).
 */
export function fromServerEvent(message: EventMessage): RunsEvent {
  if (message.kind === 'deleted' || !message.run) {
    return { kind: 'deleted', runId: message.run_id, seq: message.seq };
  }
  return { kind: 'run', run: message.run, seq: message.seq };
}

export interface RunsState {
  /** Runs by id. */
  readonly runs: Readonly<Record<string, RunInfo>>;
  /** Ids, newest first. */
  readonly order: readonly string[];
  /** Highest event sequence number folded in (the resume cursor); -1 before any. */
  readonly seq: number;
  /**
   * Runs heard of only through a step event (e.g. the client connected mid-run): the view
   * fetches them once with `GET runs/{id}` and folds the answer in as a `run` event.
   */
  readonly incomplete: readonly string[];
}

export const EMPTY_RUNS: RunsState = { runs: {}, order: [], seq: -1, incomplete: [] };

function created(r: RunInfo): number {
  return r.created ?? r.started ?? 0;
}

function sortOrder(runs: Readonly<Record<string, RunInfo>>): string[] {
  return Object.keys(runs).sort((a, b) => created(runs[b]) - created(runs[a]) || (a < b ? 1 : -1));
}

/**
 * Whether a step update may replace the current step: a finished step only moves on for a new
 * attempt (a retry) or to another finished state, never back to queued/running because an
 * older event arrived late.
 */
function stepMayChange(cur: StepInfo, next: Partial<StepInfo>): boolean {
  if (next.state === undefined || !isFinished(cur.state) || isFinished(next.state)) {
    return true;
  }
  return (next.attempts ?? 0) > (cur.attempts ?? 0);
}

function mergeStep(
  cur: StepInfo | undefined,
  patch: Partial<StepInfo> & { name: string }
): StepInfo {
  if (cur === undefined) {
    return { state: 'queued', ...patch } as StepInfo;
  }
  if (!stepMayChange(cur, patch)) {
    // Keep the finished state and times, but take facts that only grow (e.g. outputs).
    return { ...cur, ...patch, state: cur.state, started: cur.started, finished: cur.finished };
  }
  return { ...cur, ...patch };
}

function mergeSteps(cur: StepInfo[] | undefined, patches: StepInfo[] | undefined): StepInfo[] {
  if (patches === undefined) {
    return cur ?? [];
  }
  const byName = new Map((cur ?? []).map(s => [s.name, s]));
  return patches.map(p => mergeStep(byName.get(p.name), p));
}

function mergeRun(cur: RunInfo | undefined, patch: Partial<RunInfo> & { id: string }): RunInfo {
  if (cur === undefined) {
    return { state: 'queued', ...patch, steps: mergeSteps(undefined, patch.steps) } as RunInfo;
  }
  let state = patch.state ?? cur.state;
  if (isFinished(cur.state) && !isFinished(state)) {
    state = cur.state; // a late "running" never reopens a finished run
  }
  return { ...cur, ...patch, state, steps: mergeSteps(cur.steps, patch.steps) };
}

function withRun(state: RunsState, run: RunInfo, seq: number, incomplete?: string[]): RunsState {
  const known = run.id in state.runs;
  const runs = { ...state.runs, [run.id]: run };
  const moved = !known || created(state.runs[run.id]) !== created(run);
  return {
    runs,
    order: moved ? sortOrder(runs) : state.order,
    seq,
    incomplete: incomplete ?? state.incomplete
  };
}

/**
 * Fold one event into the state. Returns the same object when the event changes nothing
 * (an event the cursor already covers), so React skips the render.
 */
export function reduceRuns(state: RunsState, event: RunsEvent): RunsState {
  if (event.seq !== undefined && event.seq <= state.seq && event.kind !== 'snapshot') {
    return state; // replayed after a reconnect: already folded in
  }
  const seq = event.seq !== undefined ? Math.max(state.seq, event.seq) : state.seq;
  switch (event.kind) {
    case 'snapshot': {
      const runs: Record<string, RunInfo> = {};
      for (const r of event.runs) {
        // A snapshot may be older than events already folded in: merge, never regress.
        runs[r.id] = mergeRun(state.runs[r.id], r);
      }
      // Keep runs the snapshot's page did not include (older ones opened on demand).
      for (const id of Object.keys(state.runs)) {
        if (!(id in runs)) {
          runs[id] = state.runs[id];
        }
      }
      return {
        runs,
        order: sortOrder(runs),
        seq,
        incomplete: state.incomplete.filter(id => !event.runs.some(r => r.id === id))
      };
    }
    case 'run': {
      const run = mergeRun(state.runs[event.run.id], event.run);
      const complete = event.run.steps !== undefined;
      const incomplete = complete
        ? state.incomplete.filter(id => id !== run.id)
        : state.runs[run.id] === undefined
          ? [...state.incomplete, run.id]
          : undefined;
      return withRun(state, run, seq, incomplete);
    }
    case 'step': {
      const cur = state.runs[event.runId];
      const base: RunInfo = cur ?? { id: event.runId, state: 'queued', steps: [] };
      const steps = base.steps ?? [];
      const i = steps.findIndex(s => s.name === event.step.name);
      const step = mergeStep(i >= 0 ? steps[i] : undefined, event.step);
      const nextSteps = i >= 0 ? steps.map((s, j) => (j === i ? step : s)) : [...steps, step];
      let runState = base.state;
      if (runState === 'queued' && step.state === 'running') {
        runState = 'running'; // the run's own event may come a moment later
      }
      const run: RunInfo = {
        ...base,
        state: runState,
        started: base.started ?? (step.state === 'running' ? step.started : base.started),
        steps: nextSteps
      };
      const incomplete =
        cur === undefined && !state.incomplete.includes(event.runId)
          ? [...state.incomplete, event.runId]
          : undefined;
      return withRun(state, run, seq, incomplete);
    }
    case 'deleted': {
      if (!(event.runId in state.runs)) {
        return seq === state.seq ? state : { ...state, seq };
      }
      const runs = { ...state.runs };
      delete runs[event.runId];
      return {
        runs,
        order: state.order.filter(id => id !== event.runId),
        seq,
        incomplete: state.incomplete.filter(id => id !== event.runId)
      };
    }
  }
}

/** Fold several events in order. */
export function reduceAll(state: RunsState, events: readonly RunsEvent[]): RunsState {
  return events.reduce(reduceRuns, state);
}

/** Ids of runs that were not finished in `before` and are finished in `after` (notifications). */
export function newlyFinished(before: RunsState, after: RunsState): string[] {
  if (before === after) {
    return [];
  }
  return after.order.filter(id => {
    const prev = before.runs[id];
    return prev !== undefined && !isFinished(prev.state) && isFinished(after.runs[id].state);
  });
}

/** Runs of one notebook first (newest first), then, with `all`, every other run. */
export function runsFor(state: RunsState, notebook: string | null, all: boolean): RunInfo[] {
  const mine: RunInfo[] = [];
  const others: RunInfo[] = [];
  for (const id of state.order) {
    const r = state.runs[id];
    const own = notebook !== null && (r.path === notebook || sameNotebook(r.notebook, notebook));
    (own ? mine : others).push(r);
  }
  return all || notebook === null ? [...mine, ...others] : mine;
}

/**
 * The store keeps absolute paths, the editor knows the path relative to the server root: a run
 * belongs to the open notebook when its absolute path ends with the relative one at a folder
 * boundary.
 */
export function sameNotebook(absolute: string | undefined, relative: string): boolean {
  if (!absolute) {
    return false;
  }
  const rel = relative.replace(/^\/+/, '');
  return absolute === rel || absolute.endsWith('/' + rel);
}

/** Seconds a step or run has taken (still running: up to `now`), or null before it started. */
export function durationOf(
  item: { started?: number | null; finished?: number | null },
  now: number
): number | null {
  if (item.started === null || item.started === undefined) {
    return null;
  }
  const end = item.finished ?? now;
  return Math.max(0, end - item.started);
}

/** "0.4s", "12s", "3m 05s", "2h 01m": short enough for a list column. */
export function formatDuration(seconds: number | null): string {
  if (seconds === null) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)}s`;
  }
  const s = Math.floor(seconds);
  if (s < 60) {
    return `${s}s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** "812 B", "1.2 KB", "45.0 MB". */
export function formatSize(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** The step whose error the run view shows first: the first failed step in pipeline order. */
export function firstFailure(run: RunInfo): StepInfo | undefined {
  return (run.steps ?? []).find(s => s.state === 'failed');
}

/** The state each cell of the source notebook shows: cell index → its step's state. */
export function cellStates(
  run: RunInfo,
  stepCells: Readonly<Record<string, readonly number[]>>
): Map<number, RunState> {
  const out = new Map<number, RunState>();
  for (const s of run.steps ?? []) {
    for (const c of stepCells[s.name] ?? []) {
      out.set(c, s.state);
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// Log tail
// ------------------------------------------------------------------------------------------

/** One answer of `GET runs/{id}/steps/{step}/log?offset=N`. */
export interface LogChunk {
  /** The offset the request asked for. */
  offset: number;
  /** The text from that offset. */
  data: string;
  /** Where the next request starts (bytes). */
  nextOffset: number;
}

/**
 * The text of one step's log as it grows, fetched by byte offset.
 *
 * Keeps the whole log (the issue: "keeps the whole log afterwards") as complete lines plus the
 * unfinished last line, so a view renders only what changed. Answers that do not start where
 * the tail ends (a duplicate or out-of-order response) are ignored; an answer whose next offset
 * is smaller than its request's (the file was truncated: a retry restarted the log) starts over.
 */
export class LogTail {
  /** Complete lines, without their newline. */
  readonly lines: string[] = [];
  /** Text after the last newline (a line still being printed). */
  partial = '';
  /** Byte offset of the next request. */
  offset = 0;
  /** Bumped on every change, so views can memoise on it. */
  version = 0;

  /**
   * Fold in one answer. Returns true if the text changed.
   */
  apply(chunk: LogChunk): boolean {
    if (chunk.offset !== this.offset) {
      return false; // stale or duplicate: the tail already moved past (or not yet to) it
    }
    if (chunk.nextOffset < chunk.offset) {
      this.reset(); // the file is shorter than what we read: it was truncated, read it again
      return true;
    }
    this.offset = chunk.nextOffset;
    if (chunk.data === '') {
      return false;
    }
    const parts = (this.partial + chunk.data).split('\n');
    this.partial = parts.pop() as string;
    for (const p of parts) {
      this.lines.push(overprint(p));
    }
    this.version++;
    return true;
  }

  /** Forget everything and read from offset 0 again. */
  reset(): void {
    this.lines.length = 0;
    this.partial = '';
    this.offset = 0;
    this.version++;
  }

  /** The whole text (complete lines, then the partial line). */
  get text(): string {
    const body = this.lines.join('\n');
    const partial = overprint(this.partial);
    return partial ? (body ? body + '\n' : '') + partial : body;
  }

  /** The last `n` lines, counting the partial line (for compact monitors). */
  last(n: number): string[] {
    const partial = overprint(this.partial);
    const all = partial ? [...this.lines.slice(-n), partial] : this.lines.slice(-n);
    return all.slice(-n);
  }
}

/**
 * What a terminal shows for a line with carriage returns: the text after the last one (progress
 * bars such as tqdm redraw themselves with `\r`); a Windows line end is not a redraw.
 */
export function overprint(line: string): string {
  const body = line.endsWith('\r') ? line.slice(0, -1) : line;
  const cr = body.lastIndexOf('\r');
  return cr < 0 ? body : body.slice(cr + 1);
}

/**
 * When to ask for more log: soon while the step runs, once more after it finished (the final
 * bytes land after the state change), then never.
 *
 * @returns milliseconds until the next request, or null to stop.
 */
export function nextLogPoll(
  state: RunState,
  lastChunkHadData: boolean,
  finalFetched: boolean
): number | null {
  if (!isFinished(state)) {
    return lastChunkHadData ? 200 : 500;
  }
  if (lastChunkHadData || !finalFetched) {
    return 0; // drain what is left
  }
  return null;
}

/**
 * The targets the Run bar offers: `local` always; `kfp` when the server can submit to KFP (it
 * lists the target: kfp is installed there) and a host is configured — the server's (`GET
 * info`'s `kfp_host`) or the notebook's own `jupyter_pipeline.kfp.host` metadata, which the
 * server's KFP config reads too. Without a host a KFP run could only fail.
 */
export function runTargets(
  info: { targets?: string[]; kfp_host?: string | null } | null | undefined,
  notebookMetadata?: Record<string, unknown> | null
): string[] {
  const listed = info?.targets?.length ? info.targets : ['local'];
  const own = (notebookMetadata?.jupyter_pipeline as { kfp?: { host?: unknown } } | undefined)?.kfp
    ?.host;
  const host = Boolean(info?.kfp_host) || (typeof own === 'string' && own.length > 0);
  return listed.filter(t => t !== 'kfp' || host);
}
