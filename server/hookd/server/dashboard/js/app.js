// The dashboard's shell: sign-in, navigation (the URL's fragment: #/, #/health...), notices.

import * as api from "./api.js";
import { DeliveriesPage } from "./deliveries.js";
import { WebhookForm } from "./form.js";
import { HealthPage } from "./health.js";
import { html, render, useEffect, useMemo, useState } from "./ui.js";
import { WebhooksPage } from "./webhooks.js";

const NOTICE_MS = 6000;

function parseRoute(hash) {
  const path = hash.replace(/^#/, "") || "/";
  let match;
  if (path === "/health") return { page: "health" };
  if (path === "/webhooks/new") return { page: "form" };
  if ((match = /^\/webhooks\/(wh_[A-Za-z0-9_-]+)\/edit$/.exec(path))) return { page: "form", webhookId: match[1] };
  if ((match = /^\/webhooks\/(wh_[A-Za-z0-9_-]+)\/deliveries$/.exec(path))) return { page: "deliveries", webhookId: match[1] };
  return { page: "webhooks" };
}

function SignIn({ onSignIn, message }) {
  const [value, setValue] = useState("");
  const submit = (event) => {
    event.preventDefault();
    onSignIn(value.trim());
  };
  return html`<main class="signin">
    <form class="card card-body" onSubmit=${submit}>
      <div class="brand brand-large"><span class="logo" aria-hidden="true"></span>hookd</div>
      <h1>Sign in</h1>
      <p class="muted">This hookd requires an access token (one of its <code>--auth-token</code>s).</p>
      ${message && html`<div class="alert" role="alert">${message}</div>`}
      <div class="field">
        <label for="token">Access token</label>
        <input id="token" type="password" autocomplete="current-password" value=${value}
          onInput=${(event) => setValue(event.target.value)} required />
      </div>
      <p class="hint">Kept in this tab only (sessionStorage) and sent as <code>authorization: Bearer</code>.</p>
      <button type="submit" class="button primary wide">Sign in</button>
    </form>
  </main>`;
}

function Shell({ route, session, signedIn, onSignOut, notice, children }) {
  const link = (href, text, active) => html`<a href=${href} aria-current=${active ? "page" : undefined}>${text}</a>`;
  return html`<div class="shell">
    <header class="topbar">
      <a class="brand" href="#/"><span class="logo" aria-hidden="true"></span>hookd</a>
      <nav aria-label="Main">
        ${link("#/", "Webhooks", route.page !== "health")}
        ${link("#/health", "Health", route.page === "health")}
      </nav>
      <span class="spacer"></span>
      ${signedIn && html`<button type="button" class="button ghost" onClick=${onSignOut}>Sign out</button>`}
    </header>
    ${notice && html`<div class="notice notice-${notice.kind}" role="status">${notice.text}</div>`}
    <main>${children}</main>
  </div>`;
}

function App() {
  const [route, setRoute] = useState(parseRoute(location.hash));
  const [auth, setAuth] = useState({ state: "checking", message: "" });
  const [eventTypes, setEventTypes] = useState([]);
  const [notice, setNotice] = useState(null);

  useEffect(() => {
    const follow = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", follow);
    return () => removeEventListener("hashchange", follow);
  }, []);
  useEffect(() => {
    if (!notice) return undefined;
    const timer = setTimeout(() => setNotice(null), NOTICE_MS);
    return () => clearTimeout(timer);
  }, [notice]);

  const refused = (error) => {
    if (error?.code !== "unauthenticated") return false;
    const had = Boolean(api.token());
    api.setToken("");
    setAuth({ state: "needed", message: had ? "That token was not accepted. Check it and sign in again." : "" });
    return true;
  };

  const connect = async () => {
    try {
      const answer = await api.call("ListEventTypes");
      setEventTypes(answer.eventTypes || []);
      setAuth({ state: "in", message: "" });
    } catch (error) {
      if (!refused(error)) setAuth({ state: "down", message: error.message });
    }
  };
  useEffect(() => { connect(); }, []);

  const session = useMemo(() => ({
    eventTypes,
    call: async (method, request) => {
      try {
        return await api.call(method, request);
      } catch (error) {
        refused(error);
        throw error;
      }
    },
    stream: (method, request, onMessage, onEnd = () => {}) => api.stream(method, request, onMessage, (error) => {
      if (!refused(error)) onEnd(error);
    }),
    notify: (text, kind = "info") => setNotice({ text, kind }),
    navigate: (hash) => { location.hash = hash; },
  }), [eventTypes]);

  if (auth.state === "checking") return html`<p class="muted loading">Loading…</p>`;
  if (auth.state === "needed") {
    return html`<${SignIn} message=${auth.message} onSignIn=${(value) => { api.setToken(value); connect(); }} />`;
  }
  const signOut = () => {
    api.setToken("");
    setAuth({ state: "needed", message: "" });
  };
  let page;
  if (auth.state === "down") page = html`<div class="alert" role="alert">${auth.message}
    <button type="button" class="button small" onClick=${connect}>Try again</button></div>`;
  else if (route.page === "health") page = html`<${HealthPage} session=${session} />`;
  else if (route.page === "form") page = html`<${WebhookForm} key=${route.webhookId || "new"} session=${session} webhookId=${route.webhookId} />`;
  else if (route.page === "deliveries") page = html`<${DeliveriesPage} session=${session} webhookId=${route.webhookId} />`;
  else page = html`<${WebhooksPage} session=${session} />`;
  return html`<${Shell} route=${route} session=${session} signedIn=${Boolean(api.token())} onSignOut=${signOut} notice=${notice}>
    ${page}
  </${Shell}>`;
}

render(html`<${App} />`, document.getElementById("app"));
