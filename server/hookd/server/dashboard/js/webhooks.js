// The Webhooks page: search, filters, paging, live delivery figures, and each row's actions.

import {
  AttemptSummary,
  ConfirmDialog,
  Dialog,
  Pager,
  RowMenu,
  SecretBox,
  StatusDot,
  ago,
  formatRate,
  html,
  pageBefore,
  shortName,
  useEffect,
  useMemo,
  useRef,
  useState,
} from "./ui.js";

const PAGE_SIZE = 20;
const SEARCH_DELAY_MS = 250;
const DAY = "86400s";
const RECONNECT_MS = 3000;

function useDebounced(value, delay) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), delay);
    return () => clearTimeout(timer);
  }, [value, delay]);
  return settled;
}

/**
 * Live figures for the webhooks on the page, from StreamHealth (no polling). A stream that ends
 * (a restart, a dropped connection) is opened again after a pause; one that ends NOT_FOUND
 * names a webhook deleted elsewhere, so the list is read again (and its new names open a new
 * stream; the pause is only a fallback should the list come back the same).
 */
function useWebhookHealth(session, names, reload) {
  const [health, setHealth] = useState({});
  const [attempt, setAttempt] = useState(0);
  const key = names.join(",");
  useEffect(() => {
    if (!names.length) return undefined;
    let timer;
    const stop = session.stream("StreamHealth", { webhooks: names, interval: "2s" }, (snapshot) => {
      setHealth(Object.fromEntries((snapshot.webhooks || []).map((stats) => [stats.key, stats])));
    }, (error) => {
      if (error?.code === "not_found") reload();
      timer = setTimeout(() => setAttempt((n) => n + 1), RECONNECT_MS);
    });
    return () => { stop(); clearTimeout(timer); };
  }, [key, attempt]);
  return health;
}

function instant(stamp) {
  return stamp ? Date.parse(stamp) : -Infinity;
}

function LastDelivery({ stats }) {
  if (!stats || (!stats.lastSuccessTime && !stats.lastFailureTime)) return html`<span class="muted">No deliveries yet</span>`;
  // As instants: protobuf JSON leaves out a zero fraction ("…:00Z" vs "…:00.250Z"), so the
  // strings do not sort as the times do.
  const failed = instant(stats.lastFailureTime) > instant(stats.lastSuccessTime);
  const when = failed ? stats.lastFailureTime : stats.lastSuccessTime;
  return html`<span class=${failed ? "outcome-failed" : "outcome-ok"} title=${failed ? stats.lastError : ""}>
    ${failed ? "Failed" : "Succeeded"}<span class="muted"> · ${ago(when)}</span>
  </span>`;
}

function DayRate({ stats }) {
  const day = stats?.windows?.find((window) => window.window === DAY);
  const attempts = Number(day?.attempts || 0);
  return html`<span title=${attempts ? `${day.successes || 0} of ${attempts} attempts` : "no attempts"}>
    ${formatRate(day?.successes, attempts)}</span>`;
}

function Toolbar({ eventTypes, filters, setFilters }) {
  const resources = [...new Set(eventTypes.map((type) => type.resource))];
  const set = (name) => (event) => setFilters({ ...filters, [name]: event.target.value });
  return html`<div class="toolbar" role="search">
    <div class="field field-search">
      <label for="search">Search</label>
      <input id="search" type="search" placeholder="Resource, event or URL" value=${filters.query}
        onInput=${set("query")} maxlength="500" />
    </div>
    <div class="field">
      <label for="filter-status">Status</label>
      <select id="filter-status" value=${filters.status} onChange=${set("status")}>
        <option value="">All</option><option value="ACTIVE">Active</option><option value="INACTIVE">Inactive</option>
      </select>
    </div>
    <div class="field">
      <label for="filter-resource">Resource</label>
      <select id="filter-resource" value=${filters.resource} onChange=${set("resource")}>
        <option value="">All</option>
        ${resources.map((resource) => html`<option value=${resource}>${resource}</option>`)}
      </select>
    </div>
  </div>`;
}

