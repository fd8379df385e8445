/**
 * What the sidebar shows, kept up to date from the REST API and the server's
 * event bus.
 *
 * Events update a run's row in place; anything an event cannot say by itself
 * (a run we have not seen, the human queue) is refetched.  Refetches are
 * coalesced: at most one request of a kind is in flight, and calls made
 * meanwhile become one trailing request.
 */
import { Event } from '@jupyterlab/services';
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import {
  AgentorchAPI,
  ApiError,
  errorMessage,
  IInterrupt,
  IRun,
  IUnavailable
} from './api';

export const SCHEMA = {
  run: 'https://agentorch.dev/events/run',
  task: 'https://agentorch.dev/events/task',
  interrupt: 'https://agentorch.dev/events/interrupt',
  job: 'https://agentorch.dev/events/job'
} as const;

/** How often everything is refetched, whatever the events said. */
const POLL_MS = 30_000;
const PAGE = 100;

/** A job event (the end of a batch run the server started). */
export interface IJobEvent {
  job_id: string;
  run_id: string | null;
  status: string;
  notebook: string | null;
  error: string | null;
  workspace: string;
}

/** Runs one async function at a time; calls made meanwhile become one more run. */
export class Coalescer {
  constructor(private readonly fn: () => Promise<void>) {}

  /** Resolves when a fetch that started after this call has finished. */
  request(): Promise<void> {
    if (this.running) {
      if (!this.trailing) {
        const next = (): Promise<void> => {
          this.trailing = null;
          return this.start();
        };
        this.trailing = this.running.then(next, next);
      }
      return this.trailing;
    }
    return this.start();
  }

  private start(): Promise<void> {
    const done = this.fn().finally(() => {
      if (this.running === done) {
        this.running = null;
      }
    });
    this.running = done;
    return done;
  }

  private running: Promise<void> | null = null;
  private trailing: Promise<void> | null = null;
}

export class RunsModel implements IDisposable {
  constructor(readonly api: AgentorchAPI) {
    this._runsFetch = new Coalescer(() => this.fetchRuns());
    this._queueFetch = new Coalescer(() => this.fetchInterrupts());
    this._timer = window.setInterval(() => {
      if (!document.hidden) {
        void this.refresh();
      }
    }, POLL_MS);
  }

  /** Runs, newest first. */
  get runs(): readonly IRun[] {
    return this._runs;
  }

  /** How many runs the server has (it may have more than `runs` holds). */
  get total(): number {
    return this._total;
  }

  get interrupts(): readonly IInterrupt[] {
    return this._interrupts;
  }

  /** The number of tasks waiting for a human, across all runs. */
  get waiting(): number {
    return this._interrupts.length;
  }

  /** Why the last fetch of runs failed, or null. */
  get runsError(): string | null {
    return this._runsError;
  }

  /** Why the last fetch of the human queue failed, or null. */
  get queueError(): string | null {
    return this._queueError;
  }

  /** Stores the server could not read on the last fetch. */
  get unavailable(): readonly IUnavailable[] {
    return this._unavailable;
  }

  /** True once runs and interrupts have each been fetched once. */
  get loaded(): boolean {
    return this._runsLoaded && this._queueLoaded;
  }

  run(id: string): IRun | undefined {
    return this._runs.find(r => r.id === id);
  }

  /** Anything shown changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** One run's row changed in place (from an event). */
  get runChanged(): ISignal<this, IRun> {
    return this._runChanged;
  }

  /** Interrupts that appeared since the previous fetch (never on the first). */
  get newInterrupts(): ISignal<this, IInterrupt[]> {
    return this._newInterrupts;
  }

  /** A job event arrived (a batch job started, finished or failed). */
  get jobChanged(): ISignal<this, IJobEvent> {
    return this._jobChanged;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    window.clearInterval(this._timer);
    Signal.clearData(this);
  }

  /** Refetch runs and the human queue (coalesced). */
  refresh(): Promise<void> {
    return Promise.all([this.refreshRuns(), this.refreshInterrupts()]).then(
      () => undefined
    );
  }

  refreshRuns(): Promise<void> {
    return this._runsFetch.request();
  }

  refreshInterrupts(): Promise<void> {
    return this._queueFetch.request();
  }

