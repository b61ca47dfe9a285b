// specrec operator page: vanilla JavaScript over the service's own JSON API (no build step).
//
// Read: GET /readyz, /models, /health/spectrum, /retrain, /metrics, /openapi.json.
// Admin: POST /retrain, /retrain/{id}/cancel, /models/{version}/activate with
// "Authorization: Bearer <token>". The token is typed once and kept in this tab's
// sessionStorage only: never in a URL, a cookie or storage that outlives the tab. Every
// request is same-origin and sent without credentials (credentials: "omit"): no cookie
// travels either.
"use strict";

const TOKEN_KEY = "specrec.admin_token";
const FINAL_STATES = new Set(["succeeded", "failed", "rejected", "cancelled"]);
const SOURCE_TEXT = {
  precomputed: "precomputed top-k list",
  search: "index search",
  include: "scored within include",
  "fold-in": "fold-in (interactions newer than the model)",
  fallback: "fallback (unknown user)",
};
const FAST_MS = 1000; // while a job is queued or running
const SLOW_MS = 5000;

const state = {
  thresholds: { healthy_min: 0.5, collapsed_below: 0.2 },
  jobs: [],
  activeJobs: false,
  timer: null,
  refreshing: false,
  again: false,
  fastUntil: 0, // keep polling fast until then (after an action or a job's end)
  rendered: {}, // section -> JSON of what it shows (skip re-rendering the same data)
};

// ---- small helpers ----------------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of present(children)) {
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function present(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
}

function fill(el, ...children) {
  // replaceChildren with nested arrays flattened and null / false left out
  el.replaceChildren(...present(children).map((c) => (c instanceof Node ? c : String(c))));
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of present(children)) el.append(c);
  return el;
}

function fmt(x, digits = 4) {
  if (x === null || x === undefined) return "–";
  if (typeof x !== "number") return String(x);
  if (Number.isInteger(x)) return x.toLocaleString("en-US");
  if (Math.abs(x) >= 1000) return x.toLocaleString("en-US", { maximumFractionDigits: 1 });
  return x.toPrecision(digits).replace(/\.?0+$/, "");
}

function ago(iso) {
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return "–";
  const sec = Math.max(0, (Date.now() - t) / 1000);
  if (sec < 90) return `${Math.round(sec)} s ago`;
  if (sec < 5400) return `${Math.round(sec / 60)} min ago`;
  if (sec < 36 * 3600) return `${(sec / 3600).toFixed(1)} h ago`;
  return `${(sec / 86400).toFixed(1)} days ago`;
}

function shortTime(iso) {
  if (!iso) return "–";
  return iso.replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC");
}

function badge(text, kind) {
  return h("span", { class: `badge ${kind || ""}`, text });
}

function verdictKind(verdict) {
  return verdict === "healthy" ? "healthy" : verdict === "collapsed" ? "collapsed" : "partial";
}

function verdictOf(ratio) {
  const t = state.thresholds;
  if (ratio >= t.healthy_min) return "healthy";
  if (ratio < t.collapsed_below) return "collapsed";
  return "partial collapse";
}

function versionVerdict(v) {
  // the verdict of a /models version from its sides' effective rank / d; null without them
  // (a manifest with no spectrum has effective_rank {}: no verdict, not "partial collapse")
  const dim = v.shape ? v.shape.dim : null;
  const ratios = ["users", "items"]
    .map((side) => (v.effective_rank && dim ? v.effective_rank[side] / dim : NaN))
    .filter(Number.isFinite);
  return ratios.length ? verdictOf(Math.min(...ratios)) : null;
}

function scalars(obj, prefix = "") {
  // {a: 1, b: {c: 2}} -> [["a", 1], ["b.c", 2]] (numbers only)
  const out = [];
  for (const [k, v] of Object.entries(obj || {})) {
    if (typeof v === "number") out.push([prefix + k, v]);
    else if (v && typeof v === "object" && !Array.isArray(v)) out.push(...scalars(v, `${prefix}${k}.`));
  }
  return out;
}

