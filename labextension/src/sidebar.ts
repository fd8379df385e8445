/**
 * The "Agent runs" sidebar: a new-run form, the runs with their progress,
 * and the human queue.
 */
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { errorMessage, IJob, IRun } from './api';
import {
  elapsedSeconds,
  field,
  formatCost,
  formatElapsed,
  h,
  pauseGlyph,
  say,
  setText,
  submitOnCtrlEnter
} from './dom';
import { IJobEvent, RunsModel } from './model';
import { QueueView } from './queue';

/** What the panel needs from the application. */
export interface IPanelOptions {
  model: RunsModel;
  /** Open a file (relative to the server root) in the main area. */
  openPath: (path: string) => Promise<void>;
  /** Open a run's dashboard notebook and run it. */
  openDashboard: (runId: string) => Promise<void>;
}

const FINISHED = new Set(['completed', 'failed', 'cancelled']);

export class AgentRunsPanel extends Widget {
  constructor(private readonly options: IPanelOptions) {
    super();
    this.id = 'agentorch-runs';
    this.addClass('ao-sidebar');
    this.title.caption = 'Agent runs';
    this.model = options.model;
    this.queue = new QueueView(this.model);

    const newRun = h(
      'button',
      {
        type: 'button',
        class: 'jp-mod-styled jp-mod-accept ao-button ao-new-run',
        'aria-expanded': 'false'
      },
      'New run'
    );
    newRun.addEventListener('click', () => {
      if (this.form.hidden) {
        this.showNewRunForm();
      } else {
        this.hideNewRunForm();
      }
    });
    this.newRunButton = newRun;
    const refresh = h(
      'button',
      {
        type: 'button',
        class: 'jp-mod-styled ao-button ao-refresh',
        title: 'Refresh agent runs'
      },
      'Refresh'
    );
    refresh.addEventListener('click', () => void this.model.refresh());

    this.node.append(
      h(
        'header',
        { class: 'ao-header' },
        h('h2', { class: 'ao-title' }, 'Agent runs'),
        h('div', { class: 'ao-header-actions' }, newRun, refresh)
      ),
      this.buildForm(),
      this.jobs,
      h(
        'section',
        { class: 'ao-runs-section', 'aria-labelledby': 'ao-runs-heading' },
        h(
          'h3',
          { class: 'ao-section-title', id: 'ao-runs-heading' },
          'Runs ',
          this.runCount
        ),
        this.runsError,
        this.unavailable,
        this.runsEmpty,
        this.runList,
        this.more
      ),
      this.queue.node
    );

    this.model.changed.connect(this.render, this);
    this.model.runChanged.connect((_, run) => this.rows.get(run.id)?.update(run), this);
    this.model.jobChanged.connect((_, event) => this.onJob(event), this);
    this.render();
  }

  readonly model: RunsModel;

  /** Open the new-run form and focus its objective. */
  showNewRunForm(): void {
    this.form.hidden = false;
    this.newRunButton.setAttribute('aria-expanded', 'true');
    this.objective.focus();
  }

  hideNewRunForm(): void {
    this.form.hidden = true;
    this.newRunButton.setAttribute('aria-expanded', 'false');
  }

  /** Scroll to the human queue and focus it. */
  focusQueue(): void {
    this.queue.focus();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    window.clearInterval(this.ticker);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.model.refresh();
    this.tick();
    window.clearInterval(this.ticker);
    this.ticker = window.setInterval(() => this.tick(), 1000);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    window.clearInterval(this.ticker);
  }

