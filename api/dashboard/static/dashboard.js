// RAPID dashboard: draws the job page's plots with uPlot and, while a job runs, refreshes the page's
// live regions from the server-rendered page every few seconds. No key is ever read here: the
// browser sends the HttpOnly sign-in cookie itself.
"use strict";

const REFRESH_MS = 3000;
const COLORS = ["#2563eb", "#16a34a", "#ea580c", "#9333ea"];
const X_LABELS = { round: "round", step: "optimizer step", eval: "optimizer step" };
const WHOLE_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
window.rapidCharts = {};

function chartData(plot, data) {
  const cols = data[plot.x] || { x: [] };
  return [cols.x, ...plot.series.map(([key]) => cols[key] || cols.x.map(() => null))];
}

// y range: shares on 0..1 (grown to fit), other metrics padded so a flat line is not degenerate.
function yRange(plot) {
  return (u, min, max) => {
    if (min === null || max === null) return [0, 1];
    if (plot.unit === "share") return [Math.min(0, min), Math.max(1, max)];
    if (min === max) {
      const pad = Math.abs(min) * 0.1 || 1;
      return [min - pad, max + pad];
    }
    return uPlot.rangeNum(min, max, 0.1, true);
  };
}

// Tick labels that stay readable from 1e-5 (a small KL) to 1e4 (tokens per second).
function ticks(u, splits) {
  return splits.map((v) => {
    if (v === 0) return "0";
    const a = Math.abs(v);
    return a < 1e-3 || a >= 1e5 ? v.toExponential(1) : +v.toPrecision(3) + "";
  });
}

function chartOptions(plot, data, width) {
  const few = (data[plot.x] || { x: [] }).x.length < 40;
  const label = (key, text) => (key === "pass@k" && data.eval ? data.eval.k_label : text);
  return {
    width, height: 190,
    scales: {
      x: { time: false, range: (u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]) },
      y: { range: yRange(plot) },
    },
    axes: [{ label: X_LABELS[plot.x], labelSize: 20, size: 36, incrs: WHOLE_STEPS }, { size: 56, values: ticks }],
    series: [
      { label: X_LABELS[plot.x] },
      ...plot.series.map(([key, text], i) => ({
        label: label(key, text), stroke: COLORS[i % COLORS.length], width: 2,
        points: { show: few, size: 5 },
      })),
    ],
    legend: { live: true },
  };
}

function drawCharts() {
  const spec = readSpec(document);
  if (!spec) return;
  for (const el of document.querySelectorAll("[data-plot]")) {
    const plot = spec.plots.find((p) => p.id === el.dataset.plot);
    const data = chartData(plot, spec.data);
    el.closest(".chart").classList.toggle("empty", data[0].length === 0);
    window.rapidCharts[plot.id] = new uPlot(chartOptions(plot, spec.data, el.clientWidth || 380), data, el);
  }
}

function updateCharts(spec) {
  for (const plot of spec.plots) {
    const chart = window.rapidCharts[plot.id];
    if (!chart) continue;
    const data = chartData(plot, spec.data);
    chart.root.closest(".chart").classList.toggle("empty", data[0].length === 0);
    chart.setData(data);
  }
}

function readSpec(doc) {
  const el = doc.getElementById("charts-data");
  return el ? JSON.parse(el.textContent) : null;
}

async function refresh() {
  let response;
  try {
    response = await fetch(window.location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
  } catch (err) {
    return setTimeout(refresh, REFRESH_MS * 3); // the server is restarting: try again later
  }
  if (!response.ok || response.redirected) return; // signed out or gone: stop refreshing
  const doc = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const region of document.querySelectorAll("[data-live-region]")) {
    const fresh = doc.getElementById(region.id);
    if (fresh) region.replaceWith(fresh);
  }
  const spec = readSpec(document);
  if (spec) updateCharts(spec);
  if (doc.body.dataset.live === "true") setTimeout(refresh, REFRESH_MS);
  else document.body.dataset.live = "false";
}

function confirmForms() {
  // Delegated, so forms swapped in by a refresh are covered too.
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });
}

function resizeCharts() {
  for (const chart of Object.values(window.rapidCharts)) {
    const width = chart.root.parentElement.clientWidth;
    if (width) chart.setSize({ width, height: 190 });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  confirmForms();
  window.addEventListener("resize", resizeCharts);
  if (document.body.dataset.live === "true") setTimeout(refresh, REFRESH_MS);
});
