// Health, live from StreamHealth (server streaming, no polling): the service, each webhook and
// each destination, with success rate and latency minute by minute over the last hour.

import { LineChart, niceMax } from "./chart.js";
import { Badge, formatMs, formatRate, html, shortName, useEffect, useState } from "./ui.js";

const WINDOWS = [["300s", "5 minutes"], ["3600s", "1 hour"], ["86400s", "24 hours"]];
const RECONNECT_MS = 3000;

function windowOf(stats, span) {
  return stats?.windows?.find((item) => item.window === span) || {};
}

function count(value) {
  return Number(value || 0);
}

function failures(figures) {
  return Object.entries(figures.errors || {}).map(([outcome, n]) => [outcome, count(n)]).sort((a, b) => b[1] - a[1]);
}

function Figures({ stats, span }) {
  const figures = windowOf(stats, span);
  const attempts = count(figures.attempts);
  const failed = failures(figures);
  const failedTotal = failed.reduce((sum, [, n]) => sum + n, 0);
  return html`<div class="figures">
    <div class="figure" data-figure="success-rate">
      <div class="figure-label">Success rate</div>
      <div class="figure-value">${formatRate(figures.successes, attempts)}</div>
      <div class="muted small" data-figure="attempts">${count(figures.successes)} of ${attempts} attempts</div>
    </div>
    <div class="figure">
      <div class="figure-label">Response time</div>
      <div class="figure-value">${formatMs(figures.p50Ms)}</div>
      <div class="muted small">p95 ${formatMs(figures.p95Ms)} · p99 ${formatMs(figures.p99Ms)}</div>
    </div>
    <div class="figure">
      <div class="figure-label">Errors</div>
      <div class="figure-value">${failedTotal}</div>
      <div class="muted small">${failed.length ? failed.map(([outcome, n]) => `${outcome.toLowerCase()} ${n}`).join(" · ") : "none"}</div>
    </div>
    <div class="figure">
      <div class="figure-label">Queue depth</div>
      <div class="figure-value" data-figure="backlog">${count(stats?.backlog)}</div>
      <div class="muted small">${`${count(stats?.queuedInMemory)} in memory · ${count(stats?.inFlight)} in flight · ${count(stats?.retriesScheduled)} retrying`}</div>
    </div>
  </div>`;
}

function Charts({ minutes, now }) {
  const points = (minutes || []).map((minute) => ({
    t: new Date(minute.startTime).getTime() + 30_000,
    attempts: count(minute.attempts),
    rate: count(minute.attempts) ? (100 * count(minute.successes)) / count(minute.attempts) : 0,
    p50: minute.p50Ms || 0,
    p95: minute.p95Ms || 0,
  })).filter((point) => point.attempts);
  const latencyMax = niceMax(Math.max(0, ...points.map((point) => point.p95)));
  return html`<div class="charts">
    <${LineChart} title="Success rate" max=${100} now=${now} format=${(v) => `${v}%`}
      series=${[{ label: "per minute", className: "line-rate", points: points.map((p) => [p.t, p.rate]) }]} />
    <${LineChart} title="Response time" max=${latencyMax} now=${now} format=${(v) => (v ? formatMs(v) : "0")}
      series=${[
        { label: "p50", className: "line-p50", points: points.map((p) => [p.t, p.p50]) },
        { label: "p95", className: "line-p95", points: points.map((p) => [p.t, p.p95]) },
      ]} />
  </div>`;
}

function breaker(stats) {
  const state = stats.breakerState && stats.breakerState !== "BREAKER_STATE_UNSPECIFIED" ? stats.breakerState : "CLOSED";
  return html`<${Badge} value=${state} kind=${`breaker-${state.toLowerCase()}`} />`;
}

