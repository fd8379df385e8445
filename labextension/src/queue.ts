/**
 * The human queue: one card per task waiting for a human, across all runs,
 * with Retry / Abandon / Spawn resolved in place.
 */
import { errorMessage, ICommandStatus, IInterrupt, Resolution } from './api';
import { RunsModel } from './model';
import { field, h, lines, say, setText, submitOnCtrlEnter, uid } from './dom';

type EditorKind = 'retry' | 'abandon' | 'spawn';

const ACTION_LABEL: { [kind in EditorKind]: string } = {
  retry: 'Retry',
  abandon: 'Abandon',
  spawn: 'Spawn'
};

/** The cards of the human queue, keyed by interrupt id. */
export class QueueView {
  constructor(private readonly model: RunsModel) {
    this.node = h(
      'section',
      { class: 'ao-queue', 'aria-labelledby': 'ao-queue-heading' },
      h(
        'h3',
        { class: 'ao-section-title', id: 'ao-queue-heading', tabindex: -1 },
        'Human queue ',
        this.count
      ),
      this.error,
      this.empty,
      this.list
    );
  }

  readonly node: HTMLElement;

  /** Bring the queue into view and focus its first card (or its heading). */
  focus(): void {
    this.node.scrollIntoView({ block: 'start' });
    const first = this.list.querySelector<HTMLButtonElement>('button');
    const heading = this.node.querySelector<HTMLElement>('h3');
    (first ?? heading)?.focus();
  }

  update(): void {
    const interrupts = this.model.interrupts;
    setText(this.count, interrupts.length ? `(${interrupts.length})` : '');
    say(this.error, this.model.queueError);
    this.empty.hidden = !this.model.loaded || interrupts.length > 0;

    const keep = new Set<string>();
    let index = 0;
    for (const interrupt of interrupts) {
      keep.add(interrupt.id);
      let card = this.cards.get(interrupt.id);
      if (!card) {
        card = new InterruptCard(this.model);
        this.cards.set(interrupt.id, card);
      }
      const run = this.model.run(interrupt.run_id);
      card.update(interrupt, run?.objective ?? interrupt.objective ?? '');
      if (this.list.children[index] !== card.node) {
        this.list.insertBefore(card.node, this.list.children[index] ?? null);
      }
      index += 1;
    }
    for (const [id, card] of this.cards) {
      if (!keep.has(id)) {
        if (card.node.contains(document.activeElement)) {
          this.node.querySelector<HTMLElement>('h3')?.focus();
        }
        card.node.remove();
        this.cards.delete(id);
      }
    }
  }

  private readonly cards = new Map<string, InterruptCard>();
  private readonly count = h('span', { class: 'ao-count' });
  private readonly error = h('div', { class: 'ao-error', role: 'alert', hidden: true });
  private readonly empty = h(
    'p',
    { class: 'ao-empty', hidden: true },
    'No task is waiting for a human.'
  );
  private readonly list = h('div', { class: 'ao-interrupts', role: 'list' });
}

/** One task waiting for a human. */
class InterruptCard {
  constructor(private readonly model: RunsModel) {
    this.buttons = {
      retry: this.button('retry', 'Edit the task and try it again'),
      abandon: this.button('abandon', 'Give the task up'),
      spawn: this.button('spawn', 'Add a new task to the run instead')
    };
    this.node = h(
      'div',
      { class: 'ao-interrupt', role: 'listitem' },
      h('div', { class: 'ao-interrupt-head' }, this.title, this.kind),
      h('div', { class: 'ao-interrupt-run' }, this.objective),
      this.reason,
      this.feedback,
      h(
        'div',
        { class: 'ao-actions' },
        this.buttons.retry,
        this.buttons.abandon,
        this.buttons.spawn
      ),
      this.editor,
      this.message,
      this.error
    );
  }

  readonly node: HTMLDivElement;

