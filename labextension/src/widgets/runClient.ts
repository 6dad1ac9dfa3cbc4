/**
 * The browser's one connection to the runs: a `GET runs` snapshot, then the server's event
 * stream (Server-Sent Events, resumed from the snapshot's cursor), folded by the run-state
 * reducer. No per-run polling: every run's changes arrive on the one stream, CLI runs included.
 * It lives in the plugin, not the sidebar, so notifications work with the sidebar closed.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';
import { API_NAMESPACE, requestAPI } from '../api/request';
import {
  EMPTY_RUNS,
  EventMessage,
  LogChunk,
  RunInfo,
  RunsEvent,
  RunsState,
  newlyFinished,
  reduceRuns,
  fromServerEvent
} from '../model/runs';

/** `POST runs` body (the server's RunRequest). */
export interface RunRequest {
  path?: string;
  notebook?: unknown;
  parameters?: Record<string, unknown>;
  target?: string;
  split?: string;
  cache?: boolean;
  max_parallel?: number | null;
  rerun?: string;
}

interface RunList {
  runs: RunInfo[];
  cursor: number;
  next_before?: number | null;
}

/** The server's log answer. */
interface LogAnswer {
  text: string;
  offset: number;
  next_offset: number;
  size: number;
  finished: boolean;
}

export type StreamStatus = 'connecting' | 'live' | 'reconnecting' | 'offline';