  private buildForm(): HTMLFormElement {
    const submit = h(
      'button',
      { type: 'submit', class: 'jp-mod-styled jp-mod-accept ao-button ao-submit' },
      'Start run'
    );
    const close = h(
      'button',
      { type: 'button', class: 'jp-mod-styled ao-button ao-close' },
      'Close'
    );
    close.addEventListener('click', () => {
      this.hideNewRunForm();
      this.newRunButton.focus();
    });
    this.form.append(
      field('Objective', this.objective),
      field('Workspace (folder relative to the server root)', this.workspace),
      field('Model', this.modelName),
      field('Workers', this.workers),
      h('div', { class: 'ao-actions' }, submit, close),
      this.formError
    );
    submitOnCtrlEnter(this.form);
    this.form.addEventListener('keydown', (event: KeyboardEvent) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        this.hideNewRunForm();
        this.newRunButton.focus();
      }
    });
    this.form.addEventListener('submit', (event: SubmitEvent) => {
      event.preventDefault();
      void this.startRun(submit);
    });
    return this.form;
  }

  private async startRun(submit: HTMLButtonElement): Promise<void> {
    const objective = this.objective.value.trim();
    if (!objective) {
      say(this.formError, 'Say what the run should achieve.');
      this.objective.focus();
      return;
    }
    const workers = Number.parseInt(this.workers.value, 10);
    submit.disabled = true;
    say(this.formError, null);
    try {
      const { job } = await this.model.api.startRun({
        objective,
        workspace: this.workspace.value.trim(),
        model: this.modelName.value.trim() || 'demo',
        workers: Number.isFinite(workers) ? workers : 3
      });
      this.objective.value = '';
      this.hideNewRunForm();
      this.showJob(job, 'Started');
      void this.model.refreshRuns();
    } catch (error) {
      say(this.formError, errorMessage(error));
    } finally {
      submit.disabled = false;
    }
  }

  /** Show a batch job (started here, or one that failed) above the runs. */
  private showJob(job: IJob | IJobEvent, verb?: string): void {
    const id = 'id' in job ? job.id : job.job_id;
    let notice = this.jobNotices.get(id);
    if (!notice) {
      notice = new JobNotice(id, this.options.openPath, () => {
        notice!.node.remove();
        this.jobNotices.delete(id);
      });
      this.jobNotices.set(id, notice);
      this.jobs.prepend(notice.node);
    }
    notice.update(job, verb);
  }

  private onJob(event: IJobEvent): void {
    if (this.jobNotices.has(event.job_id) || event.status === 'failed') {
      this.showJob(event);
    }
  }

  private render(): void {
    const model = this.model;
    setText(this.runCount, model.total ? `(${model.total})` : '');
    say(this.runsError, model.runsError);
    say(
      this.unavailable,
      model.unavailable.length
        ? 'Not readable now: ' +
            model.unavailable.map(u => `${u.store} (${u.message})`).join('; ')
        : null
    );
    this.runsEmpty.hidden = model.runs.length > 0 || !model.loaded || !!model.runsError;
    say(
      this.more,
      model.total > model.runs.length
        ? `${model.total - model.runs.length} older runs are not listed.`
        : null
    );

    const keep = new Set<string>();
    let index = 0;
    for (const run of model.runs) {
      keep.add(run.id);
      let row = this.rows.get(run.id);
      if (!row) {
        row = new RunRow(this.model, this.options, job => this.showJob(job, 'Restarted'));
        this.rows.set(run.id, row);
      }
      row.update(run);
      if (this.runList.children[index] !== row.node) {
        this.runList.insertBefore(row.node, this.runList.children[index] ?? null);
      }
      index += 1;
    }
    for (const [id, row] of this.rows) {
      if (!keep.has(id)) {
        row.node.remove();
        this.rows.delete(id);
      }
    }
    this.queue.update();
  }

  private tick(): void {
    const now = Date.now();
    for (const row of this.rows.values()) {
      row.tick(now);
    }
  }

  private ticker = 0;
  private readonly queue: QueueView;
  private readonly newRunButton: HTMLButtonElement;
  private readonly rows = new Map<string, RunRow>();
  private readonly jobNotices = new Map<string, JobNotice>();
  private readonly form = h('form', {
    class: 'ao-new-run-form',
    'aria-label': 'New agent run',
    hidden: true
  });
  private readonly objective = h('textarea', {
    class: 'ao-objective-input',
    name: 'objective',
    rows: 3,
    required: true,
    placeholder: 'What should the agents achieve?'
  });
  private readonly workspace = h('input', {
    type: 'text',
    class: 'ao-workspace-input',
    name: 'workspace',
    placeholder: 'e.g. projects/my-repo',
    spellcheck: 'false'
  });
  private readonly modelName = h('input', {
    type: 'text',
    class: 'ao-model-input',
    name: 'model',
    value: 'demo',
    spellcheck: 'false'
  });
  private readonly workers = h('input', {
    type: 'number',
    class: 'ao-workers-input',
    name: 'workers',
    value: 3,
    min: 1,
    max: 32,
    step: 1
  });
  private readonly formError = h('div', { class: 'ao-error', role: 'alert', hidden: true });
  private readonly jobs = h('div', { class: 'ao-jobs', 'aria-live': 'polite' });
  private readonly runCount = h('span', { class: 'ao-count' });
  private readonly runsError = h('div', { class: 'ao-error', role: 'alert', hidden: true });
  private readonly unavailable = h('div', { class: 'ao-warning', hidden: true });
  private readonly runsEmpty = h(
    'p',
    { class: 'ao-empty', hidden: true },
    'No runs yet. Start one with "New run".'
  );
  private readonly runList = h('div', { class: 'ao-runs', role: 'list' });
  private readonly more = h('p', { class: 'ao-more', hidden: true });
}