function StatsTable({ caption, rows, span, label }) {
  if (!rows.length) return null;
  return html`<div class="card">
    <h2 class="card-title">${caption}</h2>
    <div class="table-wrap"><table class="table responsive">
      <thead><tr>
        <th scope="col">${caption === "Webhooks" ? "Webhook" : "Destination"}</th>
        <th scope="col" class="number">Success</th><th scope="col" class="number">p50</th>
        <th scope="col" class="number">p95</th><th scope="col" class="number">p99</th>
        <th scope="col">Failures</th><th scope="col" class="number">Backlog</th>
        <th scope="col" class="number">In flight</th><th scope="col">Breaker</th>
      </tr></thead>
      <tbody>${rows.map((stats) => {
        const figures = windowOf(stats, span);
        const failed = failures(figures);
        return html`<tr key=${stats.key} data-key=${stats.key}>
          <td data-label=${caption === "Webhooks" ? "Webhook" : "Destination"} class="url">${label(stats.key)}</td>
          <td data-label="Success" class="number">${formatRate(figures.successes, figures.attempts)}</td>
          <td data-label="p50" class="number">${formatMs(figures.p50Ms)}</td>
          <td data-label="p95" class="number">${formatMs(figures.p95Ms)}</td>
          <td data-label="p99" class="number">${formatMs(figures.p99Ms)}</td>
          <td data-label="Failures">${failed.length ? failed.map(([o, n]) => `${o.toLowerCase()} ${n}`).join(", ") : "–"}</td>
          <td data-label="Backlog" class="number">${count(stats.backlog)}</td>
          <td data-label="In flight" class="number">${count(stats.inFlight)}</td>
          <td data-label="Breaker">${breaker(stats)}</td>
        </tr>`;
      })}</tbody>
    </table></div>
  </div>`;
}

export function HealthPage({ session }) {
  const [snapshot, setSnapshot] = useState(null);
  const [problem, setProblem] = useState("");
  const [span, setSpan] = useState("3600s");
  const [labels, setLabels] = useState({});
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    session.call("ListWebhooks", { pageSize: 1000 }).then((answer) => setLabels(Object.fromEntries(
      (answer.webhooks || []).map((hook) => [hook.name, `${hook.resource}.${hook.event} → ${hook.url}`]))), () => {});
  }, []);
  useEffect(() => {
    let timer;
    const stop = session.stream("StreamHealth", { interval: "1s" }, (message) => {
      setSnapshot(message);
      setProblem("");
    }, (error) => {
      setProblem(error ? error.message : "The stream ended.");
      timer = setTimeout(() => setAttempt((n) => n + 1), RECONNECT_MS);
    });
    return () => { stop(); clearTimeout(timer); };
  }, [attempt]);

  const now = snapshot ? new Date(snapshot.time).getTime() : Date.now();
  return html`<section class="page">
    <header class="page-header">
      <div>
        <h1>Health</h1>
        <p class="muted live ${problem ? "live-off" : ""}" role="status">
          <span class="dot" aria-hidden="true"></span>
          ${problem ? `Reconnecting: ${problem}` : snapshot ? `Live · ${new Date(now).toLocaleTimeString()}` : "Connecting…"}
        </p>
      </div>
      <div class="field">
        <label for="health-window">Window</label>
        <select id="health-window" value=${span} onChange=${(event) => setSpan(event.target.value)}>
          ${WINDOWS.map(([value, text]) => html`<option value=${value}>${text}</option>`)}
        </select>
      </div>
    </header>
    ${snapshot && html`
      <div class="card card-body">
        <h2 class="card-title">Service</h2>
        <${Figures} stats=${snapshot.service} span=${span} />
        <p class="muted small">${count(snapshot.actors)} destination actors running · ${count(snapshot.actorRestarts)} restarts</p>
        <${Charts} minutes=${snapshot.service?.minutes} now=${now} />
      </div>
      <${StatsTable} caption="Webhooks" rows=${snapshot.webhooks || []} span=${span}
        label=${(key) => labels[key] || shortName(key)} />
      <${StatsTable} caption="Destinations" rows=${snapshot.destinations || []} span=${span} label=${(key) => key} />
    `}
  </section>`;
}