function qualityMetrics(obj) {
  // ranking metrics first (recall@20, ndcg@20, ...), then the rest
  const all = scalars(obj);
  const ranked = all.filter(([k]) => k.includes("@"));
  return ranked.length ? ranked : all;
}

function metricList(obj, limit = 6) {
  const items = qualityMetrics(obj).slice(0, limit);
  if (!items.length) return h("span", { class: "small", text: "–" });
  return h("div", { class: "metric-list" },
    items.map(([k, v]) => h("span", {}, `${k} `, h("b", { text: fmt(v) }))));
}

function setMsg(id, text, kind) {
  const el = $(id);
  el.textContent = text || "";
  el.className = `msg ${kind || ""}`;
  el.setAttribute("role", kind === "error" ? "alert" : "status");
}

function tick() {
  // part of what a section shows: its "… ago" texts are redrawn every 15 s
  return Math.floor(Date.now() / 15000);
}

function changed(section, data) {
  const key = JSON.stringify(data);
  if (state.rendered[section] === key) return false;
  state.rendered[section] = key;
  return true;
}

// ---- the API --------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
  describe() {
    return `${this.status}${this.code ? ` ${this.code}` : ""}: ${this.message}`;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

async function api(path, { method = "GET", body, admin = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (admin && token()) headers.Authorization = `Bearer ${token()}`;
  let r;
  try {
    r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError(0, "unreachable", `the API did not answer (${e.message})`);
  }
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const err = data && data.error ? data.error : {};
    throw new ApiError(r.status, err.code, err.message || `${r.status} ${r.statusText}`, err.details);
  }
  return data;
}

async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (e) {
    return { ok: false, error: e };
  }
}

// ---- Prometheus text ----------------------------------------------------------------------
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sumWhere(samples, name, pred = () => true) {
  return samples.filter((x) => x.name === name && pred(x.labels)).reduce((a, x) => a + x.value, 0);
}

function answerSources(samples) {
  const out = {};
  for (const x of samples) {
    if (x.name === "specrec_recommend_answers_total") out[x.labels.source] = x.value;
  }
  return out;
}

