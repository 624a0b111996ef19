// The Webhooks page: search, filters, paging, live delivery figures, and each row's actions.

import {
  AttemptSummary,
  Dialog,
  RowMenu,
  SecretBox,
  StatusDot,
  ago,
  formatRate,
  html,
  shortName,
  useEffect,
  useMemo,
  useState,
} from "./ui.js";

const PAGE_SIZE = 20;
const SEARCH_DELAY_MS = 250;
const DAY = "86400s";

function useDebounced(value, delay) {
  const [settled, setSettled] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setSettled(value), delay);
    return () => clearTimeout(timer);
  }, [value, delay]);
  return settled;
}

/** Live figures for the webhooks on the page, from StreamHealth (no polling). */
function useWebhookHealth(session, names) {
  const [health, setHealth] = useState({});
  const key = names.join(",");
  useEffect(() => {
    if (!names.length) return undefined;
    return session.stream("StreamHealth", { webhooks: names, interval: "2s" }, (snapshot) => {
      setHealth(Object.fromEntries((snapshot.webhooks || []).map((stats) => [stats.key, stats])));
    });
  }, [key]);
  return health;
}

function LastDelivery({ stats }) {
  if (!stats || (!stats.lastSuccessTime && !stats.lastFailureTime)) return html`<span class="muted">No deliveries yet</span>`;
  const failed = (stats.lastFailureTime || "") > (stats.lastSuccessTime || "");
  const when = failed ? stats.lastFailureTime : stats.lastSuccessTime;
  return html`<span class=${failed ? "outcome-failed" : "outcome-ok"} title=${failed ? stats.lastError : ""}>
    ${failed ? "Failed" : "Succeeded"}<span class="muted"> · ${ago(when)}</span>
  </span>`;
}

function DayRate({ stats }) {
  const day = stats?.windows?.find((window) => window.window === DAY);
  const attempts = Number(day?.attempts || 0);
  return html`<span title=${attempts ? `${day.successes || 0} of ${attempts} attempts` : "no attempts"}>
    ${formatRate(day?.successRate || 0, attempts)}</span>`;
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
  const [version, setVersion] = useState(0);
  const reload = () => setVersion(version + 1);

  useEffect(() => setTokens([""]), [query, filters.status, filters.resource]);
  const pageToken = tokens[tokens.length - 1];
  useEffect(() => {
    let current = true;
    const request = { query, status: filters.status || undefined, resource: filters.resource, pageSize: PAGE_SIZE, pageToken };
    session.call("ListWebhooks", request).then(
      (answer) => current && (setPage(answer), setError(null)),
      (failure) => current && setError(failure.message),
    );
    return () => { current = false; };
  }, [query, filters.status, filters.resource, pageToken, version]);

  const hooks = page?.webhooks || [];
  const names = useMemo(() => hooks.map((hook) => hook.name), [page]);
  const health = useWebhookHealth(session, names);
  const actions = webhookActions(session, setDialog, reload);
  const total = page?.totalSize || 0;
  const first = (tokens.length - 1) * PAGE_SIZE;

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
        ${page && !hooks.length && html`<div class="empty">
          ${query || filters.status || filters.resource ? "No webhook matches." : "No webhooks yet: create the first one."}
        </div>`}
      </div>
      <footer class="pager">
        <span class="muted">${total ? `${first + 1}–${first + hooks.length} of ${total}` : ""}</span>
        <div class="pager-buttons">
          <button type="button" class="button" disabled=${tokens.length < 2}
            onClick=${() => setTokens(tokens.slice(0, -1))}>Previous</button>
          <button type="button" class="button" disabled=${!page?.nextPageToken}
            onClick=${() => setTokens([...tokens, page.nextPageToken])}>Next</button>
        </div>
      </footer>
    </div>
    ${dialog}
  </section>`;
}

function webhookActions(session, setDialog, reload) {
  const close = () => setDialog(null);
  const describe = (hook) => `${hook.resource}.${hook.event} → ${hook.url}`;
  const failed = (error) => session.notify(error.message, "error");
  return {
    edit: (hook) => session.navigate(`#/webhooks/${shortName(hook.name)}/edit`),
    deliveries: (hook) => session.navigate(`#/webhooks/${shortName(hook.name)}/deliveries`),
    test: async (hook) => {
      setDialog(html`<${Dialog} title="Test connection" onClose=${close}><p class="muted">Sending a signed ping…</p></${Dialog}>`);
      try {
        const answer = await session.call("TestWebhook", { name: hook.name });
        setDialog(html`<${Dialog} title="Test connection" onClose=${close}>
          <p class="muted">${describe(hook)}</p>
          <${AttemptSummary} attempt=${answer.attempt} />
          <div class="dialog-buttons"><button type="button" class="button" onClick=${close}>Close</button></div>
        </${Dialog}>`);
        reload();
      } catch (error) {
        close();
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
          setDialog(html`<${Dialog} title="New signing secret" onClose=${close}>
            <p class="muted">${describe(hook)}. The previous secret keeps signing beside it for 24 hours.</p>
            <${SecretBox} secret=${answer.signingSecret} />
            <div class="dialog-buttons"><button type="button" class="button primary" onClick=${close}>Done</button></div>
          </${Dialog}>`);
        } catch (error) {
          close();
          failed(error);
        }
      };
      setDialog(html`<${Dialog} title="Rotate the signing secret?" onClose=${close}>
        <p>${describe(hook)} gets a new secret; the current one keeps signing for 24 hours.</p>
        <div class="dialog-buttons">
          <button type="button" class="button" onClick=${close}>Cancel</button>
          <button type="button" class="button primary" onClick=${rotate}>Rotate secret</button>
        </div>
      </${Dialog}>`);
    },
    remove: (hook) => {
      const remove = async () => {
        close();
        try {
          const answer = await session.call("DeleteWebhook", { name: hook.name });
          const cancelled = Number(answer.cancelledDeliveries || 0);
          session.notify(`Deleted ${describe(hook)}${cancelled ? `; ${cancelled} waiting deliveries cancelled` : ""}.`);
          reload();
        } catch (error) {
          failed(error);
        }
      };
      setDialog(html`<${Dialog} title="Delete this webhook?" onClose=${close}>
        <p><strong>${describe(hook)}</strong></p>
        <p class="muted">Sending stops at once and its waiting deliveries are cancelled. This cannot be undone.</p>
        <div class="dialog-buttons">
          <button type="button" class="button" onClick=${close}>Cancel</button>
          <button type="button" class="button danger" onClick=${remove}>Delete</button>
        </div>
      </${Dialog}>`);
    },
  };
}
