// Create / Edit a webhook. Every check is the server's: its errors are shown next to the field
// they name. Credentials come back masked, so on Edit they are sent only when changed, and a
// changed login is sent only with its password (or header value) typed again.

import { AttemptSummary, SecretBox, html, useEffect, useState } from "./ui.js";

const UPDATE_PATHS = ["resource", "event", "url", "status", "inactivePolicy", "description", "rateLimit", "timeout"];

const BLANK = {
  resource: "", event: "", url: "", authKind: "none", token: "", username: "", password: "", headerName: "",
  headerValue: "", active: true, inactivePolicy: "QUEUE", rateLimit: "", timeout: "5", description: "",
};

/** Which form field an API error's field (`webhook.auth.bearer.token`) belongs to. */
function formField(apiField) {
  const name = apiField.replace(/^webhook\./, "");
  if (name.startsWith("auth")) return "auth";
  if (name === "rate_limit") return "rateLimit";
  if (name === "status" || name === "inactive_policy") return "status";
  return name;
}

/** The fields of each kind of login; the last one is the secret, which answers mask. */
const LOGIN_FIELDS = { none: [], bearer: ["token"], basic: ["username", "password"], header: ["headerName", "headerValue"] };
const RETYPE = {
  password: "Enter the password again to change the login.",
  headerValue: "Enter the header value again to change the login.",
};

function fromWebhook(hook) {
  const auth = hook.auth || {};
  const kind = auth.bearer ? "bearer" : auth.basic ? "basic" : auth.headers ? "header" : "none";
  const headers = auth.headers?.headers || {};
  const [headerName = ""] = Object.keys(headers);
  return {
    ...BLANK,
    resource: hook.resource,
    event: hook.event,
    url: hook.url,
    authKind: kind,
    username: auth.basic?.username || "",
    headerName,
    // Not the values (masked), only whether there are any: an empty one is no loss.
    secretSaved: Boolean(auth.basic?.password || headers[headerName]),
    headerNames: Object.keys(headers).sort(),
    active: hook.status !== "INACTIVE",
    inactivePolicy: hook.inactivePolicy || "QUEUE",
    rateLimit: hook.rateLimit ? String(hook.rateLimit) : "",
    timeout: hook.timeout ? String(parseFloat(hook.timeout)) : "5",
    description: hook.description || "",
  };
}

/** Whether the login in the form differs from the saved one (always, when creating). */
function loginChanged(form, saved) {
  if (!saved) return true;
  return form.authKind !== saved.authKind || LOGIN_FIELDS[form.authKind].some((key) => form[key] !== saved[key]);
}

/**
 * The field error of a changed login whose saved password (or header value) was not typed
 * again: the form starts it empty, and sending it so would erase the saved one.
 */
function missingSecret(form, saved) {
  if (!saved?.secretSaved || form.authKind !== saved.authKind) return null;
  const secret = LOGIN_FIELDS[form.authKind].at(-1);
  if (!(secret in RETYPE) || form[secret] || !loginChanged(form, saved)) return null;
  return { [secret]: RETYPE[secret] };
}

/** Several custom headers cannot be shown in the form's one name and value: they are left as they are. */
function severalHeaders(saved) {
  return (saved?.headerNames.length || 0) > 1;
}

function authJson(form) {
  switch (form.authKind) {
    case "bearer": return { bearer: { token: form.token } };
    case "basic": return { basic: { username: form.username, password: form.password } };
    case "header": return { headers: { headers: { [form.headerName]: form.headerValue } } };
    default: return {};
  }
}

function webhookJson(form, withAuth) {
  const hook = {
    resource: form.resource,
    event: form.event,
    url: form.url.trim(),
    status: form.active ? "ACTIVE" : "INACTIVE",
    inactivePolicy: form.inactivePolicy,
    description: form.description,
    rateLimit: Number(form.rateLimit) || 0,
  };
  if (form.timeout !== "") hook.timeout = `${Number(form.timeout)}s`;
  if (withAuth) hook.auth = authJson(form);
  return hook;
}

function Field({ id, label, error, hint, children }) {
  return html`<div class="field ${error ? "field-invalid" : ""}">
    <label for=${id}>${label}</label>
    ${children}
    ${hint && !error && html`<p class="hint">${hint}</p>`}
    ${error && html`<p class="field-error" id=${`${id}-error`} role="alert">${error}</p>`}
  </div>`;
}

/** A password input, with the field's error (if any) tied to it. */
function SecretInput({ id, value, onInput, error }) {
  return html`<input id=${id} type="password" autocomplete="off" value=${value}
    onInput=${onInput} aria-invalid=${Boolean(error)} aria-describedby=${error ? `${id}-error` : undefined} />`;
}