// ---- serving model ------------------------------------------------------------------------
function renderServing(ready, spectrum, models, metricsSamples) {
  const facts = $("serving-facts");
  const table = $("spectrum-table");
  if (!ready.ok) {
    if (!changed("serving", { error: ready.error.message })) return;
    fill(facts, h("dt", { text: "state" }), h("dd", {}, badge("not ready", "failed"),
      " ", ready.error.message));
    fill(table);
    fill($("serving-verdict"));
    $("spectrum-thresholds").textContent = "";
    fill($("spectrum-plot"), h("p", { class: "empty", text: "no model is served yet" }));
    return;
  }
  const r = ready.value;
  const sp = spectrum.ok ? spectrum.value : null;
  const entry = models.ok ? models.value.versions.find((v) => v.serving) : null;
  const age = metricsSamples ? sumWhere(metricsSamples, "specrec_model_age_seconds") : null;
  const data = { r, sp, entry, tick: tick() };
  if (!changed("serving", data)) return;

  const dim = sp ? sp.users.dim : entry && entry.shape ? entry.shape.dim : null;
  const created = entry ? entry.created_at : null;
  const cfg = entry ? entry.config || {} : {};
  const kind = entry && entry.model ? entry.model : {};
  const trained = kind.kind === "spectral" || cfg.objective === "spectral"
    ? "spectral filter (GF-CF, training-free)"
    : kind.kind === "blend"
      ? `blend: spectral filter + ${fmt(kind.blend_weight, 2)} × ${cfg.encoder || "mf"} DirectSpec+`
      : [cfg.objective, cfg.encoder].filter(Boolean).join(" · ");
  fill(facts,
    h("dt", { text: "version" }), h("dd", { id: "serving-version", class: "mono", text: r.model_version }),
    h("dt", { text: "published" }),
    h("dd", { id: "serving-age", title: shortTime(created) },
      created ? `${ago(created)} (${shortTime(created)})` : age ? `${fmt(age, 3)} s ago` : "–"),
    h("dt", { text: "users × items × d" }),
    h("dd", { id: "serving-shape" },
      `${fmt(r.n_users)} × ${fmt(r.n_items)} × ${dim === null ? "?" : dim}`),
    h("dt", { text: "index" }),
    h("dd", { id: "serving-index" }, `${r.index_kind} (${r.index_backend}, ${r.index_source}` +
      (r.index_recall === null || r.index_recall === undefined
        ? ", recall not measured)" : `, recall@20 ${fmt(r.index_recall, 3)})`)),
    trained ? [h("dt", { text: "trained with" }), h("dd", { text: trained })] : null,
    h("dt", { text: "training metrics" }),
    h("dd", { id: "serving-metrics" }, metricList(entry ? entry.metrics : {}, 8)),
  );

  if (!sp) {
    fill(table);
    fill($("spectrum-plot"), h("p", { class: "empty", text: spectrum.error.message }));
    return;
  }
  fill($("serving-verdict"),
    badge(`spectrum: ${sp.verdict}`, verdictKind(sp.verdict)));
  const row = (name, side) => h("tr", {},
    h("td", { text: name }),
    h("td", { class: "num", "data-side": name, "data-erank": side.effective_rank },
      fmt(side.effective_rank, 4)),
    h("td", { class: "num", text: side.dim }),
    h("td", { class: "num", text: fmt(side.effective_rank_ratio, 3) }),
    h("td", { class: "num", text: fmt(side.top1_energy, 3) }),
    h("td", {}, badge(side.verdict, verdictKind(side.verdict))));
  fill(table,
    h("thead", {}, h("tr", {},
      h("th", { text: "side" }), h("th", { class: "num", text: "effective rank" }),
      h("th", { class: "num", text: "d" }), h("th", { class: "num", text: "erank / d" }),
      h("th", { class: "num", text: "top-1 energy" }), h("th", { text: "verdict" }))),
    h("tbody", {}, row("users", sp.users), row("items", sp.items)),
  );
  const t = sp.thresholds;
  $("spectrum-thresholds").textContent =
    `healthy when erank / d ≥ ${t.healthy_min}, collapsed below ${t.collapsed_below} ` +
    "(the worse of users and items decides)." +
    (sp.previous ? ` Previous model ${sp.previous.model_version}: ${sp.previous.verdict}, ` +
      `erank ${fmt(sp.previous.users.effective_rank, 3)} / ${fmt(sp.previous.items.effective_rank, 3)}.` : "");
  fill($("spectrum-plot"), spectrumSvg(sp));
}

