// Shared pieces of the dashboard: the vendored Preact + htm, formatting, dialogs and menus.

export {
  html,
  render,
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "../vendor/htm-preact-standalone-3.1.1.js";
import { html, useEffect, useRef, useState } from "../vendor/htm-preact-standalone-3.1.1.js";

export const STATES_FINISHED = ["SUCCEEDED", "FAILED", "DISCARDED"];

/** "webhooks/wh_123" -> "wh_123". */
export function shortName(name) {
  return name.split("/").pop();
}

/** Protobuf JSON durations are strings like "0.012s". */
export function seconds(duration) {
  return duration ? parseFloat(duration) : 0;
}

export function formatMs(ms) {
  if (!ms) return "–";
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  if (ms < 10000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(1)} s`;
}

/**
 * Successes out of attempts as a percentage. Rounded down to a tenth, so "100%" means that not
 * one attempt failed (99.97% shows as 99.9%), and "0%" that not one succeeded.
 */
export function formatRate(successes, attempts) {
  const total = Number(attempts || 0);
  const ok = Number(successes || 0);
  if (!total) return "–";
  if (ok >= total) return "100%";
  if (ok <= 0) return "0%";
  // Integers divided: exact whenever the true value is a whole number of tenths.
  const tenths = Math.floor((1000 * ok) / total);
  return tenths ? `${(tenths / 10).toFixed(1)}%` : "<0.1%";
}

export function formatTime(stamp) {
  if (!stamp) return "–";
  return new Date(stamp).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function ago(stamp, now = Date.now()) {
  if (!stamp) return "never";
  const s = Math.max(0, Math.round((now - new Date(stamp).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function StatusDot({ active }) {
  return html`<span class="status ${active ? "status-active" : "status-inactive"}">
    <span class="dot" aria-hidden="true"></span>${active ? "Active" : "Inactive"}
  </span>`;
}

export function Badge({ value, kind }) {
  return html`<span class="badge badge-${kind || value.toLowerCase()}">${value.replaceAll("_", " ").toLowerCase()}</span>`;
}

/**
 * A modal <dialog>: focus stays inside, Escape or Cancel closes it, and closing it gives the
 * focus back to what had it when it opened (the browser's doing: the row's menu button, which
 * RowMenu focuses before the action). While `busy` (its action is running) it cannot be closed:
 * the action's answer must be seen.
 */
export function Dialog({ title, onClose, children, label, busy = false }) {
  const ref = useRef(null);
  useEffect(() => {
    const dialog = ref.current;
    dialog.showModal();
    return () => dialog.open && dialog.close();
  }, []);
  const cancel = (event) => {
    event.preventDefault();
    if (!busy) onClose();
  };
  // The browser closes a modal dialog itself on a second Escape even when its cancel event is
  // refused; a dialog that is still rendered is then shown again, or its closing made official.
  const closed = () => {
    const dialog = ref.current;
    if (!dialog?.isConnected || dialog.open) return;
    if (busy) dialog.showModal();
    else onClose();
  };
  return html`<dialog ref=${ref} class="dialog" aria-label=${label || title} aria-busy=${busy}
      onCancel=${cancel} onClose=${closed}>
    <h2>${title}</h2>
    ${children}
  </dialog>`;
}

/**
 * A dialog that asks before an action. While `onConfirm` runs, its buttons are disabled and
 * Escape does nothing, so a double click acts once (a second RotateSecret would retire the
 * secret the first one kept). Preact renders in a microtask, so the button is disabled before
 * the second click is handled.
 */
export function ConfirmDialog({ title, confirm, working, danger = false, onConfirm, onClose, children }) {
  const [busy, setBusy] = useState(false);
  const go = async () => {
    setBusy(true);
    try {
      await onConfirm();
    } finally {
      setBusy(false);
    }
  };
  return html`<${Dialog} title=${title} onClose=${onClose} busy=${busy}>
    ${children}
    <div class="dialog-buttons">
      <button type="button" class="button" onClick=${onClose} disabled=${busy}>Cancel</button>
      <button type="button" class="button ${danger ? "danger" : "primary"}" onClick=${go} disabled=${busy}>
        ${busy ? working : confirm}</button>
    </div>
  </${Dialog}>`;
}

/**
 * Previous / Next under a list read a page at a time: `tokens` is the stack of the page tokens
 * that led to the page shown, `next` the token of the page after it (none on the last).
 */
/** The page tokens of the page before (the first page stays the first). */
export function pageBefore(tokens) {
  return tokens.length > 1 ? tokens.slice(0, -1) : tokens;
}

export function Pager({ range, tokens, setTokens, next }) {
  return html`<footer class="pager">
    <span class="muted">${range}</span>
    <div class="pager-buttons">
      <button type="button" class="button" disabled=${tokens.length < 2}
        onClick=${() => setTokens(pageBefore)}>Previous</button>
      <button type="button" class="button" disabled=${!next}
        onClick=${() => setTokens((list) => [...list, next])}>Next</button>
    </div>
  </footer>`;
}

/** A secret shown once, with a copy button. */
export function SecretBox({ secret }) {
  const [copied, setCopied] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(secret);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };
  return html`<div class="secret">
    <label for="signing-secret">Signing secret</label>
    <div class="secret-row">
      <input id="signing-secret" readonly value=${secret} onFocus=${(e) => e.target.select()} />
      <button type="button" class="button" onClick=${copy}>${copied ? "Copied" : "Copy"}</button>
    </div>
    <p class="hint">Shown only now: keep it where your receiver can verify signatures with it.</p>
  </div>`;
}

/**
 * The ellipsis menu of a table row: a button and a list of actions, keyboard-friendly. Choosing
 * an action puts the focus back on the button first, so it is there when the action ends (and a
 * dialog the action opens gives it back there); the list closes when the focus leaves it.
 */
export function RowMenu({ label, items }) {
  const [open, setOpen] = useState(false);
  const root = useRef(null);
  const button = useRef(null);
  useEffect(() => {
    if (!open) return undefined;
    root.current.querySelector("[role=menuitem]")?.focus();
    const outside = (event) => !root.current?.contains(event.target) && setOpen(false);
    document.addEventListener("pointerdown", outside);
    return () => document.removeEventListener("pointerdown", outside);
  }, [open]);
  const onKey = (event) => {
    const entries = [...root.current.querySelectorAll("[role=menuitem]")];
    const at = entries.indexOf(document.activeElement);
    if (event.key === "Escape") {
      setOpen(false);
      button.current.focus();
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      entries[(at + step + entries.length) % entries.length]?.focus();
    }
  };
  // Only a focus that went somewhere else closes it: some browsers do not focus a clicked
  // button (no relatedTarget), and a click outside is the pointerdown listener's.
  const onFocusOut = (event) => {
    if (event.relatedTarget && !root.current.contains(event.relatedTarget)) setOpen(false);
  };
  const choose = (item) => {
    button.current.focus();
    setOpen(false);
    item.action();
  };
  // Lowercase: the element has no onfocusout property to tell Preact the event's name.
  return html`<div class="menu" ref=${root} onKeyDown=${onKey} onfocusout=${onFocusOut}>
    <button type="button" class="icon-button" ref=${button} aria-haspopup="menu" aria-expanded=${open}
        aria-label=${label} title="Actions" onClick=${() => setOpen(!open)}>
      <span aria-hidden="true">⋯</span>
    </button>
    ${open && html`<div class="menu-list" role="menu">
      ${items.map((item) => html`<button type="button" role="menuitem" class=${item.danger ? "danger" : ""}
          onClick=${() => choose(item)}>${item.label}</button>`)}
    </div>`}
  </div>`;
}

/** The outcome of one attempt, as the form's Test connection and the deliveries page show it. */
export function AttemptSummary({ attempt }) {
  const ok = attempt.outcome === "SUCCESS";
  return html`<div class="attempt ${ok ? "attempt-ok" : "attempt-failed"}" role="status">
    <div class="attempt-head">
      <${Badge} value=${attempt.outcome || "UNKNOWN"} />
      <span>${attempt.statusCode ? `HTTP ${attempt.statusCode}` : "no answer"}</span>
      <span>${formatMs(seconds(attempt.duration) * 1000)}</span>
    </div>
    ${attempt.error && html`<div class="attempt-error">${attempt.error}</div>`}
    ${attempt.responseExcerpt && html`<pre class="excerpt">${attempt.responseExcerpt}</pre>`}
  </div>`;
}
