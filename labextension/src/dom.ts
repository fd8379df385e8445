/**
 * Small helpers for building the sidebar's plain DOM.
 */

export type Child = Node | string | null | undefined | false;

export interface IAttrs {
  [name: string]: string | number | boolean | null | undefined;
}

/**
 * Create an element.  Attributes that are `false`, `null` or `undefined` are
 * left out, `true` sets an empty attribute (`hidden`, `required`, ...).
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: IAttrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) {
      continue;
    }
    node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    node.append(child);
  }
  return node;
}

let counter = 0;

/** A document-unique id, for `<label for=...>`. */
export function uid(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter}`;
}

/** A labelled form field: `<div><label for=id>text</label>control</div>`. */
export function field(
  text: string,
  control: HTMLInputElement | HTMLTextAreaElement,
  className = 'ao-field'
): HTMLDivElement {
  if (!control.id) {
    control.id = uid('ao-field');
  }
  return h(
    'div',
    { class: className },
    h('label', { for: control.id }, text),
    control
  );
}

/** Show a message in a (normally hidden) element, or hide it when empty. */
export function say(node: HTMLElement, message: string | null): void {
  node.textContent = message ?? '';
  node.hidden = !message;
}

/** Set text only when it differs (keeps text selections and screen readers calm). */
export function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

/** `$0.0123` */
export function formatCost(usd: number): string {
  return `$${(Number.isFinite(usd) ? usd : 0).toFixed(4)}`;
}

/** Seconds between two ISO timestamps (`end` null: now), or null. */
export function elapsedSeconds(
  start: string | null,
  end: string | null,
  now: number = Date.now()
): number | null {
  if (!start) {
    return null;
  }
  const from = Date.parse(start);
  const to = end ? Date.parse(end) : now;
  if (Number.isNaN(from) || Number.isNaN(to)) {
    return null;
  }
  return Math.max(0, Math.floor((to - from) / 1000));
}

/** `42s`, `3m 04s`, `1h 02m` */
export function formatElapsed(seconds: number | null): string {
  if (seconds === null) {
    return '';
  }
  const h_ = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h_ > 0) {
    return `${h_}h ${String(m).padStart(2, '0')}m`;
  }
  if (m > 0) {
    return `${m}m ${String(s).padStart(2, '0')}s`;
  }
  return `${s}s`;
}

/** Split a textarea's text into non-empty trimmed lines. */
export function lines(text: string): string[] {
  return text
    .split('\n')
    .map(line => line.trim())
    .filter(line => line.length > 0);
}

/**
 * Submit a form with Ctrl/Cmd+Enter from any of its textareas (Enter in a
 * textarea is a newline; Enter in an input submits the form natively).
 */
export function submitOnCtrlEnter(form: HTMLFormElement): void {
  form.addEventListener('keydown', (event: KeyboardEvent) => {
    if (
      event.key === 'Enter' &&
      (event.ctrlKey || event.metaKey) &&
      event.target instanceof HTMLTextAreaElement
    ) {
      event.preventDefault();
      event.stopPropagation();
      form.requestSubmit();
    }
  });
}

/** A small "paused" glyph (two bars), drawn so it does not depend on the font. */
export function pauseGlyph(): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 10 10');
  svg.setAttribute('width', '10');
  svg.setAttribute('height', '10');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'ao-pause-glyph');
  for (const x of ['1.5', '6']) {
    const bar = document.createElementNS(ns, 'rect');
    bar.setAttribute('x', x);
    bar.setAttribute('y', '1');
    bar.setAttribute('width', '2.5');
    bar.setAttribute('height', '8');
    bar.setAttribute('fill', 'currentColor');
    svg.append(bar);
  }
  return svg;
}
