/* Usage and billing charts (tenant dashboard, operator drill-down).
 *
 * The server renders every number as a table; this script only draws the same
 * numbers with the vendored Chart.js (static/vendor/chartjs, global `Chart`).
 * Each <canvas data-chart="ID"> reads its spec from <script type="application/json" id="ID">:
 *
 *   {type: "bar"|"line", labels: [...], format: "tokens"|"usd"|"int"|"ms"|"pct",
 *    stacked: bool, horizontal: bool, y1: {format} | null, empty?: "text when all zero",
 *    datasets: [{label, data, color, type?, axis?: "y1", dashed?, fill?}],
 *    variants: {name: {datasets, format}}   // optional: metric switch (tokens / cost / turns)
 *   }
 *
 * A [data-variant-for="ID"] button group switches variants without a reload.
 *
 * Counts ("int", "tokens") and latencies ("ms") get whole-number ticks, so a small range
 * reads 0, 1, 2 rather than 0, 0.2, 0.4 (or "1 ms, 1 ms, 0 ms" once rounded). A chart whose
 * values are all zero or missing (in every variant) is not drawn: its box says
 * `spec.empty` ("No usage yet" by default) and the table behind it keeps the zeros.
 */
(function () {
  "use strict";
  if (typeof window.Chart === "undefined") return; // tables stay, charts just don't draw

  const css = getComputedStyle(document.documentElement);
  const token = (name, fallback) => (css.getPropertyValue(name) || fallback).trim();
  const MUTED = token("--muted", "#667085");
  const BORDER = token("--border", "#e4e7ec");
  const FONT = token("--font", "system-ui, sans-serif");

  Chart.defaults.font.family = FONT;
  Chart.defaults.font.size = 12;
  Chart.defaults.color = MUTED;
  Chart.defaults.borderColor = BORDER;
  Chart.defaults.animation = false; // dashboards are read, not watched
  Chart.defaults.maintainAspectRatio = false;

  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const usd = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 2 });
  const usdSmall = new Intl.NumberFormat(undefined, { style: "currency", currency: "USD", maximumFractionDigits: 4 });

  function fmt(format, value, short) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    switch (format) {
      case "usd":
        if (short && Math.abs(value) >= 1000) return "$" + compact.format(value);
        return Math.abs(value) < 1 && value !== 0 ? usdSmall.format(value) : usd.format(value);
      case "ms":
        return value >= 1000 ? (value / 1000).toFixed(value >= 10000 ? 0 : 1) + " s" : whole.format(value) + " ms";
      case "pct":
        return (value * 100).toFixed(value < 0.1 ? 1 : 0) + " %";
      case "tokens":
        return short ? compact.format(value) : whole.format(value);
      default:
        return short ? compact.format(value) : whole.format(value);
    }
  }

  const WHOLE_FORMATS = new Set(["int", "tokens", "ms"]);
  const precisionOf = (format) => (WHOLE_FORMATS.has(format) ? 0 : undefined);

  function isEmpty(spec) {
    const all = [spec.datasets, ...Object.values(spec.variants || {}).map((v) => v.datasets)];
    return all.every((datasets) => datasets.every((d) => d.data.every((v) => v === null || Number(v) === 0)));
  }

  function showEmpty(canvas, spec) {
    canvas.hidden = true;
    const note = document.createElement("p");
    note.className = "chart-empty";
    note.textContent = spec.empty || "No usage yet";
    canvas.insertAdjacentElement("afterend", note);
  }

  function hexToRgba(hex, alpha) {
    const h = hex.replace("#", "");
    const n = parseInt(h.length === 3 ? h.replace(/./g, "$&$&") : h, 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
  }

  function datasetsOf(spec, datasets) {
    return datasets.map((d) => {
      const type = d.type || spec.type;
      const line = type === "line";
      return {
        label: d.label,
        data: d.data,
        type,
        yAxisID: d.axis === "y1" ? "y1" : spec.horizontal ? "x" : "y",
        xAxisID: spec.horizontal ? "y" : undefined,
        backgroundColor: line ? hexToRgba(d.color, d.fill ? 0.12 : 0) : d.color,
        borderColor: d.color,
        borderWidth: line ? 2 : 0,
        borderDash: d.dashed ? [5, 4] : undefined,
        borderRadius: line ? 0 : 3,
        pointRadius: line ? (spec.labels.length > 45 ? 0 : 2.5) : 0,
        pointHoverRadius: 4,
        tension: 0.25,
        fill: line && d.fill ? "origin" : false,
        maxBarThickness: 36,
        stack: spec.stacked ? "all" : undefined,
        order: line ? 0 : 1,
      };
    });
  }

  function build(canvas) {
    const source = document.getElementById(canvas.dataset.chart);
    if (!source) return;
    const spec = JSON.parse(source.textContent);
    if (isEmpty(spec)) {
      showEmpty(canvas, spec);
      return;
    }
    let format = spec.format || "int";
    const valueAxis = spec.horizontal ? "x" : "y";
    const categoryAxis = spec.horizontal ? "y" : "x";
    const scales = {
      [categoryAxis]: {
        stacked: !!spec.stacked,
        grid: { display: false },
        ticks: { autoSkip: true, maxRotation: 0, autoSkipPadding: 12 },
      },
      [valueAxis]: {
        stacked: !!spec.stacked,
        beginAtZero: true,
        border: { display: false },
        grid: { color: BORDER },
        ticks: { maxTicksLimit: 6, precision: precisionOf(format), callback: (v) => fmt(format, v, true) },
      },
    };
    if (spec.y1) {
      scales.y1 = {
        position: "right",
        beginAtZero: true,
        border: { display: false },
        grid: { display: false },
        suggestedMax: spec.y1.suggestedMax,
        ticks: {
          maxTicksLimit: 6,
          precision: precisionOf(spec.y1.format),
          callback: (v) => fmt(spec.y1.format, v, true),
        },
      };
    }
    const chart = new Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: datasetsOf(spec, spec.datasets) },
      options: {
        indexAxis: spec.horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        scales,
        plugins: {
          legend: {
            display: spec.legend !== false && spec.datasets.length > 1,
            position: "bottom",
            align: "start",
            labels: { boxWidth: 10, boxHeight: 10, useBorderRadius: true, borderRadius: 2, padding: 14 },
          },
          tooltip: {
            callbacks: {
              label: (ctx) => {
                const f = ctx.dataset.yAxisID === "y1" && spec.y1 ? spec.y1.format : format;
                const raw = spec.horizontal ? ctx.parsed.x : ctx.parsed.y;
                return ` ${ctx.dataset.label}: ${fmt(f, raw, false)}`;
              },
            },
          },
        },
      },
    });

    // Metric switch (tokens / cost / turns): same labels, other datasets and format.
    const group = document.querySelector(`[data-variant-for="${canvas.dataset.chart}"]`);
    if (group && spec.variants) {
      group.hidden = false;
      group.addEventListener("click", (event) => {
        const button = event.target.closest("button[data-variant]");
        if (!button) return;
        const variant = spec.variants[button.dataset.variant];
        if (!variant) return;
        format = variant.format;
        chart.options.scales[valueAxis].ticks.precision = precisionOf(format);
        chart.data.datasets = datasetsOf(spec, variant.datasets);
        chart.options.plugins.legend.display = variant.datasets.length > 1;
        chart.update();
        for (const other of group.querySelectorAll("button[data-variant]")) {
          other.setAttribute("aria-pressed", other === button ? "true" : "false");
        }
        const label = canvas.getAttribute("data-label-" + button.dataset.variant);
        if (label) canvas.setAttribute("aria-label", label);
      });
    }
  }

  function init(root) {
    for (const canvas of root.querySelectorAll("canvas[data-chart]")) {
      if (canvas.dataset.drawn) continue;
      canvas.dataset.drawn = "1";
      build(canvas);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => init(document));
  } else {
    init(document);
  }
  document.addEventListener("htmx:afterSwap", (event) => init(event.target));
})();
