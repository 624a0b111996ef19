// A small SVG line chart over the last hour: no library, a few points a minute apart.

import { html } from "./ui.js";

const WIDTH = 600;
const HEIGHT = 120;
const PAD = { left: 44, right: 8, top: 8, bottom: 20 };

function path(points, x, y) {
  return points.map((point, index) => `${index ? "L" : "M"}${x(point[0]).toFixed(1)},${y(point[1]).toFixed(1)}`).join("");
}

/**
 * `series`: [{label, className, points: [[epochMs, value]...]}]; `max`: the top of the y axis;
 * `format`: how a y value is written on the axis.
 */
export function LineChart({ title, series, max, format, now }) {
  const start = now - 3600_000;
  const x = (t) => PAD.left + ((t - start) / 3600_000) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => HEIGHT - PAD.bottom - (Math.min(v, max) / max) * (HEIGHT - PAD.top - PAD.bottom);
  const ticks = [0, max / 2, max];
  const empty = series.every((line) => !line.points.length);
  return html`<figure class="chart">
    <figcaption>${title}
      ${series.map((line) => html`<span class="legend ${line.className}"><span class="swatch"></span>${line.label}</span>`)}
    </figcaption>
    <svg viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label=${title} preserveAspectRatio="none">
      ${ticks.map((tick) => html`<g class="tick">
        <line x1=${PAD.left} x2=${WIDTH - PAD.right} y1=${y(tick)} y2=${y(tick)} />
        <text x=${PAD.left - 6} y=${y(tick) + 4} text-anchor="end">${format(tick)}</text>
      </g>`)}
      <text class="axis" x=${PAD.left} y=${HEIGHT - 4}>60 min ago</text>
      <text class="axis" x=${WIDTH - PAD.right} y=${HEIGHT - 4} text-anchor="end">now</text>
      ${series.map((line) => line.points.length === 1
        ? html`<circle class=${line.className} cx=${x(line.points[0][0])} cy=${y(line.points[0][1])} r="3" />`
        : html`<path class=${line.className} d=${path(line.points, x, y)} />`)}
      ${empty && html`<text class="axis" x=${WIDTH / 2} y=${HEIGHT / 2} text-anchor="middle">No attempts in the last hour</text>`}
    </svg>
  </figure>`;
}

/** A y-axis top that reads well: 1, 2 or 5 times a power of ten, above the largest value. */
export function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((step) => step * power).find((top) => top >= value);
}