export class RunsClient {
  constructor(private _settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  /** The runs as the reducer holds them. */
  get state(): RunsState {
    return this._state;
  }

  /** Emitted (at most once per animation frame) after the state changed. */
  get changed(): ISignal<this, RunsState> {
    return this._changed;
  }

  /** Emitted for each run that finished, with whether this browser started it. */
  get finished(): ISignal<this, { run: RunInfo; mine: boolean }> {
    return this._finished;
  }

  get status(): StreamStatus {
    return this._status;
  }

  /** True while older runs than the first page exist (load them with `loadMore`). */
  get hasMore(): boolean {
    return this._nextBefore !== null;
  }

  /** Whether this browser session started the run (its end gets a notification). */
  isMine(id: string): boolean {
    return this._mine.has(id);
  }

  /** Load the newest runs and subscribe to the event stream after them. */
  async start(): Promise<void> {
    if (this._disposed) {
      return;
    }
    this._setStatus('connecting');
    const list = await requestAPI<RunList>('runs?limit=200', {}, this._settings);
    this._nextBefore = list.next_before ?? null;
    this._apply({ kind: 'snapshot', runs: list.runs, seq: list.cursor });
    this._connect(list.cursor);
  }

  /** The next page of older runs ("all runs" on demand). */
  async loadMore(): Promise<void> {
    if (this._nextBefore === null) {
      return;
    }
    const list = await requestAPI<RunList>(
      `runs?limit=200&before=${encodeURIComponent(String(this._nextBefore))}`,
      {},
      this._settings
    );
    this._nextBefore = list.next_before ?? null;
    this._apply({ kind: 'snapshot', runs: list.runs });
  }

  /** Start a run; it shows at once (its record is fetched) and its end is notified. */
  async startRun(request: RunRequest): Promise<RunInfo> {
    const created = await requestAPI<{ id: string; state: string }>(
      'runs',
      { method: 'POST', body: JSON.stringify(request) },
      this._settings
    );
    this._mine.add(created.id);
    const run = await requestAPI<RunInfo>(`runs/${created.id}`, {}, this._settings);
    this._apply({ kind: 'run', run });
    return run;
  }

  /** Ask the server to cancel a run (its kernels and runner process stop). */
  async cancel(id: string): Promise<void> {
    const run = await requestAPI<RunInfo>(`runs/${id}`, { method: 'DELETE' }, this._settings);
    if (run && typeof run === 'object' && 'id' in run) {
      this._apply({ kind: 'run', run });
    }
  }

  /** Re-read one run (e.g. after a missed stream or for the run view). */
  async refresh(id: string): Promise<RunInfo> {
    const run = await requestAPI<RunInfo>(`runs/${id}`, {}, this._settings);
    this._apply({ kind: 'run', run });
    return run;
  }

  /** One log request from `offset`. */
  async log(id: string, step: string, offset: number): Promise<LogChunk & { finished: boolean }> {
    const a = await requestAPI<LogAnswer>(
      `runs/${id}/steps/${encodeURIComponent(step)}/log?offset=${offset}`,
      {},
      this._settings
    );
    // The server clamps an offset past the end (a truncated file) to the size: the tail sees
    // a next offset below its own and starts over.
    return { offset, data: a.text, nextOffset: a.next_offset, finished: a.finished };
  }

  /** The executed step notebook (nbformat JSON). */
  stepNotebook(id: string, step: string): Promise<any> {
    return requestAPI(`runs/${id}/steps/${encodeURIComponent(step)}/notebook`, {}, this._settings);
  }

  /** The merged executed notebook of the run (nbformat JSON). */
  mergedNotebook(id: string): Promise<any> {
    return requestAPI(`runs/${id}/notebook`, {}, this._settings);
  }

  dispose(): void {
    this._disposed = true;
    this._source?.close();
    this._source = null;
    if (this._frame !== null) {
      cancelAnimationFrame(this._frame);
    }
    Signal.clearData(this);
  }

  /** Fold an event in; emit `changed` on the next frame and `finished` for runs that ended. */
  private _apply(event: RunsEvent): void {
    const before = this._state;
    const after = reduceRuns(before, event);
    if (after === before) {
      return;
    }
    this._state = after;
    for (const id of newlyFinished(before, after)) {
      this._finished.emit({ run: after.runs[id], mine: this._mine.has(id) });
    }
    for (const id of after.incomplete) {
      this._fetchIncomplete(id);
    }
    if (this._frame === null) {
      this._frame = requestAnimationFrame(() => {
        this._frame = null;
        this._changed.emit(this._state);
      });
    }
  }

  private _fetchIncomplete(id: string): void {
    if (this._fetching.has(id)) {
      return;
    }
    this._fetching.add(id);
    void this.refresh(id)
      .catch(() => undefined)
      .finally(() => this._fetching.delete(id));
  }

  private _connect(after: number): void {
    const token = this._settings.token;
    let url = URLExt.join(this._settings.baseUrl, API_NAMESPACE, 'events') + `?after=${after}`;
    if (token) {
      url += `&token=${encodeURIComponent(token)}`; // EventSource cannot send headers
    }
    const source = new EventSource(url, { withCredentials: true });
    this._source = source;
    source.onopen = () => this._setStatus('live');
    source.onmessage = (ev: MessageEvent) => {
      try {
        this._apply(fromServerEvent(JSON.parse(ev.data) as EventMessage));
      } catch (error) {
        console.warn('jupyter-pipeline: bad event', error, ev.data);
      }
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. the server answered an error): start over from a fresh
        // snapshot after a pause; the reducer merges it without losing anything.
        this._setStatus('offline');
        source.close();
        if (!this._disposed) {
          setTimeout(() => void this.start().catch(() => this._setStatus('offline')), 3000);
        }
      } else {
        // EventSource reconnects by itself and resumes with Last-Event-ID.
        this._setStatus('reconnecting');
      }
    };
  }

  private _setStatus(status: StreamStatus): void {
    if (status !== this._status) {
      this._status = status;
      this._changed.emit(this._state);
    }
  }

  private _state: RunsState = EMPTY_RUNS;
  private _changed = new Signal<this, RunsState>(this);
  private _finished = new Signal<this, { run: RunInfo; mine: boolean }>(this);
  private _status: StreamStatus = 'connecting';
  private _source: EventSource | null = null;
  private _frame: number | null = null;
  private _mine = new Set<string>();
  private _fetching = new Set<string>();
  private _nextBefore: number | null = null;
  private _disposed = false;
}