/** A batch job's line: its status, notebook and error. */
class JobNotice {
  constructor(
    readonly id: string,
    private readonly openPath: (path: string) => Promise<void>,
    dismiss: () => void
  ) {
    const close = h(
      'button',
      {
        type: 'button',
        class: 'ao-link-button ao-dismiss',
        title: 'Dismiss',
        'aria-label': `Dismiss job ${id}`
      },
      '×'
    );
    close.addEventListener('click', dismiss);
    this.link.addEventListener('click', event => {
      event.preventDefault();
      if (this.notebook) {
        void this.openPath(this.notebook);
      }
    });
    this.node = h('div', { class: 'ao-job', 'data-job-id': id }, this.text, this.link, close);
  }

  readonly node: HTMLDivElement;

  update(job: IJob | IJobEvent, verb?: string): void {
    const status = job.status;
    const runId = job.run_id ?? '';
    this.node.dataset.runId = runId;
    this.node.dataset.status = status;
    this.node.classList.toggle('ao-job-failed', status === 'failed');
    if (verb) {
      this.verb = verb;
    }
    let text = `${this.verb} job ${this.id}${runId ? ` (run ${runId})` : ''}: ${status}`;
    if (job.error) {
      text += ` — ${job.error}`;
    }
    setText(this.text, text);
    this.notebook = job.notebook;
    this.link.hidden = !job.notebook;
  }

  private verb = 'Job';
  private notebook: string | null = null;
  private readonly text = h('span', { class: 'ao-job-text' });
  private readonly link = h(
    'a',
    { class: 'ao-notebook', href: '#', hidden: true, title: 'Open the job notebook' },
    'notebook'
  );
}

/** One run: status, objective, progress, cost, elapsed time and actions. */
class RunRow {
  constructor(
    private readonly model: RunsModel,
    private readonly options: IPanelOptions,
    private readonly onJob: (job: IJob) => void
  ) {
    this.dashboard = this.button('ao-open-dashboard', 'Open dashboard', () =>
      this.options.openDashboard(this.run!.id)
    );
    this.cancel = this.button('ao-cancel', 'Cancel', async () => {
      const answer = await this.model.api.cancel(this.run!.id);
      say(
        this.message,
        answer.status === 'pending' ? 'Cancel sent: applied when the run next runs.' : null
      );
      void this.model.refreshRuns();
    });
    this.restart = this.button('ao-restart', 'Restart', async () => {
      const { job } = await this.model.api.restart(this.run!.id);
      this.onJob(job);
      void this.model.refreshRuns();
    });
    this.link.addEventListener('click', event => {
      event.preventDefault();
      if (this.run?.notebook) {
        void this.options.openPath(this.run.notebook).catch(error =>
          say(this.error, errorMessage(error))
        );
      }
    });
    this.node = h(
      'div',
      { class: 'ao-run', role: 'listitem' },
      h('div', { class: 'ao-run-head' }, this.badge, this.objective, this.waiting),
      h(
        'div',
        { class: 'ao-run-stats' },
        this.progress,
        this.progressText,
        this.cost,
        this.elapsed
      ),
      h(
        'div',
        { class: 'ao-actions' },
        this.dashboard,
        this.cancel,
        this.restart,
        this.link
      ),
      this.runError,
      this.message,
      this.error
    );
  }