function Row({ hook, stats, actions }) {
  const active = hook.status === "ACTIVE";
  const label = `${hook.resource}.${hook.event} to ${hook.url}`;
  const items = [
    { label: "Edit", action: () => actions.edit(hook) },
    { label: "Deliveries", action: () => actions.deliveries(hook) },
    { label: "Test", action: () => actions.test(hook) },
    { label: active ? "Deactivate" : "Activate", action: () => actions.setActive(hook, !active) },
    { label: "Rotate secret", action: () => actions.rotate(hook) },
    { label: "Delete", action: () => actions.remove(hook), danger: true },
  ];
  return html`<tr data-name=${hook.name}>
    <td data-label="Resource">${hook.resource}</td>
    <td data-label="Event">${hook.event}</td>
    <td data-label="URL" class="url"><span title=${hook.url}>${hook.url}</span>
      ${hook.description && html`<div class="muted small">${hook.description}</div>`}</td>
    <td data-label="Status"><${StatusDot} active=${active} /></td>
    <td data-label="Last delivery"><${LastDelivery} stats=${stats} /></td>
    <td data-label="Success (24 h)" class="number"><${DayRate} stats=${stats} /></td>
    <td class="actions"><${RowMenu} label=${`Actions for ${label}`} items=${items} /></td>
  </tr>`;
}

export function WebhooksPage({ session }) {
  const [filters, setFilters] = useState({ query: "", status: "", resource: "" });
  const query = useDebounced(filters.query, SEARCH_DELAY_MS);
  const [tokens, setTokens] = useState([""]);
  const [page, setPage] = useState(null);
  const [error, setError] = useState(null);
  const [dialog, setDialog] = useState(null);
  const shown = useRef(null);
  const [version, setVersion] = useState(0);
  // Functional: two actions that end together must each read the list again.
  const reload = () => setVersion((n) => n + 1);

  useEffect(() => setTokens([""]), [query, filters.status, filters.resource]);
  const pageToken = tokens[tokens.length - 1];
  useEffect(() => {
    let current = true;
    const request = { query, status: filters.status || undefined, resource: filters.resource, pageSize: PAGE_SIZE, pageToken };
    session.call("ListWebhooks", request).then((answer) => {
      if (!current) return;
      setPage(answer);
      setError(null);
      // The last page lost its last row (deleted): show the page before it.
      if (!answer.webhooks?.length) setTokens(pageBefore);
    }, (failure) => current && setError(failure.message));
    return () => { current = false; };
  }, [query, filters.status, filters.resource, pageToken, version]);

  const hooks = page?.webhooks || [];
  const names = useMemo(() => hooks.map((hook) => hook.name), [page]);
  const health = useWebhookHealth(session, names, reload);
  const actions = webhookActions(session, dialogSlot(setDialog, shown), reload);
  const total = page?.totalSize || 0;
  const first = (tokens.length - 1) * PAGE_SIZE;
  const filtered = query || filters.status || filters.resource;

  return html`<section class="page">
    <header class="page-header">
      <div>
        <h1>Webhooks</h1>
        <p class="muted">Destinations that receive your store's events, signed, with retries.</p>
      </div>
      <a class="button primary" href="#/webhooks/new">Create Webhook</a>
    </header>
    <div class="card">
      <${Toolbar} eventTypes=${session.eventTypes} filters=${filters} setFilters=${setFilters} />
      ${error && html`<div class="alert" role="alert">${error}</div>`}
      <div class="table-wrap">
        <table class="table responsive">
          <thead><tr>
            <th scope="col">Resource</th><th scope="col">Event</th><th scope="col">URL</th><th scope="col">Status</th>
            <th scope="col">Last delivery</th><th scope="col" class="number">Success (24 h)</th>
            <th scope="col"><span class="visually-hidden">Actions</span></th>
          </tr></thead>
          <tbody>
            ${hooks.map((hook) => html`<${Row} key=${hook.name} hook=${hook} stats=${health[hook.name]} actions=${actions} />`)}
          </tbody>
        </table>
        ${page && !total && html`<div class="empty">
          ${filtered ? "No webhook matches." : "No webhooks yet: create the first one."}
        </div>`}
      </div>
      <${Pager} range=${hooks.length ? `${first + 1}–${first + hooks.length} of ${total}` : ""} tokens=${tokens}
        setTokens=${setTokens} next=${page?.nextPageToken} />
    </div>
    ${dialog}
  </section>`;
}