  update(interrupt: IInterrupt, objective: string): void {
    this.interrupt = interrupt;
    this.node.dataset.runId = interrupt.run_id;
    this.node.dataset.taskId = interrupt.task_id;
    this.node.dataset.interruptId = interrupt.id;
    setText(this.title, interrupt.task_title || interrupt.task_id);
    this.title.title = `${interrupt.task_id} in run ${interrupt.run_id}`;
    setText(this.kind, interrupt.kind.replace(/_/g, ' '));
    setText(this.objective, objective);
    this.objective.title = objective;
    say(this.reason, interrupt.reason);
    say(
      this.feedback,
      interrupt.qa_feedback ? `QA feedback: ${interrupt.qa_feedback}` : null
    );
  }

  private button(kind: EditorKind, title: string): HTMLButtonElement {
    const button = h(
      'button',
      {
        type: 'button',
        class: `jp-mod-styled ao-button ao-${kind}`,
        title,
        'aria-expanded': 'false'
      },
      ACTION_LABEL[kind]
    );
    button.addEventListener('click', () => this.toggle(kind));
    return button;
  }

  private toggle(kind: EditorKind): void {
    if (this.open === kind) {
      this.close();
      this.buttons[kind].focus();
      return;
    }
    this.close();
    this.open = kind;
    this.buttons[kind].setAttribute('aria-expanded', 'true');
    say(this.error, null);
    say(this.message, null);
    const form =
      kind === 'retry'
        ? this.retryForm()
        : kind === 'abandon'
          ? this.abandonForm()
          : this.spawnForm();
    this.editor.replaceChildren(form);
    this.editor.hidden = false;
    form.querySelector<HTMLElement>('textarea, input')?.focus();
  }

  private close(): void {
    if (this.open) {
      this.buttons[this.open].setAttribute('aria-expanded', 'false');
    }
    this.open = null;
    this.editor.replaceChildren();
    this.editor.hidden = true;
  }

  private retryForm(): HTMLFormElement {
    const interrupt = this.interrupt!;
    const originalDescription = interrupt.description ?? '';
    const originalCriteria = interrupt.acceptance_criteria ?? [];
    const description = h('textarea', {
      class: 'ao-retry-description',
      rows: 4
    });
    description.value = originalDescription;
    const criteria = h('textarea', {
      class: 'ao-retry-criteria',
      rows: 3,
      placeholder: 'one criterion per line'
    });
    criteria.value = originalCriteria.join('\n');
    const guidance = h('textarea', {
      class: 'ao-retry-guidance',
      rows: 3,
      placeholder: 'what the next attempt should do differently'
    });
    return this.form(
      'retry',
      'Retry task',
      [
        field('Description', description),
        field('Acceptance criteria (one per line)', criteria),
        field('Guidance for the next attempt', guidance)
      ],
      () => {
        const resolution: Resolution = { action: 'retry' };
        if (description.value !== originalDescription) {
          resolution.description = description.value;
        }
        const newCriteria = lines(criteria.value);
        if (newCriteria.join('\n') !== originalCriteria.join('\n')) {
          resolution.acceptance_criteria = newCriteria;
        }
        if (guidance.value.trim()) {
          resolution.guidance = guidance.value.trim();
        }
        return resolution;
      }
    );
  }

  private abandonForm(): HTMLFormElement {
    const cascade = h('input', {
      type: 'checkbox',
      class: 'ao-cascade',
      id: uid('ao-cascade')
    });
    const check = h(
      'div',
      { class: 'ao-field ao-check' },
      cascade,
      h('label', { for: cascade.id }, 'also abandon dependents')
    );
    return this.form('abandon', 'Abandon task', [check], () => ({
      action: 'abandon',
      cascade: cascade.checked
    }));
  }

