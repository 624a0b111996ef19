// A webhook's deliveries, newest first: state, attempts (time, duration, status, outcome,
// response excerpt), and Retry for the finished ones.

import { AttemptSummary, Badge, STATES_FINISHED, formatTime, html, shortName, useEffect, useState } from "./ui.js";

const PAGE_SIZE = 25;
// How often the list is read again while a shown delivery is still pending: a retry, or a
// delivery waiting for its next attempt, shows its outcome without a click on Refresh.
const FOLLOW_MS = 2000;

function Attempts({ session, delivery }) {
  const [attempts, setAttempts] = useState(null);
  useEffect(() => {
    session.call("ListAttempts", { parent: delivery.name, pageSize: 100 }).then(
      (answer) => setAttempts(answer.attempts || []),
      (error) => session.notify(error.message, "error"),
    );
  }, [delivery.name, delivery.attemptCount, delivery.updateTime]);
  if (!attempts) return html`<p class="muted">Loading attempts…</p>`;
  if (!attempts.length) return html`<p class="muted">No attempt yet.</p>`;
  return html`<ol class="attempts">
    ${attempts.map((attempt, index) => html`<li>
      <div class="attempt-when">Attempt ${index + 1} · ${formatTime(attempt.startTime)}</div>
      <${AttemptSummary} attempt=${attempt} />
    </li>`)}
  </ol>`;
}

function DeliveryRow({ session, delivery, onRetried }) {
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const id = shortName(delivery.name);
  const retry = async () => {
    setBusy(true);
    try {
      const answer = await session.call("RetryDelivery", { name: delivery.name });
      session.notify(`Delivery ${id} sent again: ${answer.state.toLowerCase()}.`);
      onRetried();
    } catch (error) {
      session.notify(error.message, "error");
    } finally {
      setBusy(false);
    }
  };
  return html`<li class="delivery" data-delivery=${delivery.name}>
    <div class="delivery-head">
      <button type="button" class="link-button" aria-expanded=${open} onClick=${() => setOpen(!open)}>
        <span aria-hidden="true">${open ? "▾" : "▸"}</span> Delivery ${id}</button>
      <span>${delivery.eventType}</span>
      <${Badge} value=${delivery.state} />
      <span class="muted">${delivery.attemptCount || 0} attempt${delivery.attemptCount === 1 ? "" : "s"}</span>
      <span class="muted">${formatTime(delivery.createTime)}</span>
      <span class="spacer"></span>
      ${STATES_FINISHED.includes(delivery.state) && html`<button type="button" class="button small" disabled=${busy}
          onClick=${retry} aria-label=${`Retry delivery ${id}`}>Retry</button>`}
    </div>
    ${delivery.lastError && !open && html`<div class="muted small">${delivery.lastError}</div>`}
    ${open && html`<${Attempts} session=${session} delivery=${delivery} />`}
  </li>`;
}

export function DeliveriesPage({ session, webhookId }) {
  const parent = `webhooks/${webhookId}`;
  const [hook, setHook] = useState(null);
  const [deliveries, setDeliveries] = useState(null);
  const [state, setState] = useState("");
  const [version, setVersion] = useState(0);
  const reload = () => setVersion((n) => n + 1);

  useEffect(() => {
    session.call("GetWebhook", { name: parent }).then(setHook, (error) => session.notify(error.message, "error"));
  }, [webhookId]);
  useEffect(() => {
    session.call("ListDeliveries", { parent, pageSize: PAGE_SIZE, state: state || undefined }).then(
      (answer) => setDeliveries(answer.deliveries || []),
      (error) => session.notify(error.message, "error"),
    );
  }, [webhookId, state, version]);
  const following = (deliveries || []).some((delivery) => delivery.state === "PENDING");
  useEffect(() => {
    if (!following) return undefined;
    const timer = setTimeout(reload, FOLLOW_MS);
    return () => clearTimeout(timer);
  }, [deliveries]);

  return html`<section class="page">
    <header class="page-header">
      <div>
        <p class="crumbs"><a href="#/">Webhooks</a> /</p>
        <h1>Deliveries</h1>
        <p class="muted">${hook ? `${hook.resource}.${hook.event} → ${hook.url}` : parent}</p>
      </div>
      <button type="button" class="button" onClick=${reload}>Refresh</button>
    </header>
    <div class="card">
      <div class="toolbar">
        <div class="field">
          <label for="delivery-state">State</label>
          <select id="delivery-state" value=${state} onChange=${(event) => setState(event.target.value)}>
            <option value="">All</option>
            ${["PENDING", "HELD", "SUCCEEDED", "FAILED", "DISCARDED", "CANCELLED"].map(
              (value) => html`<option value=${value}>${value.toLowerCase()}</option>`)}
          </select>
        </div>
      </div>
      ${deliveries && !deliveries.length && html`<div class="empty">No deliveries yet.</div>`}
      <ul class="deliveries">
        ${(deliveries || []).map((delivery) => html`<${DeliveryRow} key=${delivery.name} session=${session}
          delivery=${delivery} onRetried=${reload} />`)}
      </ul>
    </div>
  </section>`;
}
