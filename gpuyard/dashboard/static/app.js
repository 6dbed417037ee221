// The dashboard page: signs in, follows /api/events (server-sent events: a snapshot,
// then batches of changed rows) and keeps the map and tables current.
import { NodeMap, COLORS } from "./map.js";
import { el, jobsTable, teamsTable, eventsTable, networkTable } from "./tables.js";

const $ = (id) => document.getElementById(id);
const state = {
  jobs: new Map(), teams: new Map(), events: new Map(), network: new Map(),
  brake: null, tablesDirty: false, deltas: 0,
};

const map = new NodeMap($("map"), { onHover: hover, onClick: showDetail });
window.gpuyard = { map, state }; // for tests and benchmarks

async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  const body = await r.json().catch(() => ({}));
  return { ok: r.ok, status: r.status, body };
}

async function signIn(token) {
  return api("/api/session", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
}

async function start() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  let refused = "";
  if (m) {
    history.replaceState(null, "", location.pathname + location.search);
    // the session's answer names the user: no second round trip to ask who it is
    const r = await signIn(decodeURIComponent(m[1]));
    if (r.ok) {
      performance.mark("gpuyard-signed-in");
      return signedIn(r.body.user);
    }
    refused = r.body.error || `the link's token was refused (${r.status})`;
  }
  const who = await api("/api/whoami"); // a session cookie from before, or none
  if (!who.ok) return askToken(refused || who.body.error || "");
  performance.mark("gpuyard-signed-in");
  signedIn(who.body.user);
}

function askToken(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await signIn($("token").value.trim());
  $("token").value = "";
  if (!r.ok) return askToken(r.body.error || `refused (${r.status})`);
  signedIn(r.body.user);
});

$("signout").addEventListener("click", async () => {
  await api("/api/session", { method: "DELETE" });
  location.reload();
});

let source = null;
function signedIn(user) {
  $("login").hidden = true;
  $("main").hidden = false;
  $("who").textContent = user;
  $("signout").hidden = false;
  connect();
}

function connect() {
  if (source) source.close();
  source = new EventSource("/api/events");
  source.addEventListener("snapshot", (e) => {
    if (!performance.getEntriesByName("gpuyard-snapshot-received").length) performance.mark("gpuyard-snapshot-received");
    snapshot(JSON.parse(e.data));
  });
  source.addEventListener("delta", (e) => delta(JSON.parse(e.data)));
  source.addEventListener("unauthorized", () => { source.close(); askToken("signed out: the token is no longer accepted"); });
  source.onopen = () => live("live", "live");
  source.onerror = async () => {
    live("lost", "reconnecting…");
    const who = await api("/api/whoami");
    if (who.status === 401 || who.status === 403) { source.close(); askToken(who.body.error || ""); }
  };
}

function live(s, text) { $("live").dataset.state = s; $("live").textContent = text; }

function keyed(rows, key) { return new Map(rows.map((r) => [key(r), r])); }

function snapshot(s) {
  if (!performance.getEntriesByName("gpuyard-snapshot").length) performance.mark("gpuyard-snapshot");
  map.replace(s.nodes);
  state.jobs = keyed(s.jobs, (j) => `${j.namespace}/${j.name}`);
  state.teams = keyed(s.teams, (t) => t.name);
  state.events = keyed(s.events, (e) => e.id);
  state.network = keyed(s.network, (n) => n.namespace);
  state.brake = s.brake;
  tablesSoon();
}

function merge(target, rows) {
  for (const [k, v] of Object.entries(rows || {})) {
    if (v === null) target.delete(k); else target.set(k, v);
  }
}

function delta(d) {
  state.deltas += 1;
  if (d.nodes) map.update(d.nodes);
  merge(state.jobs, d.jobs);
  merge(state.teams, d.teams);
  merge(state.events, d.events);
  merge(state.network, d.network);
  if (d.brake && d.brake.brake) state.brake = d.brake.brake;
  document.body.dataset.deltas = String(state.deltas);
  tablesSoon();
}

// Tables and counts are rebuilt at most every 250 ms; the map repaints every frame.
let tablesTimer = 0;
function tablesSoon() {
  if (!tablesTimer) tablesTimer = setTimeout(() => { tablesTimer = 0; tables(); }, 250);
  legend();
}