function AuthFields({ form, set, errors, saved }) {
  if (severalHeaders(saved)) {
    return html`<p class="hint" id="auth-several">
      Sends ${saved.headerNames.length} custom headers (${saved.headerNames.join(", ")}). Saving keeps them as they are;
      change them with <code>hookctl webhooks edit</code> or the API.</p>`;
  }
  const keep = saved && form.authKind === saved.authKind
    ? "The saved value is hidden: enter it again to change these credentials." : "";
  switch (form.authKind) {
    case "bearer":
      return html`<${Field} id="auth-token" label="Token" hint=${keep}>
        <input id="auth-token" type="password" autocomplete="off" value=${form.token} onInput=${set("token")} />
      </${Field}>`;
    case "basic":
      return html`<div class="field-row">
        <${Field} id="auth-username" label="Username">
          <input id="auth-username" autocomplete="off" value=${form.username} onInput=${set("username")} />
        </${Field}>
        <${Field} id="auth-password" label="Password" hint=${keep} error=${errors.password}>
          <${SecretInput} id="auth-password" value=${form.password} onInput=${set("password")} error=${errors.password} />
        </${Field}>
      </div>`;
    case "header":
      return html`<div class="field-row">
        <${Field} id="auth-header-name" label="Header name">
          <input id="auth-header-name" placeholder="X-Api-Key" autocomplete="off" value=${form.headerName}
            onInput=${set("headerName")} />
        </${Field}>
        <${Field} id="auth-header-value" label="Header value" hint=${keep} error=${errors.headerValue}>
          <${SecretInput} id="auth-header-value" value=${form.headerValue} onInput=${set("headerValue")}
            error=${errors.headerValue} />
        </${Field}>
      </div>`;
    default:
      return null;
  }
}