/**
 * The page's one dialog: `open(render)` shows `render(close)` and returns a handle whose `show`
 * (another content, same dialog) and `close` act only while that dialog is still the one open,
 * so an answer that comes after the user closed it, or opened another, changes nothing.
 */
function dialogSlot(setDialog, shown) {
  return (render) => {
    const handle = {
      close: () => {
        if (shown.current !== handle) return;
        shown.current = null;
        setDialog(null);
      },
      show: (next) => shown.current === handle && setDialog(next(handle.close)),
    };
    shown.current = handle;
    setDialog(render(handle.close));
    return handle;
  };
}

function plural(count, one, many) {
  return `${count} ${count === 1 ? one : many}`;
}

function webhookActions(session, open, reload) {
  const describe = (hook) => `${hook.resource}.${hook.event} → ${hook.url}`;
  const failed = (error) => session.notify(error.message, "error");
  return {
    edit: (hook) => session.navigate(`#/webhooks/${shortName(hook.name)}/edit`),
    deliveries: (hook) => session.navigate(`#/webhooks/${shortName(hook.name)}/deliveries`),
    test: async (hook) => {
      const dialog = open((close) => html`<${Dialog} title="Test connection" onClose=${close}>
        <p class="muted">Sending a signed ping…</p></${Dialog}>`);
      try {
        const answer = await session.call("TestWebhook", { name: hook.name });
        dialog.show((close) => html`<${Dialog} title="Test connection" onClose=${close}>
          <p class="muted">${describe(hook)}</p>
          <${AttemptSummary} attempt=${answer.attempt} />
          <div class="dialog-buttons"><button type="button" class="button" onClick=${close}>Close</button></div>
        </${Dialog}>`);
        reload();
      } catch (error) {
        dialog.close();
        failed(error);
      }
    },
    setActive: async (hook, active) => {
      try {
        await session.call("UpdateWebhook", {
          webhook: { name: hook.name, status: active ? "ACTIVE" : "INACTIVE" },
          updateMask: "status",
        });
        session.notify(`${describe(hook)} is ${active ? "active" : "inactive"}.`);
        reload();
      } catch (error) {
        failed(error);
      }
    },
    rotate: (hook) => {
      const rotate = async () => {
        try {
          const answer = await session.call("RotateSecret", { name: hook.name });
          dialog.show((close) => html`<${Dialog} title="New signing secret" onClose=${close}>
            <p class="muted">${describe(hook)}. The previous secret keeps signing beside it for 24 hours.</p>
            <${SecretBox} secret=${answer.signingSecret} />
            <div class="dialog-buttons"><button type="button" class="button primary" onClick=${close}>Done</button></div>
          </${Dialog}>`);
        } catch (error) {
          dialog.close();
          failed(error);
        }
      };
      const dialog = open((close) => html`<${ConfirmDialog} title="Rotate the signing secret?" confirm="Rotate secret"
          working="Rotating…" onConfirm=${rotate} onClose=${close}>
        <p>${describe(hook)} gets a new secret; the current one keeps signing for 24 hours.</p>
      </${ConfirmDialog}>`);
    },
    remove: (hook) => {
      const remove = async () => {
        try {
          const answer = await session.call("DeleteWebhook", { name: hook.name });
          dialog.close();
          const cancelled = Number(answer.cancelledDeliveries || 0);
          const waiting = cancelled ? `; ${plural(cancelled, "waiting delivery", "waiting deliveries")} cancelled` : "";
          session.notify(`Deleted ${describe(hook)}${waiting}.`);
          reload();
        } catch (error) {
          dialog.close();
          failed(error);
        }
      };
      const dialog = open((close) => html`<${ConfirmDialog} title="Delete this webhook?" confirm="Delete"
          working="Deleting…" danger=${true} onConfirm=${remove} onClose=${close}>
        <p><strong>${describe(hook)}</strong></p>
        <p class="muted">Sending stops at once and its waiting deliveries are cancelled. This cannot be undone.</p>
      </${ConfirmDialog}>`);
    },
  };
}