function spectrumSvg(sp) {
  const W = 760, H = 290, panelW = W / 2;
  const ml = 46, mr = 14, mt = 26, mb = 66;
  const pw = panelW - ml - mr, ph = H - mt - mb;
  const series = (m, side) => (m ? m[side].singular_values_normalized : null);
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", id: "spectrum-svg",
    "aria-label": "normalised singular values of the serving and previous model",
  });
  for (const [i, side] of ["users", "items"].entries()) {
    const cur = series(sp, side);
    const prev = series(sp.previous, side);
    const all = [...cur, ...(prev || [])].filter((v) => v > 0);
    const low = Math.max(Math.min(...all, 1), 1e-6);
    const decades = Math.max(1, Math.ceil(-Math.log10(low)));
    const n = Math.max(cur.length, prev ? prev.length : 0);
    // same d: by index k; different d (a retrain changed it): by relative position k / d
    const relative = Boolean(prev) && prev.length !== cur.length;
    const xOf = (len) => (k) => ml + (len > 1 ? (pw * k) / (len - 1) : pw / 2);
    const x = xOf(n);
    const y = (v) => mt + ph * Math.min(-Math.log10(Math.max(v, 1e-6)) / decades, 1);
    const g = s("g", { transform: `translate(${i * panelW},0)` });
    g.append(s("text", { x: ml + pw / 2, y: 16, "text-anchor": "middle", class: "title",
      text: relative ? `${side} (d = ${sp[side].dim}; previous d = ${sp.previous[side].dim})`
        : `${side} (d = ${sp[side].dim})` }));
    for (let e = 0; e <= decades; e++) {
      const yy = mt + (ph * e) / decades;
      g.append(s("line", { x1: ml, x2: ml + pw, y1: yy, y2: yy, stroke: "#e6eaee" }));
      g.append(s("text", { x: ml - 6, y: yy + 4, "text-anchor": "end",
        text: e === 0 ? "1" : `1e-${e}` }));
    }
    g.append(s("rect", { x: ml, y: mt, width: pw, height: ph, fill: "none", stroke: "#b8c2cc" }));
    if (relative) {
      for (const [f, label] of [[0, "0"], [0.5, "0.5"], [1, "1"]]) {
        g.append(s("text", { x: ml + pw * f, y: mt + ph + 14, "text-anchor": "middle", text: label }));
      }
    } else {
      for (const k of [0, Math.floor((n - 1) / 2), n - 1]) {
        if (n < 2 && k > 0) continue;
        g.append(s("text", { x: x(k), y: mt + ph + 14, "text-anchor": "middle", text: k + 1 }));
      }
    }
    g.append(s("text", { x: ml + pw / 2, y: mt + ph + 29, "text-anchor": "middle",
      text: relative ? "k / d (the two models differ in d)" : "k (singular value index)" }));
    const line = (vals, attrs) => {
      const xv = relative ? xOf(vals.length) : x;
      return s("polyline", {
        fill: "none",
        points: vals.map((v, k) => `${xv(k).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
        ...attrs,
      });
    };
    if (prev) g.append(line(prev, { stroke: "#8a96a3", "stroke-width": 1.6,
      "stroke-dasharray": "5 4", class: "series-previous" }));
    g.append(line(cur, { stroke: "#1f6fb4", "stroke-width": 2.2, class: "series-current" }));
    svg.append(g);
  }
  const legend = s("g", { transform: `translate(${ml},${H - 8})` });
  legend.append(s("line", { x1: 0, x2: 26, y1: -4, y2: -4, stroke: "#1f6fb4", "stroke-width": 2.2 }));
  legend.append(s("text", { x: 32, y: 0, text: `current ${sp.model_version}` }));
  if (sp.previous) {
    legend.append(s("line", { x1: 330, x2: 356, y1: -4, y2: -4, stroke: "#8a96a3",
      "stroke-width": 1.6, "stroke-dasharray": "5 4" }));
    legend.append(s("text", { x: 362, y: 0, text: `previous ${sp.previous.model_version}` }));
  } else {
    legend.append(s("text", { x: 330, y: 0, text: "no previous model" }));
  }
  svg.append(legend);
  return svg;
}

// ---- versions ---------------------------------------------------------------------------
function renderVersions(models) {
  const table = $("versions-table");
  if (!models.ok) {
    if (changed("versions", { error: models.error.message })) {
      fill(table, h("tbody", {}, h("tr", {}, h("td", { class: "empty",
        text: models.error.describe() }))));
    }
    return;
  }
  const m = models.value;
  if (!changed("versions", { m, t: state.thresholds, tick: tick() })) return;
  if (!m.versions.length) {
    fill(table, h("tbody", {}, h("tr", {}, h("td", { class: "empty",
      text: "no published version yet" }))));
    return;
  }
  const rows = m.versions.map((v) => {
    const dim = v.shape ? v.shape.dim : null;
    const erank = (side) => {
      const e = v.effective_rank ? v.effective_rank[side] : undefined;
      if (e === undefined) return "–";
      return dim ? `${fmt(e, 3)} (${fmt(e / dim, 2)})` : fmt(e, 3);
    };
    const verdict = versionVerdict(v);
    const tags = [
      v.serving ? badge("serving", "serving") : null,
      v.current && !v.serving ? badge("current") : null,
      v.previous ? badge("previous") : null,
      v.refused ? badge("refused", "refused") : null,
    ];
    const shape = v.shape && v.shape.n_users !== undefined
      ? `${fmt(v.shape.n_users)} × ${fmt(v.shape.n_items)} × ${v.shape.dim}` : "–";
    return h("tr", { class: v.serving ? "serving-row" : "", "data-version": v.version },
      h("td", { class: "mono", text: v.version }),
      h("td", { class: "nowrap", title: shortTime(v.created_at), text: v.created_at ? ago(v.created_at) : "–" }),
      h("td", { class: "nowrap", text: shape }),
      h("td", {}, metricList(v.metrics, 3)),
      h("td", { class: "num", text: erank("users") }),
      h("td", { class: "num", text: erank("items") }),
      h("td", {}, verdict ? badge(verdict, verdictKind(verdict)) : "–"),
      h("td", { title: v.refused || "" }, tags),
      h("td", {}, h("button", {
        type: "button", class: "secondary activate", "data-version": v.version,
        disabled: v.serving || Boolean(v.refused),
        onclick: () => activate(v.version),
        text: v.serving ? "serving" : "Activate",
      })));
  });
  fill(table,
    h("thead", {}, h("tr", {}, ["version", "published", "users × items × d", "metrics"]
      .map((t) => h("th", { text: t })),
    h("th", { class: "num", text: "erank users (/d)" }), h("th", { class: "num", text: "erank items (/d)" }),
    h("th", { text: "verdict" }), h("th", { text: "" }), h("th", { text: "" }))),
    h("tbody", {}, rows),
  );
}

async function activate(version) {
  setMsg("versions-msg", `activating ${version}…`);
  try {
    const r = await api(`models/${encodeURIComponent(version)}/activate`, { method: "POST", admin: true });
    setMsg("versions-msg", `now serving ${r.serving} (was ${r.previous || "none"})`, "ok");
    state.fastUntil = Date.now() + 5000;
  } catch (e) {
    setMsg("versions-msg", `activate ${version} refused: ${e.describe()}`, "error");
  }
  refresh();
}

// ---- jobs ---------------------------------------------------------------------------------
function gateCell(job) {
  const gate = job.result && job.result.gate;
  if (!gate) return h("span", { class: "small", text: job.state === "running" ? "after training" : "–" });
  const parts = [gate.passed ? badge("passed", "passed") : badge("failed", "failed")];
  if (job.result.forced) parts.push(badge("forced", "forced"));
  let compared;
  if (!gate.serving_version) compared = "first model: spectrum check only";
  else if (gate.serving_value === null || gate.serving_value === undefined || !gate.n_compared_users) {
    compared = `no users in common with ${gate.serving_version}: spectrum check only`;
  } else {
    compared = `${gate.metric} ${fmt(gate.new_value)} vs ${fmt(gate.serving_value)} serving ` +
      `(${fmt(gate.n_compared_users)} users)`;
  }
  return h("div", {}, parts,
    h("div", { class: "small", text: compared }),
    h("div", { class: "small", text: `erank / d ${fmt(gate.erank_ratio, 3)}` }),
    (gate.reasons || []).map((r) => h("div", { class: "small", text: r })));
}

function progressCell(job) {
  const p = job.progress || {};
  const out = [];
  if (p.stage && !FINAL_STATES.has(job.state)) out.push(h("div", { class: "small", text: p.stage }));
  if (p.epochs) {
    const done = Math.min(1, (p.epoch || 0) / p.epochs);
    const bar = h("div", { class: "bar" }, h("div", {}));
    bar.firstChild.style.width = `${(done * 100).toFixed(1)}%`;
    out.push(h("div", { class: "epoch", text: `epoch ${p.epoch || 0} / ${p.epochs}` }), bar);
  }
  if (typeof p.loss === "number") out.push(h("div", { class: "small", text: `loss ${fmt(p.loss)}` }));
  return out.length ? out : h("span", { class: "small", text: "–" });
}

function renderJobs(jobs) {
  const table = $("jobs-table");
  if (!jobs.ok) {
    if (changed("jobs", { error: jobs.error.message })) {
      fill(table, h("tbody", {}, h("tr", {}, h("td", { class: "empty",
        text: jobs.error.describe() }))));
    }
    return;
  }
  const list = jobs.value.jobs;
  if (!changed("jobs", { list, tick: tick() })) return;
  if (!list.length) {
    fill(table, h("tbody", {}, h("tr", {}, h("td", { class: "empty",
      text: "no retrain job yet" }))));
    return;
  }
  const rows = list.map((j) => {
    const params = Object.entries(j.params || {})
      .filter(([k, v]) => k !== "hyperparameters" || Object.keys(v || {}).length)
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
    const active = !FINAL_STATES.has(j.state);
    return h("tr", { "data-job": j.job_id, "data-state": j.state },
      h("td", { class: "mono", title: j.job_id, text: j.job_id.slice(0, 8) }),
      h("td", {}, badge(j.state, j.state), j.cancel_requested && active ? badge("cancelling") : null),
      h("td", { class: "nowrap", title: shortTime(j.created_at), text: ago(j.created_at) }),
      h("td", { class: "small", text: params || "defaults" }),
      h("td", { class: "progress" }, progressCell(j)),
      h("td", {}, metricList((j.progress && j.progress.metrics) || (j.result && j.result.metrics), 2)),
      h("td", {}, gateCell(j)),
      h("td", {},
        j.model_version ? h("div", { class: "mono nowrap", text: j.model_version }) : null,
        j.error ? h("div", { class: "small error-text", text: j.error }) : null),
      h("td", {}, active ? h("button", {
        type: "button", class: "danger cancel", "data-job": j.job_id,
        onclick: () => cancelJob(j.job_id), text: "Cancel",
      }) : null));
  });
  fill(table,
    h("thead", {}, h("tr", {}, ["job", "state", "queued", "request", "progress",
      "last metrics", "quality gate", "result", ""].map((t) => h("th", { text: t })))),
    h("tbody", {}, rows),
  );
}

async function startRetrain(event) {
  event.preventDefault();
  const body = {};
  const objective = $("retrain-objective").value;
  const dataset = $("retrain-dataset").value;
  const epochs = $("retrain-epochs").value;
  if (objective) body.objective = objective;
  if (dataset) body.dataset = dataset;
  if (epochs) body.epochs = Number(epochs);
  if ($("retrain-force").checked) body.force = true;
  setMsg("jobs-msg", "queueing…");
  try {
    const r = await api("retrain", { method: "POST", body, admin: true });
    setMsg("jobs-msg", `queued job ${r.job_id.slice(0, 8)} (${r.train_config.objective}, ` +
      `${r.train_config.epochs} epochs)`, "ok");
    state.activeJobs = true;
  } catch (e) {
    setMsg("jobs-msg", `retrain refused: ${e.describe()}`, "error");
  }
  refresh();
}

async function cancelJob(id) {
  try {
    const j = await api(`retrain/${id}/cancel`, { method: "POST", admin: true });
    setMsg("jobs-msg", `job ${id.slice(0, 8)}: ${j.state}${j.cancel_requested ? ", cancel requested" : ""}`, "ok");
  } catch (e) {
    setMsg("jobs-msg", `cancel refused: ${e.describe()}`, "error");
  }
  refresh();
}

// ---- traffic (/metrics) ----------------------------------------------------------------
function renderTraffic(metrics, jobs) {
  const body = $("traffic-body");
  if (!metrics.ok) {
    if (changed("traffic", { error: metrics.error.message })) {
      fill(body, h("p", { class: "empty", text: metrics.error.describe() }));
    }
    return;
  }
  const x = metrics.value;
  const ingest = x.filter((m) => m.name === "specrec_http_requests_total" &&
    m.labels.route === "/interactions" && m.labels.method === "POST");
  const accepted = ingest.filter((m) => m.labels.status.startsWith("2")).reduce((a, m) => a + m.value, 0);
  const refusedBy = {};
  for (const m of ingest) {
    if (!m.labels.status.startsWith("2")) refusedBy[m.labels.status] = (refusedBy[m.labels.status] || 0) + m.value;
  }
  const otherIngest = x.filter((m) => /ingest/.test(m.name));
  const lastIngested = (jobs.ok ? jobs.value.jobs : []).find((j) => j.result && j.result.ingested);
  const sources = answerSources(x);
  const fallbacks = x.filter((m) => m.name === "specrec_fallback_total");
  const recReq = sumWhere(x, "specrec_http_requests_total", (l) => l.route.startsWith("/recommend"));
  const searches = sumWhere(x, "specrec_search_calls_total");
  const queries = sumWhere(x, "specrec_search_queries_total");
  const data = { ingest, otherIngest, lastIngested: lastIngested && lastIngested.result.ingested,
    sources, fallbacks, recReq, searches, queries,
    swaps: sumWhere(x, "specrec_model_swaps_total"), fails: sumWhere(x, "specrec_model_load_failures_total") };
  if (!changed("traffic", data)) return;
  const kv = (rows) => h("table", { class: "grid compact" }, h("tbody", {},
    rows.map(([k, v, id]) => h("tr", {}, h("td", { text: k }), h("td", { class: "num", id, text: fmt(v) })))));
  const sourceRows = ["precomputed", "search", "fold-in", "fallback", ...Object.keys(sources)]
    .filter((k, i, all) => all.indexOf(k) === i)
    .map((k) => [SOURCE_TEXT[k] || k, sources[k] || 0, `answers-${k}`]);
  fill(body, h("div", { class: "traffic" },
    h("h3", { text: "Ingestion (POST /interactions)" }),
    kv([
      ["batches accepted", accepted, "ingest-accepted"],
      ...Object.entries(refusedBy).map(([st, v]) => [`batches refused (${st})`, v]),
      ...otherIngest.map((m) => [m.name + labelText(m.labels), m.value]),
      ["ingested rows in the latest retrain",
        lastIngested ? lastIngested.result.ingested.rows : null, "ingest-rows"],
    ]),
    h("h3", { text: "Recommendation answers by source" }),
    kv([
      ...sourceRows,
      ...fallbacks.map((m) => [`↳ fallback kind: ${m.labels.kind}`, m.value]),
      ["/recommend requests", recReq],
      ["index searches (queries)", searches ? `${fmt(searches)} (${fmt(queries)})` : 0],
    ]),
    h("h3", { text: "Model" }),
    kv([["hot swaps", data.swaps], ["versions refused as invalid", data.fails]]),
  ));
}

function labelText(labels) {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

// ---- playground -----------------------------------------------------------------------
async function recommend(event) {
  event.preventDefault();
  const user = $("play-user").value.trim();
  if (!user) return;
  const params = new URLSearchParams({ k: $("play-k").value || "10" });
  params.set("exclude_seen", $("play-seen").checked ? "true" : "false");
  if ($("play-fallback").checked) params.set("fallback", "popular");
  const before = await settle(api("metrics"));
  const r = await settle(api(`recommend/${encodeURIComponent(user)}?${params}`));
  const after = await settle(api("metrics"));
  const facts = $("play-facts");
  const table = $("play-table");
  if (!r.ok) {
    setMsg("play-msg", r.error.describe(), "error");
    fill(facts);
    fill(table);
    return;
  }
  const b = r.value;
  setMsg("play-msg", `${b.items.length} items for ${b.user_id}`, "ok");
  let source = "";
  if (before.ok && after.ok) {
    const s0 = answerSources(parseMetrics(before.value));
    const s1 = answerSources(parseMetrics(after.value));
    const grew = Object.keys(s1).filter((k) => (s1[k] || 0) > (s0[k] || 0));
    if (grew.length === 1) source = grew[0];
  }
  const origin = b.fallback
    ? `${b.fallback} fallback: the user is unknown; scores are interaction counts`
    : b.source === "fold-in"
      ? "a vector folded in from interactions the model was not trained on; scores are inner products"
      : "the user's embedding; scores are inner products";
  fill(facts,
    h("dt", { text: "model" }), h("dd", { class: "mono", id: "play-version", text: b.model_version }),
    h("dt", { text: "answered from" }), h("dd", { id: "play-origin", text: origin }),
    source ? [h("dt", { text: "answer source" }), h("dd", { id: "play-source",
      text: `${source} (specrec_recommend_answers_total)` })] : null,
    h("dt", { text: "index" }), h("dd", { text: b.exact ? "exact (flat)" : "approximate (IVF / HNSW)" }),
    b.unknown_exclude.length ? [h("dt", { text: "unknown exclude" }),
      h("dd", { text: b.unknown_exclude.join(", ") })] : null,
  );
  fill(table,
    h("thead", {}, h("tr", {}, h("th", { class: "num", text: "rank" }), h("th", { text: "item" }),
      h("th", { class: "num", text: "score" }))),
    h("tbody", {}, b.items.map((it) => h("tr", { "data-item": it.item_id },
      h("td", { class: "num", text: it.rank }), h("td", { class: "mono item", text: it.item_id }),
      h("td", { class: "num", text: fmt(it.score, 5) })))),
  );
  refresh(); // the answer counters in Traffic moved
}

// ---- token ----------------------------------------------------------------------------------
function renderToken() {
  const set = Boolean(token());
  const el = $("token-state");
  el.textContent = set ? "set for this tab" : "none: admin actions will be refused";
  el.className = `token-state${set ? " set" : ""}`;
}

function saveToken(event) {
  event.preventDefault();
  const input = $("token-input");
  const value = input.value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  input.value = "";
  renderToken();
}

// ---- retrain form options from the OpenAPI document ---------------------------------------
function enumOf(schema, components) {
  if (!schema) return [];
  if (schema.$ref) return enumOf(components[schema.$ref.split("/").pop()], components);
  if (schema.enum) return schema.enum.filter((v) => v !== null);
  if (schema.const !== undefined && schema.const !== null) return [schema.const];
  const out = []; // every choice of the alternatives (e.g. the objectives, then "auto")
  for (const key of ["anyOf", "oneOf", "allOf"]) {
    for (const sub of schema[key] || []) {
      for (const v of enumOf(sub, components)) if (!out.includes(v)) out.push(v);
    }
  }
  return out;
}

async function loadForm() {
  const doc = await settle(api("openapi.json"));
  if (!doc.ok) return;
  const components = doc.value.components.schemas;
  const props = (components.RetrainRequest || {}).properties || {};
  for (const [field, id] of [["objective", "retrain-objective"], ["dataset", "retrain-dataset"]]) {
    const select = $(id);
    for (const v of enumOf(props[field], components)) select.append(h("option", { value: v, text: v }));
  }
}

// ---- refresh loop -------------------------------------------------------------------------
async function refresh() {
  if (state.refreshing) {
    state.again = true; // an action changed something: refresh once more right after
    return;
  }
  state.refreshing = true;
  state.again = false;
  try {
    const [ready, spectrum, models, jobs, metricsText] = await Promise.all([
      settle(api("readyz")),
      settle(api("health/spectrum")),
      settle(api("models")),
      settle(api("retrain?limit=10")),
      settle(api("metrics")),
    ]);
    const metrics = metricsText.ok ? { ok: true, value: parseMetrics(metricsText.value) } : metricsText;
    if (spectrum.ok) state.thresholds = spectrum.value.thresholds;
    const down = [ready, models, jobs].find((x) => !x.ok && x.error.status === 0);
    const banner = $("banner");
    banner.hidden = !down;
    banner.textContent = down ? down.error.message : "";
    $("live").className = down ? "live stale" : "live";
    renderServing(ready, spectrum, models, metrics.ok ? metrics.value : null);
    renderVersions(models);
    renderJobs(jobs);
    renderTraffic(metrics, jobs);
    const active = jobs.ok ? jobs.value.jobs.filter((j) => !FINAL_STATES.has(j.state)) : [];
    if (state.activeJobs && !active.length) {
      // a job just ended: the new model is hot-swapped in within the watch interval
      state.fastUntil = Date.now() + 10000;
    }
    state.activeJobs = active.length > 0;
    $("jobs-poll").textContent = state.activeJobs
      ? "a job is active: refreshing every second" : "refreshing every 5 s";
  } finally {
    state.refreshing = false;
    clearTimeout(state.timer);
    const fast = state.activeJobs || Date.now() < state.fastUntil;
    state.timer = setTimeout(refresh, state.again ? 0 : fast ? FAST_MS : SLOW_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", saveToken);
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderToken();
  });
  $("retrain-form").addEventListener("submit", startRetrain);
  $("play-form").addEventListener("submit", recommend);
  renderToken();
  loadForm();
  refresh();
});