export function WebhookForm({ session, webhookId }) {
  const editing = Boolean(webhookId);
  const name = editing ? `webhooks/${webhookId}` : "";
  const [form, setForm] = useState(null);
  // The webhook as loaded, when editing: what the login is compared with.
  const [saved, setSaved] = useState(null);
  const [errors, setErrors] = useState({});
  const [busy, setBusy] = useState("");
  const [trial, setTrial] = useState(null);
  const [created, setCreated] = useState(null);
  const types = session.eventTypes;
  const resources = [...new Set(types.map((type) => type.resource))];

  useEffect(() => {
    if (!editing) {
      const first = types[0] || { resource: "", event: "" };
      setForm({ ...BLANK, resource: first.resource, event: first.event });
      return;
    }
    session.call("GetWebhook", { name }).then((hook) => {
      const loaded = fromWebhook(hook);
      setSaved(loaded);
      setForm(loaded);
    }, (error) => setErrors({ form: error.message }));
  }, [webhookId]);

  if (created) {
    return html`<section class="page narrow">
      <header class="page-header"><div><h1>Webhook created</h1>
        <p class="muted">${created.resource}.${created.event} → ${created.url}</p></div></header>
      <div class="card card-body">
        <${SecretBox} secret=${created.signingSecret} />
        <div class="form-buttons"><a class="button primary" href="#/">Done</a></div>
      </div>
    </section>`;
  }
  if (!form) {
    return html`<section class="page narrow">${errors.form ? html`<div class="alert" role="alert">${errors.form}</div>` : html`<p class="muted">Loading…</p>`}</section>`;
  }

  const set = (key, read = (event) => event.target.value) => (event) => {
    const value = read(event);
    const next = { ...form, [key]: value };
    if (key === "resource") next.event = types.find((type) => type.resource === value)?.event || "";
    setForm(next);
  };
  const withAuth = loginChanged(form, saved);
  const events = types.filter((type) => type.resource === form.resource);

  const showError = (error) => {
    const field = error.field ? formField(error.field) : "";
    setErrors(field ? { [field]: error.detail } : { form: error.message });
  };

  // A login changed without its secret typed again is refused here: the server would take the
  // empty secret as the new one.
  const refuseMissingSecret = () => {
    const missing = missingSecret(form, saved);
    setErrors(missing || {});
    return Boolean(missing);
  };

  const save = async (event) => {
    event.preventDefault();
    if (refuseMissingSecret()) return;
    setBusy("save");
    try {
      if (editing) {
        const paths = withAuth ? [...UPDATE_PATHS, "auth"] : UPDATE_PATHS;
        await session.call("UpdateWebhook", { webhook: { name, ...webhookJson(form, withAuth) }, updateMask: paths.join(",") });
        session.notify(`Saved ${form.resource}.${form.event} → ${form.url}.`);
        session.navigate("#/");
      } else {
        setCreated(await session.call("CreateWebhook", { webhook: webhookJson(form, true) }));
      }
    } catch (error) {
      showError(error);
    } finally {
      setBusy("");
    }
  };

  const test = async () => {
    if (refuseMissingSecret()) return;
    setBusy("test");
    setTrial(null);
    try {
      const settings = webhookJson(form, withAuth);
      const answer = await session.call("TestWebhook", {
        name,
        webhook: { url: settings.url, timeout: settings.timeout, auth: settings.auth },
      });
      setTrial(answer.attempt);
    } catch (error) {
      showError(error);
    } finally {
      setBusy("");
    }
  };

  return html`<section class="page narrow">
    <header class="page-header">
      <div>
        <p class="crumbs"><a href="#/">Webhooks</a> /</p>
        <h1>${editing ? "Edit webhook" : "Create Webhook"}</h1>
      </div>
    </header>
    <form class="card card-body form" onSubmit=${save} novalidate>
      ${errors.form && html`<div class="alert" role="alert">${errors.form}</div>`}
      <div class="field-row">
        <${Field} id="resource" label="Resource" error=${errors.resource}>
          <select id="resource" value=${form.resource} onChange=${set("resource")}>
            ${resources.map((resource) => html`<option value=${resource}>${resource}</option>`)}
          </select>
        </${Field}>
        <${Field} id="event" label="Event" error=${errors.event}>
          <select id="event" value=${form.event} onChange=${set("event")}>
            ${events.map((type) => html`<option value=${type.event}>${type.event}</option>`)}
          </select>
        </${Field}>
      </div>
      <${Field} id="url" label="Destination URL" error=${errors.url} hint="The events are POSTed here, signed (Standard Webhooks).">
        <input id="url" type="url" inputmode="url" placeholder="https://example.com/webhooks" value=${form.url}
          onInput=${set("url")} aria-invalid=${Boolean(errors.url)} aria-describedby=${errors.url ? "url-error" : undefined} />
      </${Field}>
      <${Field} id="auth-kind" label="Authentication" error=${errors.auth}>
        <select id="auth-kind" value=${form.authKind} onChange=${set("authKind")} disabled=${severalHeaders(saved)}
            aria-describedby=${severalHeaders(saved) ? "auth-several" : undefined}>
          <option value="none">None</option>
          <option value="bearer">Bearer token</option>
          <option value="basic">Basic</option>
          <option value="header">Custom header</option>
        </select>
      </${Field}>
      <${AuthFields} form=${form} set=${set} errors=${errors} saved=${saved} />
      <div class="field-row">
        <div class="field">
          <span class="label" id="status-label">Status</span>
          <label class="check"><input type="checkbox" id="active" checked=${form.active}
            onChange=${set("active", (e) => e.target.checked)} /> Active</label>
          ${errors.status && html`<p class="field-error" role="alert">${errors.status}</p>`}
        </div>
        <${Field} id="inactive-policy" label="While inactive" hint="What happens to events while the webhook is inactive.">
          <select id="inactive-policy" value=${form.inactivePolicy} onChange=${set("inactivePolicy")}>
            <option value="QUEUE">Queue them, send on activation</option>
            <option value="DISCARD">Discard them</option>
          </select>
        </${Field}>
      </div>
      <div class="field-row">
        <${Field} id="rate-limit" label="Rate limit (requests/s)" error=${errors.rateLimit} hint="Empty: the server's default.">
          <input id="rate-limit" type="number" min="0.1" step="any" value=${form.rateLimit} onInput=${set("rateLimit")} />
        </${Field}>
        <${Field} id="timeout" label="Timeout (seconds)" error=${errors.timeout}>
          <input id="timeout" type="number" min="0.1" max="30" step="any" value=${form.timeout} onInput=${set("timeout")} />
        </${Field}>
      </div>
      <${Field} id="description" label="Description" error=${errors.description}>
        <textarea id="description" rows="2" maxlength="500" value=${form.description} onInput=${set("description")}></textarea>
      </${Field}>
      ${trial && html`<div class="trial"><h3>Test connection</h3><${AttemptSummary} attempt=${trial} /></div>`}
      <div class="form-buttons">
        <button type="button" class="button" onClick=${test} disabled=${busy !== ""}>
          ${busy === "test" ? "Testing…" : "Test connection"}</button>
        <span class="spacer"></span>
        <a class="button" href="#/">Cancel</a>
        <button type="submit" class="button primary" disabled=${busy !== ""}>${busy === "save" ? "Saving…" : "Save"}</button>
      </div>
    </form>
  </section>`;
}
