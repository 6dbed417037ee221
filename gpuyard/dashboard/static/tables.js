// Tables of jobs and gangs, teams, health events and network, built with textContent
// only (names and messages come from the cluster; nothing is parsed as HTML).

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fill(table, rows, cells) {
  const body = table.tBodies[0];
  const out = document.createDocumentFragment();
  for (const r of rows) {
    const tr = el("tr");
    for (const c of cells(r)) tr.append(typeof c === "object" && c !== null ? c : el("td", c));
    out.append(tr);
  }
  body.replaceChildren(out);
}

const WAITING = new Set(["Pending", "Scheduling", "Restarting", ""]);
export const MAX_JOBS = 500;

export function jobsTable(table, jobs) {
  const rows = [...jobs.values()].sort(
    (a, b) => (WAITING.has(b.phase) - WAITING.has(a.phase)) || (b.created > a.created ? 1 : b.created < a.created ? -1 : 0)
  );
  fill(table, rows.slice(0, MAX_JOBS), (j) => [
    j.namespace, j.name, j.kind === "TrainingJob" ? "job" : "gang", j.team || "-",
    j.gpusPerReplica ? `${j.replicas} × ${j.gpusPerReplica} GPUs` : `${j.replicas} pods`,
    j.phase, j.running, j.restarts, el("td", j.why || "", "why"),
  ]);
  table.dataset.rows = String(rows.length);
  return rows.length;
}

export function teamsTable(table, teams) {
  const rows = [...teams.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  // GPUs (the teams controller's status.gpus); nodes as "assigned of wanted"
  fill(table, rows, (t) => {
    const g = t.gpus || {};
    return [
      t.name, `${t.assigned} of ${t.wanted}`, g.assigned ?? 0, g.inUse ?? 0, g.lentOut ?? 0,
      g.borrowedIn ?? 0, el("td", g.shortfall ?? 0, t.shortfall ? "why" : ""), t.reason || "",
    ];
  });
}

export function eventsTable(table, events) {
  const rows = [...events.values()].sort((a, b) => (a.time < b.time ? 1 : -1)).slice(0, 100);
  fill(table, rows, (e) => [
    e.time.replace("T", " ").replace("Z", ""), e.node,
    el("td", e.reason, e.type === "Warning" ? "why" : ""), e.message,
  ]);
}

function rate(bps) {
  const u = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
  let v = bps, i = 0;
  while (v >= 1000 && i < u.length - 1) { v /= 1000; i += 1; }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${u[i]}`;
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = n, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v < 10 && i ? 1 : 0)} ${u[i]}`;
}

export function networkTable(table, network) {
  const rows = [...network.values()].sort((a, b) => b.internetBitsPerSecond - a.internetBitsPerSecond);
  fill(table, rows, (n) => [
    n.namespace, rate(n.internetBitsPerSecond), rate(n.clusterBitsPerSecond),
    rate(n.inBitsPerSecond), bytes(n.sentBytes),
  ]);
  return rows.length;
}