  readonly node: HTMLDivElement;

  update(run: IRun): void {
    this.run = run;
    const node = this.node;
    node.dataset.runId = run.id;
    node.dataset.status = run.status;
    node.dataset.store = run.store;

    setText(this.badge, run.status);
    this.badge.className = `ao-badge ao-status ao-status-${run.status.replace(/[^\w-]/g, '')}`;
    setText(this.objective, run.objective || run.id);
    this.objective.title = `${run.objective}\n\n${run.id}${run.workspace ? ` in ${run.workspace}` : ''}`;
    setText(this.waitingCount, String(run.waiting));
    this.waiting.hidden = !run.waiting;
    this.waiting.title = `${run.waiting} task(s) waiting for a human`;

    const done = run.counts?.complete ?? 0;
    const total = run.tasks ?? 0;
    this.progress.max = Math.max(total, 1);
    this.progress.value = Math.min(done, Math.max(total, 1));
    this.progress.setAttribute('aria-label', `${done} of ${total} tasks complete`);
    setText(this.progressText, `${done}/${total}`);
    setText(this.cost, formatCost(run.cost_usd));

    // Cancel while the run can still act; Restart when no engine holds it
    // (the server refuses to restart a live run).
    this.cancel.hidden = FINISHED.has(run.status);
    this.restart.hidden = run.live === true || run.status === 'completed';
    this.link.hidden = !run.notebook;
    say(this.runError, run.status === 'failed' || run.error ? run.error : null);
    this.tick(Date.now());
  }

  /** Update the elapsed time (live while the run has not finished). */
  tick(now: number): void {
    const run = this.run;
    if (!run) {
      return;
    }
    const end = run.finished_at ?? (FINISHED.has(run.status) ? run.updated_at : null);
    setText(this.elapsed, formatElapsed(elapsedSeconds(run.created_at, end, now)));
  }

  private button(
    className: string,
    label: string,
    action: () => Promise<void>
  ): HTMLButtonElement {
    const button = h(
      'button',
      { type: 'button', class: `jp-mod-styled ao-button ${className}` },
      label
    );
    button.addEventListener('click', async () => {
      button.disabled = true;
      say(this.error, null);
      say(this.message, null);
      try {
        await action();
      } catch (error) {
        say(this.error, errorMessage(error));
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  private run: IRun | null = null;
  private readonly dashboard: HTMLButtonElement;
  private readonly cancel: HTMLButtonElement;
  private readonly restart: HTMLButtonElement;
  private readonly badge = h('span', { class: 'ao-badge ao-status' });
  private readonly objective = h('span', { class: 'ao-objective' });
  private readonly waitingCount = h('span', { class: 'ao-waiting-count' });
  private readonly waiting = h(
    'span',
    { class: 'ao-waiting', hidden: true },
    pauseGlyph(),
    this.waitingCount
  );
  private readonly progress = h('progress', { class: 'ao-progress', max: 1, value: 0 });
  private readonly progressText = h('span', { class: 'ao-progress-text' });
  private readonly cost = h('span', { class: 'ao-cost', title: 'Spend so far' });
  private readonly elapsed = h('span', { class: 'ao-elapsed', title: 'Elapsed time' });
  private readonly link = h(
    'a',
    { class: 'ao-notebook', href: '#', hidden: true, title: 'Open the batch notebook' },
    'notebook'
  );
  private readonly runError = h('div', { class: 'ao-run-error', hidden: true });
  private readonly message = h('div', { class: 'ao-message', role: 'status', hidden: true });
  private readonly error = h('div', { class: 'ao-error', role: 'alert', hidden: true });
}
