// attnguide explore: the page's logic. Vanilla JS, no libraries; plots are inline SVG.
"use strict";

const state = { methods: {}, chosen: [], job: null, maxStep: 0, parsed: null };
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f6feb", "#d1242f", "#2da44e", "#bf8700", "#8250df", "#0a7e8c", "#cf222e", "#57606a"];

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  children.forEach((c) => node.append(c));
  return node;
}

async function api(path, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) };
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showError(id, error) {
  const box = $(id);
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

// -- settings -------------------------------------------------------------------------
function settings() {
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const out = { prompt: $("prompt").value, seed: number("seed"), steps: number("steps"),
                guidance_scale: number("guidance-scale"), height: number("height"), width: number("width"),
                parser: $("parser").value };
  if (out.parser === "manual") out.bindings = readBindings();
  return out;
}

// -- parse ----------------------------------------------------------------------------
async function parse() {
  showError("parse-error", null);
  try {
    state.parsed = await api("/api/parse", settings());
    renderParse(state.parsed);
  } catch (error) {
    $("parse-view").hidden = true;
    showError("parse-error", error);
  }
}

function renderParse(parsed) {
  $("parse-view").hidden = false;
  renderArcs(parsed.words);
  const body = $("bindings-table").querySelector("tbody");
  body.replaceChildren();
  parsed.bindings.forEach((b) => addBindingRow(b.entity.text, b.modifiers.map((m) => m.text).join(", ")));
  const tokens = $("tokens-table").querySelector("tbody");
  tokens.replaceChildren(...parsed.tokens.map((t) => el("tr", { class: t.role },
    ...[t.position, t.piece, t.word, t.role].map((text) => el("td", { text })))));
  $("positions-note").textContent = `entity positions ${JSON.stringify(parsed.positions.entities)} ` +
    `(Attend-and-Excite-style losses); all bound positions ${JSON.stringify(parsed.positions.bound)} (SynGen-style)`;
  $("parse-warnings").textContent = parsed.warnings.join("; ");
}

function renderArcs(words) {
  const box = $("arcs");
  box.replaceChildren();
  if (!words.length) { box.textContent = "(this parser gives no dependency parse)"; return; }
  const gap = 90, base = 120, width = gap * words.length + 20;
  const svg = el("svg:svg", { width, height: base + 40 });
  const x = (i) => 20 + i * gap + gap / 2 - 10;
  words.forEach((w) => {
    svg.append(el("svg:text", { x: x(w.index), y: base + 14, "text-anchor": "middle", text: w.text }));
    svg.append(el("svg:text", { x: x(w.index), y: base + 30, "text-anchor": "middle", fill: "#777", text: w.upos }));
    if (w.head < 0) return;
    const a = x(w.head), b = x(w.index), h = Math.min(base - 10, 18 + Math.abs(w.head - w.index) * 22);
    svg.append(el("svg:path", { d: `M${a},${base} C${a},${base - h} ${b},${base - h} ${b},${base - 4}`,
                                 fill: "none", stroke: "#5a6f85" }));
    svg.append(el("svg:circle", { cx: b, cy: base - 3, r: 2.5, fill: "#5a6f85" }));
    svg.append(el("svg:text", { x: (a + b) / 2, y: base - h * 0.75 - 3, "text-anchor": "middle", fill: "#1f6feb",
                                 text: w.deprel }));
  });
  box.append(svg);
}

function addBindingRow(entity = "", modifiers = "") {
  const row = el("tr", {},
    el("td", {}, el("input", { class: "binding-entity", value: entity, "aria-label": "entity" })),
    el("td", {}, el("input", { class: "binding-modifiers", value: modifiers, size: 30, "aria-label": "modifiers" })),
    el("td", {}, el("button", { type: "button", text: "remove", onclick: () => row.remove() })));
  $("bindings-table").querySelector("tbody").append(row);
}

function readBindings() {
  const out = {};
  document.querySelectorAll("#bindings-table tbody tr").forEach((row) => {
    const entity = row.querySelector(".binding-entity").value.trim();
    if (!entity) return;
    out[entity] = row.querySelector(".binding-modifiers").value.split(",").map((m) => m.trim()).filter(Boolean);
  });
  return out;
}

function applyBindings() {
  $("parser").value = "manual";
  parse();
}

// -- methods --------------------------------------------------------------------------
function addMethod(name, values = {}) {
  const info = state.methods[name];
  if (!info) return;
  const card = el("div", { class: "method-card" });
  const entry = { name, card, inputs: {} };
  const rows = Object.entries(info.params).map(([key, p]) => {
    const shown = key in values ? values[key] : JSON.stringify(p.default);
    const input = el("input", { value: shown, "data-param": key, "aria-label": `${name} ${key}` });
    entry.inputs[key] = { input, default: JSON.stringify(p.default) };
    return el("tr", {}, el("td", { text: key }), el("td", {}, input),
      el("td", { class: "desc", text: `${p.type}; default ${JSON.stringify(p.default)}. ${p.description}` }));
  });
  const active = info.default_window ? ` active in steps [${info.default_window}] of the schedule` : "";
  card.append(el("strong", { text: name }), " ",
    el("button", { type: "button", text: "remove", onclick: () => {
      card.remove(); state.chosen = state.chosen.filter((m) => m !== entry); } }),
    el("div", { class: "doc", text: info.doc + active }));
  if (rows.length) card.append(el("table", {}, el("tbody", {}, ...rows)));
  $("method-list").append(card);
  state.chosen.push(entry);
}

function chosenMethods() {
  // only the parameters the user changed travel (as YAML text); the rest are the plugin's defaults
  return state.chosen.map((m) => {
    const params = {};
    for (const [key, { input, default: d }] of Object.entries(m.inputs)) {
      if (input.value.trim() !== d) params[key] = input.value.trim();
    }
    return { name: m.name, params };
  });
}

// -- generate -------------------------------------------------------------------------
async function generate() {
  showError("generate-error", null);
  $("generate-btn").disabled = true;
  try {
    const job = await api("/api/generate", { ...settings(), methods: chosenMethods() });
    await follow(job.id);
  } catch (error) {
    showError("generate-error", error);
  } finally {
    $("generate-btn").disabled = false;
  }
}

async function follow(id) {
  $("progress-box").hidden = false;
  for (;;) {
    const job = await api(`/api/jobs/${id}`);
    const p = job.progress;
    $("progress").value = p.cells ? (p.cell + p.step / Math.max(p.steps, 1)) / p.cells : 0;
    $("progress-text").textContent = job.state === "queued" ? "queued: another generation is running" :
      `${job.state}: method ${p.cell + 1} of ${p.cells}, step ${p.step} of ${p.steps}`;
    if (job.state === "failed") throw new Error(job.error);
    if (job.state === "done") { showJob(job); return; }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function showJob(job) {
  state.job = job;
  const steps = job.cells.length ? job.cells[0].steps : [0];
  state.maxStep = Math.max(...steps);
  $("step-slider").max = state.maxStep;
  $("step-slider").value = Math.min(Number($("step-slider").value), state.maxStep);
  $("results-panel").hidden = false;
  $("results").replaceChildren(...job.cells.map((cell) => resultColumn(job, cell)));
  $("export-recipe").href = `/api/jobs/${job.id}/recipe.yaml`;
  fetch(`/api/jobs/${job.id}/recipe.yaml`).then((r) => r.text()).then((t) => { $("recipe-text").textContent = t; });
  updateStep();
}

function resultColumn(job, cell) {
  const col = el("div", { class: "result-col", "data-label": cell.label });
  col.append(el("h3", { text: `${cell.label} (${cell.seconds.toFixed(1)} s)` }));
  const src = `/api/jobs/${job.id}/image/${cell.label}.png`;
  col.append(el("img", { class: "final-img", alt: `${cell.label} image`, src }));
  const maps = el("div", { class: "maps" });
  cell.words.forEach((word, i) => maps.append(el("figure", {},
    el("img", { class: "map-img", "data-word": i, alt: `${word} at the current step` }),
    el("figcaption", { text: word }))));
  col.append(maps, lossPlot(cell));
  col.append(el("div", { class: "row" },
    el("a", { href: `/api/jobs/${job.id}/image/${cell.label}.png`, download: `${cell.label}.png`, text: "image PNG" }),
    el("a", { class: "sheet-link", download: `${cell.label}.heatmaps.png`, text: "maps PNG (this step)" })));
  return col;
}

function lossPlot(cell) {
  const names = Object.keys(cell.losses);
  const w = 260, h = 130, pad = 28;
  const svg = el("svg:svg", { class: "loss-plot", width: w, height: h + 14 * Math.max(names.length, 1) });
  if (!names.length) {
    svg.append(el("svg:text", { x: 8, y: 20, text: "no loss terms (unguided)" }));
    return svg;
  }
  const points = names.flatMap((n) => cell.losses[n]);
  const ys = points.map((p) => p[1]);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const sx = (s) => pad + (s / Math.max(state.maxStep, 1)) * (w - pad - 6);
  const sy = (v) => h - 16 - ((v - lo) / span) * (h - 28);
  svg.append(el("svg:text", { x: 2, y: 12, text: hi.toPrecision(3) }),
             el("svg:text", { x: 2, y: h - 16, text: lo.toPrecision(3) }));
  names.forEach((name, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const d = cell.losses[name].map((p, k) => `${k ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`)
      .join(" ");
    svg.append(el("svg:path", { d, fill: "none", stroke: colour, "stroke-width": 1.5 }));
    svg.append(el("svg:text", { x: pad, y: h + 12 * (i + 1), fill: colour, text: name }));
  });
  svg.append(el("svg:line", { class: "step-marker", x1: sx(0), x2: sx(0), y1: 4, y2: h - 12, stroke: "#444",
                              "stroke-dasharray": "3 2" }));
  svg.dataset.x0 = pad;
  svg.dataset.width = w - pad - 6;
  return svg;
}

function updateStep() {
  const job = state.job;
  if (!job) return;
  const step = Number($("step-slider").value);
  const mode = $("map-mode").value, alpha = $("alpha").value;
  const hasNone = job.cells.some((c) => c.method === "none");
  const note = mode === "compare" && !hasNone ? " (add none to compare)" : "";
  $("step-label").textContent = `${step} of ${state.maxStep}${note}`;
  document.querySelectorAll(".result-col").forEach((col) => {
    const label = col.dataset.label;
    const cellMode = mode === "compare" && hasNone ? "compare" : "guided";
    col.querySelectorAll("img.map-img").forEach((img) => {
      img.src = `/api/jobs/${job.id}/map/${label}/${step}/${img.dataset.word}.png?mode=${cellMode}&alpha=${alpha}`;
    });
    col.querySelector(".sheet-link").href = `/api/jobs/${job.id}/sheet/${label}.png?steps=${step}&alpha=${alpha}`;
    const marker = col.querySelector(".step-marker");
    if (marker) {
      const svg = marker.ownerSVGElement;
      const x = Number(svg.dataset.x0) + (step / Math.max(state.maxStep, 1)) * Number(svg.dataset.width);
      marker.setAttribute("x1", x);
      marker.setAttribute("x2", x);
    }
  });
}

// -- start ----------------------------------------------------------------------------
async function start() {
  const [info, methods] = await Promise.all([api("/api/info"), api("/api/methods")]);
  $("model-name").textContent = `model: ${info.model}`;
  $("prompt").value = info.defaults.prompt;
  $("steps").value = info.defaults.steps;
  $("parser").replaceChildren(...info.parsers.map((p) => el("option", { value: p, text: p })));
  $("parser").value = info.defaults.parser;
  methods.forEach((m) => { state.methods[m.name] = m; });
  $("add-method-name").replaceChildren(...methods.map((m) => el("option", { value: m.name, text: m.name })));
  info.methods.forEach((m) => addMethod(m.name, m.params || {}));
  $("parse-btn").addEventListener("click", parse);
  $("add-binding").addEventListener("click", () => addBindingRow());
  $("apply-bindings").addEventListener("click", applyBindings);
  $("add-method").addEventListener("click", () => addMethod($("add-method-name").value));
  $("generate-btn").addEventListener("click", generate);
  ["step-slider", "map-mode", "alpha"].forEach((id) => $(id).addEventListener("input", updateStep));
  $("server-status").textContent = "ready";
  document.body.dataset.ready = "1";
}

start().catch((error) => { $("server-status").textContent = `error: ${error.message}`; });