function legend() {
  const counts = map.counts();
  const box = $("legend");
  box.replaceChildren(...Object.entries(COLORS).map(([s, c]) => {
    const e = el("span", `${s} ${counts[s] || 0}`);
    e.style.setProperty("--c", c);
    e.dataset.state = s;
    e.dataset.count = String(counts[s] || 0);
    return e;
  }));
  let gpus = 0, used = 0;
  for (const r of map.nodes.values()) { gpus += r.gpus; used += r.used; }
  $("node-count").textContent = `${map.nodes.size} nodes`;
  $("summary").textContent = `${used} of ${gpus} GPUs allocated`;
}

function tables() {
  const n = jobsTable($("jobs"), state.jobs);
  $("job-count").textContent = `${n}`;
  teamsTable($("teams"), state.teams);
  eventsTable($("events"), state.events);
  $("network-none").hidden = networkTable($("network"), state.network) > 0;
  const b = state.brake;
  $("brake").hidden = !(b && b.state === "tripped");
  if (b && b.state === "tripped") {
    $("brake").textContent = `Health brake tripped${b.trippedAt ? ` at ${b.trippedAt}` : ""}: ${b.message} (${b.held} nodes held back; reset with 'gpuyard health brake reset')`;
  }
}

// -------------------------------------------------------------- hover and click

let hoverTimer = 0, hoverName = "";
function hover(node, e) {
  const tip = $("tooltip");
  if (!node) { tip.hidden = true; hoverName = ""; return; }
  const wrap = $("map").getBoundingClientRect();
  tip.style.left = `${Math.min(e.clientX - wrap.left + 14, wrap.width - 300)}px`;
  tip.style.top = `${e.clientY - wrap.top + 14}px`;
  if (node.name === hoverName) return;
  hoverName = node.name;
  tip.hidden = false;
  tip.replaceChildren(...summaryLines(node));
  clearTimeout(hoverTimer);
  hoverTimer = setTimeout(async () => {
    const r = await api(`/api/nodes/${encodeURIComponent(node.name)}`);
    if (r.ok && hoverName === node.name) tip.replaceChildren(...summaryLines(node), ...detailLines(r.body, 6));
  }, 200);
}

function summaryLines(n) {
  return [
    el("strong", n.name), el("div", `${n.state} · ${n.used}/${n.gpus} GPUs · ${n.pods} pods`),
    el("div", [n.team && `team ${n.team}`, n.rack, n.zone, n.pool].filter(Boolean).join(" · ")),
  ];
}

function detailLines(d, maxPods) {
  const out = [];
  const bad = d.conditions.filter((c) => !c.ok);
  for (const c of bad) out.push(el("div", `${c.type}=${c.status} ${c.reason}: ${c.message}`, "bad"));
  if (d.taints.length) out.push(el("div", `taints: ${d.taints.join(", ")}`));
  const pods = d.podList.slice(0, maxPods);
  for (const p of pods) out.push(el("div", `${p.namespace}/${p.name} ${p.phase} ${p.gpus} GPU`));
  if (d.podList.length > pods.length) out.push(el("div", `… ${d.podList.length - pods.length} more pods`));
  return out;
}

async function showDetail(node) {
  const box = $("detail");
  const r = await api(`/api/nodes/${encodeURIComponent(node.name)}`);
  if (!r.ok) return;
  const d = r.body;
  const close = el("button", "close");
  close.addEventListener("click", () => { box.hidden = true; });
  const conds = el("table");
  conds.append(...d.conditions.map((c) => {
    const tr = el("tr", null, c.ok ? "" : "bad");
    tr.append(el("td", c.type), el("td", c.status), el("td", c.reason), el("td", c.message));
    return tr;
  }));
  const pods = el("table");
  pods.append(...d.podList.map((p) => {
    const tr = el("tr");
    tr.append(el("td", `${p.namespace}/${p.name}`), el("td", p.phase), el("td", `${p.gpus} GPU`), el("td", p.priorityClass));
    return tr;
  }));
  box.replaceChildren(
    close, el("h3", d.name), ...summaryLines(d),
    el("div", `taints: ${d.taints.join(", ") || "none"}`),
    el("h3", "Conditions"), conds, el("h3", `Pods (${d.podList.length})`), pods,
  );
  box.dataset.node = d.name;
  box.hidden = false;
}

start();
