// The Switchyard console: rehearsal in the browser through the filter's own decision
// core (wasm-bindgen), and a live view of the running canary from Envoy's admin, read
// through the sidecar (one origin). No build step, no network beyond this origin.
import init, { rehearse, check_config, split } from './pkg/switchyard_console.js';

const $ = (id) => document.getElementById(id);
const COLORS = ['#1c7ed6', '#e8590c', '#2f9e44', '#9c36b5', '#f08c00', '#0c8599', '#c2255c'];
const SVG = 'http://www.w3.org/2000/svg';

// What the browser tests (and curious people) can read: window.switchyard.
const api = { ready: false, report: null, error: null, live: { samples: 0, transitions: [] } };
window.switchyard = api;

// ---------------------------------------------------------------- small helpers

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svgEl(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function parseAnswer(text) {
  const v = JSON.parse(text);
  if (v.error) {
    const at = v.error.at ? ` at ${v.error.at}` : '';
    const err = new Error(`${v.error.input}${at}: ${v.error.message}`);
    err.detail = v.error;
    throw err;
  }
  return v.ok;
}

function showError(id, message) {
  const box = $(id);
  box.hidden = !message;
  box.textContent = message || '';
}

function table(tbl, head, rows) {
  tbl.replaceChildren();
  const tr = el('tr');
  head.forEach((h) => tr.append(el('th', {}, h)));
  tbl.append(tr);
  for (const r of rows) {
    const row = el('tr');
    r.forEach((c) => row.append(el('td', {}, c === null || c === undefined ? '-' : String(c))));
    tbl.append(row);
  }
}

// ---------------------------------------------------------------- charts (SVG)

// Lines over x; `hline` draws a dashed reference (the slow threshold).
function lineChart(svg, xs, series, { yMax, hline, hlineLabel } = {}) {
  svg.replaceChildren();
  const w = svg.clientWidth || 600, h = svg.clientHeight || 220, pad = { l: 38, r: 8, t: 8, b: 18 };
  const xMax = xs.length ? xs[xs.length - 1] : 1, xMin = xs.length ? Math.min(xs[0], 0) : 0;
  let top = yMax ?? 0;
  if (yMax === undefined) {
    for (const s of series) for (const v of s.values) if (v !== null && v > top) top = v;
    if (hline && hline > top) top = hline;
    top = top > 0 ? top * 1.1 : 1;
  }
  const x = (v) => pad.l + ((v - xMin) / ((xMax - xMin) || 1)) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (Math.min(v, top) / top) * (h - pad.t - pad.b);
  svg.append(svgEl('line', { x1: pad.l, y1: h - pad.b, x2: w - pad.r, y2: h - pad.b, class: 'axis' }));
  svg.append(svgEl('line', { x1: pad.l, y1: pad.t, x2: pad.l, y2: h - pad.b, class: 'axis' }));
  svg.append(svgEl('text', { x: 2, y: pad.t + 8, class: 'label' }, top.toFixed(top < 10 ? 1 : 0)));
  svg.append(svgEl('text', { x: 2, y: h - pad.b, class: 'label' }, '0'));
  svg.append(svgEl('text', { x: w - pad.r - 30, y: h - 4, class: 'label' }, `${xMax.toFixed(0)} s`));
  if (hline) {
    svg.append(svgEl('line', { x1: pad.l, x2: w - pad.r, y1: y(hline), y2: y(hline), stroke: '#e03131', 'stroke-dasharray': '4 3' }));
    svg.append(svgEl('text', { x: pad.l + 4, y: y(hline) - 3, class: 'label' }, hlineLabel || ''));
  }
  let legendX = pad.l + 8;
  series.forEach((s, i) => {
    let d = '';
    let pen = false;
    s.values.forEach((v, k) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${x(xs[k]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    const color = COLORS[i % COLORS.length];
    svg.append(svgEl('path', { d, fill: 'none', stroke: color, 'stroke-width': 1.6, 'data-series': s.name }));
    svg.append(svgEl('text', { x: legendX, y: pad.t + 10, fill: color, class: 'legend' }, s.name));
    legendX += 12 + 6.5 * s.name.length;
  });
}

// One row per target, coloured by state; `marks` are [time s, label] for transitions.
function stateChart(svg, xs, rows, marks = []) {
  svg.replaceChildren();
  const w = svg.clientWidth || 600, h = svg.clientHeight || 150, padL = 90, padR = 8;
  const xMin = xs.length ? Math.min(xs[0], 0) : 0, xMax = xs.length ? xs[xs.length - 1] : 1;
  const x = (v) => padL + ((v - xMin) / ((xMax - xMin) || 1)) * (w - padL - padR);
  const rowH = Math.max(12, Math.min(28, (h - 20) / Math.max(rows.length, 1)));
  rows.forEach((r, i) => {
    const y0 = 4 + i * (rowH + 4);
    svg.append(svgEl('text', { x: 2, y: y0 + rowH * 0.7, class: 'label' }, r.name));
    let start = 0;
    for (let k = 1; k <= r.states.length; k++) {
      if (k === r.states.length || r.states[k] !== r.states[start]) {
        const from = start === 0 ? xMin : xs[start - 1];
        const rect = svgEl('rect', {
          x: x(from), y: y0, width: Math.max(1, x(xs[k - 1]) - x(from)), height: rowH,
          class: `state-${r.states[start]}`, 'data-state': r.states[start], 'data-target': r.name,
        });
        rect.append(svgEl('title', {}, `${r.name}: ${r.states[start]}`));
        svg.append(rect);
        start = k;
      }
    }
  });
  for (const [t, label] of marks) {
    const line = svgEl('line', { x1: x(t), x2: x(t), y1: 0, y2: h - 14, stroke: '#1d2330', 'stroke-width': 0.6 });
    line.append(svgEl('title', {}, label));
    svg.append(line);
  }
  svg.append(svgEl('text', { x: w - padR - 30, y: h - 2, class: 'label' }, `${xMax.toFixed(0)} s`));
}

// ---------------------------------------------------------------- rehearse view

function currentConfig() { return $('config').value; }

function checkConfig() {
  try {
    parseAnswer(check_config(currentConfig()));
    showError('config-error', '');
    buildSliders();
    return true;
  } catch (e) {
    showError('config-error', e.message);
    return false;
  }
}

function runRehearsal() {
  $('run-status').textContent = 'running…';
  showError('scenario-error', '');
  const started = performance.now();
  let report;
  try {
    report = parseAnswer(rehearse(currentConfig(), $('scenario').value, api.snapshot ? JSON.stringify(api.snapshot) : undefined, api.replayLog ?? undefined));
  } catch (e) {
    api.error = e.message;
    api.report = null;
    const box = e.detail && e.detail.input === 'config' ? 'config-error' : 'scenario-error';
    showError(box, e.message);
    $('run-status').textContent = 'refused';
    document.body.dataset.rehearsal = 'error';
    return;
  }
  const simulated = performance.now() - started;
  renderReport(report);
  const total = performance.now() - started;
  api.report = report;
  api.error = null;
  api.timing = { simulate_ms: simulated, total_ms: total };
  $('run-status').textContent = `${report.requests.toLocaleString()} requests simulated in ${simulated.toFixed(0)} ms, drawn in ${(total - simulated).toFixed(0)} ms`;
  document.body.dataset.rehearsal = 'done';
}

function renderReport(r) {
  $('result').hidden = false;
  $('verdict').textContent = r.expectations.length
    ? (r.passed ? 'All expectations met' : 'Some expectations are unmet')
    : `${r.requests.toLocaleString()} requests, ${r.client_error_pct}% client-visible errors`;
  $('verdict').className = r.passed ? 'met' : 'unmet';
  table($('targets'), ['target', 'requests', 'share %', 'errors', 'p50 ms', 'p90 ms', 'p99 ms', 'why routed'],
    r.targets.map((t) => [t.name, t.requests, t.share_pct, t.errors + t.timed_out, t.p50_ms, t.p90_ms, t.p99_ms,
      Object.entries(t.by_reason).map(([k, v]) => `${k} ${v}`).join(', ')]));
  const xs = r.series.t_s;
  lineChart($('chart-share'), xs, r.targets.map((t, i) => ({ name: t.name, values: r.series.targets[i].share_pct })), { yMax: 100 });
  let threshold;
  try { threshold = (JSON.parse(currentConfig()).routes[0].degrade || {}).slow_threshold_ms ?? 800; } catch { threshold = 800; }
  lineChart($('chart-latency'), xs, r.targets.map((t, i) => ({ name: t.name, values: r.series.targets[i].p99_ms })),
    { hline: threshold, hlineLabel: `slow threshold ${threshold} ms` });
  const firstEnvoy = r.transitions.filter((t) => t.envoy === 0);
  stateChart($('chart-state'), xs, r.targets.map((t, i) => ({ name: t.name, states: r.series.targets[i].state })),
    firstEnvoy.map((t) => [t.t_ms / 1000, `${t.target}: ${t.from} -> ${t.to} (${t.why})`]));
  const list = (id, items) => { $(id).replaceChildren(...items.map(([text, cls]) => el('li', cls ? { class: cls } : {}, text))); };
  list('expectations', r.expectations.map((c) => [`${c.met ? 'met' : 'UNMET'}: ${c.detail}`, c.met ? 'met' : 'unmet']));
  list('reactions', r.reactions.map((x) => [`${x.target} turned ${x.kind === 'degraded' ? 'bad' : 'good'} at ${x.event_s} s: envoy ${x.envoy} ${x.kind} ${x.after_ms === null ? 'never' : `after ${x.after_ms} ms`}, ${x.requests_until} requests sent it meanwhile`]));
  list('moves', r.weight_changes.map((w) => [`${w.at_s} s, route ${w.route}: ${w.moved.map((m) => `${m.from} → ${m.to} ${m.users}`).join(', ') || 'nobody moved'} of ${w.users} users; ${w.left_a_raised_target} left a target whose weight rose`]));
  list('transitions', r.transitions.slice(0, 200).map((t) => [`${(t.t_ms / 1000).toFixed(3)} s envoy ${t.envoy} ${t.target}: ${t.from} → ${t.to} (${t.why})`]));
}

// Weight sliders: the core's bucketing over 10,000 users as you drag.
function buildSliders() {
  let cfg;
  try { cfg = JSON.parse(currentConfig()); } catch { return; }
  const route = cfg.routes && cfg.routes[0];
  if (!route) return;
  const box = $('sliders');
  const names = route.targets.map((t) => t.name).join(',');
  if (box.dataset.targets === names) return;
  box.dataset.targets = names;
  box.replaceChildren();
  for (const t of route.targets) {
    const row = el('div', { class: 'slider' });
    const input = el('input', { type: 'range', min: 0, max: 100, value: t.weight ?? 0, 'data-target': t.name, id: `weight-${t.name}` });
    const out = el('span', {}, String(t.weight ?? 0));
    input.addEventListener('input', () => { out.textContent = input.value; showSplit(); });
    row.append(el('span', {}, t.name), input, out);
    box.append(row);
  }
  showSplit();
}

function showSplit() {
  const weights = {};
  for (const input of $('sliders').querySelectorAll('input')) weights[input.dataset.target] = Number(input.value);
  try {
    const s = parseAnswer(split(currentConfig(), undefined, JSON.stringify(weights), 10000));
    api.split = s;
    const shares = Object.entries(s.shares_pct).map(([k, v]) => `${k} ${v}%`).join(' · ');
    const moved = s.change ? s.change.moved.map((m) => `${m.from} → ${m.to}: ${m.users}`).join(', ') : 'nobody moves';
    const left = s.change ? `; ${s.change.left_a_raised_target} users leave a target whose weight rose` : '';
    $('split').textContent = `${shares} — ${moved}${left}`;
  } catch (e) {
    $('split').textContent = e.message;
  }
}

async function loadSchema() {
  try {
    const res = await fetch('/v1/snapshot');
    if (!res.ok) return;
    const snap = await res.json();
    api.snapshot = snap;
    const box = $('schema-matrix');
    box.replaceChildren();
    let cfg = {};
    try { cfg = JSON.parse(currentConfig()); } catch { /* shown elsewhere */ }
    const servers = {};
    for (const r of cfg.routes || []) for (const t of r.targets) if (t.revision) (servers[t.revision] ||= []).push(t.name);
    for (const [subject, s] of Object.entries(snap.schema.subjects)) {
      const revs = s.revisions.map((r) => r.revision);
      const tbl = el('table', { 'data-subject': subject });
      const head = el('tr');
      head.append(el('th', {}, `${subject}: client ↓ / server →`));
      for (const r of revs) head.append(el('th', {}, `@${r} ${(servers[`${subject}@${r}`] || []).join(' ')}`));
      tbl.append(head);
      for (const c of revs) {
        const row = el('tr');
        row.append(el('td', {}, `@${c}`));
        for (const sv of revs) {
          const p = s.pairs.find((x) => x.client === c && x.server === sv);
          const ok = c === sv || (p && p.requests && p.responses !== false);
          row.append(el('td', { class: ok ? 'met' : 'unmet' }, ok ? '✓' : '✗'));
        }
        tbl.append(row);
      }
      box.append(tbl);
    }
  } catch { /* no registry: nothing to show */ }
}

// ---------------------------------------------------------------- live view

const live = { history: [], prev: null, states: {}, started: Date.now(), items: new Map() };
const STATE = ['healthy', 'degraded', 'probing'];

function statValue(stats, name) {
  for (const s of stats) if (s.name === name) return s.value;
  return undefined;
}

async function pollLive() {
  let body;
  try {
    const res = await fetch('/console/api/envoy/stats');
    body = await res.json();
    if (!res.ok) throw new Error(body.error || res.statusText);
  } catch (e) {
    $('live-status').textContent = `Envoy's stats are unavailable: ${e.message}`;
    return;
  }
  const stats = (body.stats || []).filter((s) => 'value' in s);
  const histos = (body.stats || []).find((s) => s.histograms);
  const now = (Date.now() - live.started) / 1000;
  // Targets from the per-target request counters, whichever build's prefix.
  const targets = {};
  for (const s of stats) {
    const m = s.name.match(/^(.*switchyard)\.route\.([^.]+)\.target\.([^.]+)\.requests$/);
    if (m) targets[`${m[2]}/${m[3]}`] = { prefix: m[1], route: m[2], target: m[3], requests: s.value };
  }
  const cfg = api.liveConfig;
  const sample = { t: now, targets: {} };
  let total = 0;
  for (const [key, t] of Object.entries(targets)) {
    const base = `${t.prefix}.route.${t.route}.target.${t.target}`;
    const state = STATE[statValue(stats, `${base}.state`) ?? 0] || 'healthy';
    const prev = live.prev && live.prev.targets[key];
    const dt = live.prev ? now - live.prev.t : 1;
    const rate = prev ? Math.max(0, (t.requests - prev.requests) / dt) : 0;
    total += rate;
    let q = {};
    if (histos) {
      const names = histos.histograms.computed_quantiles || [];
      const qs = histos.histograms.supported_quantiles || [];
      const h = names.find((x) => x.name === `${base}.latency_ms`);
      if (h) h.values.forEach((v, i) => { if (v.interval !== null && v.interval !== undefined) q[qs[i]] = v.interval; });
    }
    // Errors by grpc-status from the gRPC stats filter, per upstream cluster.
    const cluster = clusterOf(cfg, t.route, t.target);
    const codes = {};
    if (cluster) {
      for (const s of stats) {
        const m = s.name.match(new RegExp(`^cluster\\.${cluster.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.grpc\\..*\\.(\\d+)$`));
        if (m) codes[m[1]] = (codes[m[1]] || 0) + s.value;
      }
    }
    const prevCodes = (prev && prev.codes) || {};
    const delta = {};
    for (const [c, v] of Object.entries(codes)) delta[c] = Math.max(0, v - (prevCodes[c] || 0));
    // The rule behind each move: the filter counts them per target (`transitions.<rule>`).
    const rules = {};
    const rulePrefix = `${base}.transitions.`;
    for (const s of stats) {
      if (s.name.startsWith(rulePrefix)) rules[s.name.slice(rulePrefix.length)] = s.value;
    }
    const fired = Object.keys(rules).filter((r) => prev && rules[r] > ((prev.rules || {})[r] || 0));
    sample.targets[key] = { requests: t.requests, rate, state, p50: q[50], p90: q[90], p99: q[99], codes, delta, rules };
    if (live.states[key] && live.states[key] !== state) {
      const tr = { t: now, target: key, from: live.states[key], to: state, at: new Date().toLocaleTimeString(), rule: null };
      api.live.transitions.push(tr);
      live.items.set(tr, el('li', {}, transitionText(tr)));
      $('live-transitions').append(live.items.get(tr));
    }
    // A rule's count may reach Envoy a poll after the state does: name it when it comes.
    const open = api.live.transitions.filter((tr) => tr.target === key && !tr.rule && now - tr.t < 10);
    for (const tr of open) {
      tr.rule = fired.find((r) => ruleLeadsTo(r) === tr.to) || null;
      if (tr.rule) live.items.get(tr).textContent = transitionText(tr);
    }
    live.states[key] = state;
  }
  live.prev = sample;
  live.history.push(sample);
  if (live.history.length > 300) live.history.shift();
  api.live.samples += 1;
  api.live.states = { ...live.states };
  const keys = Object.keys(targets);
  table($('live-targets'), ['target', 'state', 'req/s', 'share %', 'error rate by grpc-status', 'p50 ms', 'p90 ms', 'p99 ms'],
    keys.map((k) => {
      const s = sample.targets[k];
      const n = Object.values(s.delta).reduce((a, b) => a + b, 0);
      const errs = Object.entries(s.delta).filter(([c, v]) => c !== '0' && v > 0).map(([c, v]) => `${c}: ${(100 * v / (n || 1)).toFixed(1)}%`).join(', ') || '-';
      const ms = (v) => (v === undefined ? '-' : v.toFixed(1));
      return [k, s.state, s.rate.toFixed(1), total ? (100 * s.rate / total).toFixed(1) : '-', errs, ms(s.p50), ms(s.p90), ms(s.p99)];
    }));
  const xs = live.history.map((h) => h.t);
  lineChart($('live-rate'), xs, keys.map((k) => ({ name: k, values: live.history.map((h) => (h.targets[k] ? h.targets[k].rate : null)) })));
  lineChart($('live-latency'), xs, keys.map((k) => ({ name: k, values: live.history.map((h) => (h.targets[k] ? h.targets[k].p99 ?? null : null)) })));
  stateChart($('live-state'), xs, keys.map((k) => ({ name: k, states: live.history.map((h) => (h.targets[k] ? h.targets[k].state : 'healthy')) })),
    api.live.transitions.map((t) => [t.t, `${t.target}: ${t.from} -> ${t.to}${t.rule ? ` (${t.rule})` : ''}`]));
  $('live-status').textContent = `${keys.length} targets; polled ${new Date().toLocaleTimeString()}`;
}

// A line of the Live view's list of transitions.
function transitionText(tr) {
  return `${tr.at} ${tr.target}: ${tr.from} → ${tr.to}${tr.rule ? ` (${tr.rule})` : ''}`;
}

// The state a rule moves a target to (see the filter's stats: `transitions.<rule>`).
function ruleLeadsTo(rule) {
  if (rule === 'cooldown_over') return 'probing';
  if (rule === 'probes_passed') return 'healthy';
  return 'degraded';
}

function clusterOf(cfg, route, target) {
  const r = cfg && (cfg.routes || []).find((x) => x.name === route);
  const t = r && r.targets.find((x) => x.name === target);
  return t && t.cluster;
}

async function pollModels() {
  try {
    const res = await fetch('/v1/models');
    if (!res.ok) return;
    const m = await res.json();
    const rows = (m.versions || []).map((v) => [v.name, v.state, (v.labels || []).join(' '), v.healthy ? 'healthy' : 'unhealthy',
      v.provider, `${v.queue_depth}/${v.queue_capacity}`, v.fault ? JSON.stringify(v.fault) : '-']);
    for (const r of m.rejected || []) rows.push([r.name || '', 'rejected', '', '', '', '', r.error || '']);
    table($('live-models'), ['version', 'state', 'labels', 'health', 'provider', 'queue', 'chaos'], rows);
  } catch { /* the sidecar's own page: it answers */ }
}

// ---------------------------------------------------------------- start

function showView(name) {
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('active', b.dataset.view === name);
  $('view-rehearse').hidden = name !== 'rehearse';
  $('view-live').hidden = name !== 'live';
  location.hash = name;
}

async function main() {
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => showView(b.dataset.view));
  showView(location.hash === '#live' ? 'live' : 'rehearse');
  await init();
  $('engine-status').textContent = 'engine: the filter core, in your browser';
  let source = 'example';
  let config = null;
  try {
    const res = await fetch('/console/api/envoy/config');
    if (res.ok) { config = await res.text(); source = 'from Envoy'; }
  } catch { /* no Envoy */ }
  if (!config) config = await (await fetch('example/plugin.json')).text();
  try { config = JSON.stringify(JSON.parse(config), null, 2); } catch { /* shown by the check */ }
  api.liveConfig = (() => { try { return JSON.parse(config); } catch { return null; } })();
  $('config').value = config;
  $('config-source').textContent = `(${source})`;
  $('scenario').value = await (await fetch('example/scenario.yaml')).text();
  let pending;
  $('config').addEventListener('input', () => { clearTimeout(pending); pending = setTimeout(checkConfig, 150); });
  $('run').addEventListener('click', runRehearsal);
  // The access log a scenario's `traffic.replay` names: read in the page, like the rest.
  $('replay-log').addEventListener('change', async (e) => {
    const file = e.target.files && e.target.files[0];
    api.replayLog = file ? await file.text() : null;
    $('replay-status').textContent = file ? `${file.name}: ${api.replayLog.split('\n').filter((l) => l.trim()).length.toLocaleString()} lines` : '';
    document.body.dataset.replayLog = file ? 'loaded' : '';
  });
  checkConfig();
  await loadSchema();
  api.ready = true;
  document.body.dataset.ready = 'true';
  pollModels();
  pollLive();
  setInterval(pollLive, 1000);
  setInterval(pollModels, 3000);
}

main().catch((e) => { $('engine-status').textContent = `failed to start: ${e.message}`; api.error = e.message; });
