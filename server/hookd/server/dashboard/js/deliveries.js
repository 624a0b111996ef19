// A webhook's deliveries, newest first, a page at a time: state, attempts (time, duration,
// status, outcome, response excerpt), and Retry for the finished ones.

import {
  AttemptSummary,
  Badge,
  Pager,
  STATES_FINISHED,
  formatTime,
  html,
  pageBefore,
  shortName,
  useEffect,
  useRef,
  useState,
} from "./ui.js";

const PAGE_SIZE = 25;
// How often the list is read again while a shown delivery is still pending: a retry, or a
// delivery waiting for its next attempt, shows its outcome without a click on Refresh.
const FOLLOW_MS = 2000;

function Attempts({ session, delivery }) {
  const [attempts, setAttempts] = useState(null);
  useEffect(() => {
    // The delivery can change again before an answer comes: only the latest read is shown.
    let current = true;
    session.call("ListAttempts", { parent: delivery.name, pageSize: 100 }).then(
      (answer) => current && setAttempts(answer.attempts || []),
      (error) => current && session.notify(error.message, "error"),
    );
    return () => { current = false; };
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

/**
 * The list's current page, read again on Refresh, after a retry and every FOLLOW_MS while a
 * delivery it shows is pending. Reads overlap (a follow-up read, Refresh, a new filter): only
 * the latest one's answer is shown. A failed read is announced once until one succeeds, and
 * does not stop the following.
 */
function useDeliveryPage(session, parent, state, pageToken, setTokens) {
  const [page, setPage] = useState(null);
  const [version, setVersion] = useState(0);
  // Reads that ended, answered or failed: the next follow-up read is timed from each.
  const [reads, setReads] = useState(0);
  const failing = useRef(false);
  const reload = () => setVersion((n) => n + 1);

  useEffect(() => {
    let current = true;
    session.call("ListDeliveries", { parent, pageSize: PAGE_SIZE, pageToken, state: state || undefined }).then((answer) => {
      if (!current) return;
      failing.current = false;
      setPage(answer);
      // A page past the first that emptied (its deliveries changed state): show the one before.
      if (!answer.deliveries?.length) setTokens(pageBefore);
    }, (error) => {
      if (!current) return;
      if (!failing.current) session.notify(error.message, "error");
      failing.current = true;
    }).finally(() => current && setReads((n) => n + 1));
    return () => { current = false; };
  }, [parent, state, pageToken, version]);

  const following = (page?.deliveries || []).some((delivery) => delivery.state === "PENDING");
  useEffect(() => {
    if (!following) return undefined;
    const timer = setTimeout(reload, FOLLOW_MS);
    return () => clearTimeout(timer);
  }, [reads]);
  return [page, reload];
}

export function DeliveriesPage({ session, webhookId }) {
  const parent = `webhooks/${webhookId}`;
  const [hook, setHook] = useState(null);
  const [state, setState] = useState("");
  const [tokens, setTokens] = useState([""]);
  const [page, reload] = useDeliveryPage(session, parent, state, tokens[tokens.length - 1], setTokens);
  const deliveries = page?.deliveries || [];
  const first = (tokens.length - 1) * PAGE_SIZE;

  useEffect(() => {
    session.call("GetWebhook", { name: parent }).then(setHook, (error) => session.notify(error.message, "error"));
  }, [webhookId]);
  const filter = (event) => {
    setState(event.target.value);
    setTokens([""]);
  };

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
          <select id="delivery-state" value=${state} onChange=${filter}>
            <option value="">All</option>
            ${["PENDING", "HELD", "SUCCEEDED", "FAILED", "DISCARDED", "CANCELLED"].map(
              (value) => html`<option value=${value}>${value.toLowerCase()}</option>`)}
          </select>
        </div>
      </div>
      ${page && !deliveries.length && tokens.length === 1 && html`<div class="empty">
        ${state ? "No delivery matches." : "No deliveries yet."}</div>`}
      <ul class="deliveries">
        ${deliveries.map((delivery) => html`<${DeliveryRow} key=${delivery.name} session=${session}
          delivery=${delivery} onRetried=${reload} />`)}
      </ul>
      <${Pager} range=${deliveries.length ? `${first + 1}–${first + deliveries.length}` : ""} tokens=${tokens}
        setTokens=${setTokens} next=${page?.nextPageToken} />
    </div>
  </section>`;
}