  private spawnForm(): HTMLFormElement {
    const title = h('input', { type: 'text', class: 'ao-spawn-title', required: true });
    const description = h('textarea', { class: 'ao-spawn-description', rows: 4 });
    const criteria = h('textarea', {
      class: 'ao-spawn-criteria',
      rows: 3,
      placeholder: 'one criterion per line'
    });
    return this.form(
      'spawn',
      'Spawn task',
      [
        field('Title', title),
        field('Description', description),
        field('Acceptance criteria (one per line)', criteria)
      ],
      () => {
        const resolution: Resolution = { action: 'spawn', title: title.value.trim() };
        if (description.value.trim()) {
          resolution.description = description.value.trim();
        }
        const list = lines(criteria.value);
        if (list.length) {
          resolution.acceptance_criteria = list;
        }
        return resolution;
      }
    );
  }

  /** An editor form: its fields, a submit and a close button. */
  private form(
    kind: EditorKind,
    submitLabel: string,
    fields: HTMLElement[],
    resolution: () => Resolution
  ): HTMLFormElement {
    const submit = h(
      'button',
      { type: 'submit', class: `jp-mod-styled jp-mod-accept ao-button ao-submit` },
      submitLabel
    );
    const cancel = h(
      'button',
      { type: 'button', class: 'jp-mod-styled ao-button ao-close' },
      'Close'
    );
    const form = h(
      'form',
      { class: `ao-editor-form ao-${kind}-form`, 'aria-label': submitLabel },
      ...fields,
      h('div', { class: 'ao-actions' }, submit, cancel)
    );
    cancel.addEventListener('click', () => {
      this.close();
      this.buttons[kind].focus();
    });
    form.addEventListener('keydown', (event: KeyboardEvent) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation();
        this.close();
        this.buttons[kind].focus();
      }
    });
    submitOnCtrlEnter(form);
    form.addEventListener('submit', (event: SubmitEvent) => {
      event.preventDefault();
      void this.submit(kind, resolution(), form);
    });
    return form;
  }

  private async submit(
    kind: EditorKind,
    resolution: Resolution,
    form: HTMLFormElement
  ): Promise<void> {
    const interrupt = this.interrupt;
    if (!interrupt || this.busy) {
      return;
    }
    this.busy = true;
    const controls = Array.from(
      form.querySelectorAll<HTMLButtonElement | HTMLInputElement | HTMLTextAreaElement>(
        'button, input, textarea'
      )
    );
    controls.forEach(c => (c.disabled = true));
    Object.values(this.buttons).forEach(b => (b.disabled = true));
    say(this.error, null);
    say(this.message, null);
    try {
      const answer: ICommandStatus = await this.model.api.resolve(
        interrupt.run_id,
        interrupt.task_id,
        resolution
      );
      this.close();
      say(
        this.message,
        answer.status === 'pending'
          ? `${ACTION_LABEL[kind]} sent: the run's engine applies it when it next runs.`
          : `${ACTION_LABEL[kind]} applied.`
      );
      void this.model.refresh();
    } catch (error) {
      say(this.error, errorMessage(error));
      controls.forEach(c => (c.disabled = false));
    } finally {
      this.busy = false;
      Object.values(this.buttons).forEach(b => (b.disabled = false));
    }
  }

  private interrupt: IInterrupt | null = null;
  private open: EditorKind | null = null;
  private busy = false;
  private readonly buttons: { [kind in EditorKind]: HTMLButtonElement };
  private readonly title = h('span', { class: 'ao-interrupt-title' });
  private readonly kind = h('span', { class: 'ao-badge ao-kind' });
  private readonly objective = h('span', { class: 'ao-interrupt-objective' });
  private readonly reason = h('div', { class: 'ao-interrupt-reason', hidden: true });
  private readonly feedback = h('div', { class: 'ao-qa-feedback', hidden: true });
  private readonly editor = h('div', { class: 'ao-editor', hidden: true });
  private readonly message = h('div', {
    class: 'ao-message',
    role: 'status',
    hidden: true
  });
  private readonly error = h('div', { class: 'ao-error', role: 'alert', hidden: true });
}