  /** Apply one event of Jupyter Server's event bus (others are ignored). */
  handleEvent(event: Event.Emission): void {
    if (this._isDisposed) {
      return;
    }
    switch (event.schema_id) {
      case SCHEMA.run:
        this.onRunEvent(event);
        break;
      case SCHEMA.task:
        if (event.status === 'waiting_human') {
          void this.refreshInterrupts();
        }
        break;
      case SCHEMA.interrupt:
        void this.refreshInterrupts();
        break;
      case SCHEMA.job:
        void this.refreshRuns();
        this._jobChanged.emit(event as unknown as IJobEvent);
        break;
    }
  }

  private onRunEvent(event: Event.Emission): void {
    const id = String(event.run_id ?? '');
    let run = this._runs.find(r => r.id === id);
    if (!run) {
      // A run this list has not seen: show it at once from the event, and let a full read
      // (which may wait on the busy engine's hold on its store) fill in the rest.
      run = {
        id,
        store: String(event.store ?? ''),
        objective: '',
        workspace: null,
        status: 'running',
        created_at: new Date().toISOString(),
        updated_at: null,
        finished_at: null,
        tasks: 0,
        counts: {},
        cost_usd: 0,
        waiting: 0,
        live: true,
        error: null,
        job: null,
        notebook: null
      };
      this._runs.unshift(run);
      this._provisional.add(id);
      void this.refreshRuns();
    }
    const before = { status: run.status, waiting: run.waiting };
    if (typeof event.status === 'string') {
      run.status = event.status;
    }
    if (typeof event.objective === 'string') {
      run.objective = event.objective;
    }
    if (typeof event.tasks === 'number') {
      run.tasks = event.tasks;
    }
    if (event.counts && typeof event.counts === 'object') {
      run.counts = { ...(event.counts as { [status: string]: number }) };
    }
    if (typeof event.cost_usd === 'number') {
      run.cost_usd = event.cost_usd;
    }
    if (typeof event.waiting === 'number') {
      run.waiting = event.waiting;
    }
    if (typeof event.updated_at === 'string' || event.updated_at === null) {
      run.updated_at = event.updated_at as string | null;
    }
    if (typeof event.error === 'string' || event.error === null) {
      run.error = event.error as string | null;
    }
    this._runChanged.emit(run);
    this._changed.emit();
    if (before.status !== run.status) {
      // finished_at and live are not in the event.
      void this.refreshRuns();
    }
    if (before.waiting !== run.waiting) {
      void this.refreshInterrupts();
    }
  }

  private async fetchRuns(): Promise<void> {
    try {
      const page = await this.api.listRuns(0, PAGE);
      // A run shown from its events stays until a read that includes it (the read may have
      // looked at its store before the run's first commit).
      const listed = new Set(page.runs.map(r => r.id));
      const pending = this._runs.filter(r => this._provisional.has(r.id) && !listed.has(r.id));
      listed.forEach(id => this._provisional.delete(id));
      this._runs = [...pending, ...page.runs];
      this._total = page.total;
      this._unavailable = page.unavailable ?? [];
      this._runsError = null;
    } catch (error) {
      this._runsError =
        error instanceof ApiError && error.status === 404 && !error.reason
          ? 'The agentorch_nb server extension does not answer on this server ' +
            `(${error.message}). Is it installed and enabled ` +
            '(jupyter server extension list)?'
          : errorMessage(error);
    }
    this._runsLoaded = true;
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  private async fetchInterrupts(): Promise<void> {
    try {
      const { interrupts } = await this.api.interrupts();
      const fresh = interrupts.filter(i => !this._seen.has(i.id));
      for (const i of interrupts) {
        this._seen.add(i.id);
      }
      this._interrupts = interrupts;
      this._queueError = null;
      if (this._queueLoaded && fresh.length && !this._isDisposed) {
        this._newInterrupts.emit(fresh);
      }
      this._queueLoaded = true;
    } catch (error) {
      this._queueError = errorMessage(error);
    }
    if (!this._isDisposed) {
      this._changed.emit();
    }
  }

  private _runs: IRun[] = [];
  private _provisional = new Set<string>();
  private _total = 0;
  private _interrupts: IInterrupt[] = [];
  private _unavailable: IUnavailable[] = [];
  private _runsError: string | null = null;
  private _queueError: string | null = null;
  private _runsLoaded = false;
  private _queueLoaded = false;
  private _seen = new Set<string>();
  private _isDisposed = false;
  private readonly _timer: number;
  private readonly _runsFetch: Coalescer;
  private readonly _queueFetch: Coalescer;
  private readonly _changed = new Signal<this, void>(this);
  private readonly _runChanged = new Signal<this, IRun>(this);
  private readonly _newInterrupts = new Signal<this, IInterrupt[]>(this);
  private readonly _jobChanged = new Signal<this, IJobEvent>(this);
}
