// synthgen view: every record text is put in the page with textContent (model output is never parsed as HTML).
"use strict";
const $ = (id) => document.getElementById(id);
const state = {page: 0, source: "dataset"};

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

async function api(path, body) {
  const response = await fetch(path, body ? {method: "POST", headers: {"Content-Type": "application/json"},
                                               body: JSON.stringify(body)} : undefined);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function table(node, header, rows) {
  node.replaceChildren();
  const head = el("tr");
  header.forEach((h) => head.append(el("th", h)));
  node.append(head);
  rows.forEach((row) => {
    const tr = el("tr");
    row.forEach((cell) => { const td = el("td", cell); if (typeof cell === "number") td.className = "num"; tr.append(td); });
    node.append(tr);
  });
}

function status(text) { $("status").textContent = text; }

async function loadOverview() {
  const o = await api("/api/overview");
  $("run-name").textContent = o.name;
  $("run-path").textContent = o.path;
  $("review-counts").textContent = `${o.records} records; review: ${o.review.excluded} excluded, ${o.review.approved} approved`;
  table($("funnel"), ["stage", "in", "out", "rejected"], o.funnel.map((s) => [s.stage, s.in, s.out, s.rejected]));
  table($("reasons"), ["reason", "records"], Object.entries(o.rejects_by_reason).sort((a, b) => b[1] - a[1]));
  const figures = $("figures");
  figures.replaceChildren();
  for (const [title, html] of Object.entries(o.figures)) {
    const section = el("section");
    section.append(el("h2", title));
    const body = el("div");
    body.innerHTML = html;  // made by synthgen's report, which escapes every text it shows
    section.append(body);
    figures.append(section);
  }
  fillSelect($("source"), o.sources, (s) => s);
  $("source").value = state.source;
  fillSelect($("leaf"), o.leaves, (s) => s, "any");
  fillSelect($("reason"), o.reasons, (s) => s, "any");
}

function fillSelect(select, values, label, any) {
  const current = select.value;
  select.replaceChildren();
  if (any) { const option = el("option", any); option.value = ""; select.append(option); }
  values.forEach((v) => { const option = el("option", label(v)); option.value = v; select.append(option); });
  select.value = current;
}

function filters() {
  const f = {};
  ["q", "leaf", "reason", "score_min", "score_max", "length_min", "length_max"].forEach((k) => { if ($(k).value) f[k] = $(k).value; });
  return f;
}

async function loadRecords() {
  state.source = $("source").value || "dataset";
  const params = new URLSearchParams({...filters(), source: state.source, page: state.page});
  status("loading...");
  const data = await api("/api/records?" + params);
  const body = $("list").querySelector("tbody");
  body.replaceChildren();
  data.rows.forEach((r) => body.append(recordRow(r)));
  const shown = data.rows.length ? `${data.page * data.size + 1}-${data.page * data.size + data.rows.length}` : "none";
  $("page-info").textContent = `${shown}` + (data.total !== null ? ` of ${data.total}` : (data.more ? " (more)" : ""));
  $("prev").disabled = data.page === 0;
  $("next").disabled = !data.more;
  status("");
}

function recordRow(r) {
  const tr = el("tr");
  tr.dataset.id = r.id;
  tr.className = "row";
  const idCell = el("td");
  const link = el("a", r.id, "open");
  link.href = "#" + r.id;
  link.addEventListener("click", (e) => { e.preventDefault(); openRecord(r.id, tr); });
  idCell.append(link);
  const text = el("td");
  for (const [name, value] of Object.entries(r.fields)) {
    if (value === null || value === undefined) continue;
    const line = el("div", null, "preview");
    line.append(el("b", name + ": "), document.createTextNode(typeof value === "string" ? value : JSON.stringify(value)));
    text.append(line);
  }
  const info = el("td");
  if (r.reason) info.append(el("div", r.reason, "reject"));
  if (r.stage) info.append(el("div", r.stage, "muted"));
  if (r.score !== null) info.append(el("div", "score " + r.score));
  const review = el("td", r.review || "", r.review || "");
  review.classList.add("review");
  const actions = el("td");
  actions.append(decisionButton("Exclude", "excluded", [r.id], "exclude danger"),
                 decisionButton("Approve", "approved", [r.id], "approve"));
  tr.append(idCell, text, info, review, actions);
  return tr;
}

function decisionButton(label, action, ids, cls) {
  const button = el("button", label, cls);
  button.type = "button";
  button.addEventListener("click", () => decide({ids, action}));
  return button;
}

async function decide(body) {
  body.why = $("why").value;
  body.source = state.source;
  const done = await api("/api/review", body);
  status(`${done.written} decision(s) written to review.jsonl`);
  await loadOverview();
  await loadRecords();
  const open = $("record").dataset.id;
  if (open) await openRecord(open);
}

async function openRecord(id, tr) {
  document.querySelectorAll("#list tr.selected").forEach((row) => row.classList.remove("selected"));
  if (tr) tr.classList.add("selected");
  const r = await api("/api/record?" + new URLSearchParams({id}));
  const pane = $("record");
  pane.dataset.id = id;
  pane.replaceChildren();
  const title = el("h2", "record " + r.id);
  title.id = "record-title";
  pane.append(title, el("div", `in ${r.source}` + (r.review ? ` - ${r.review.action} by ${r.review.who}: ${r.review.why}` : ""), "muted"));
  pane.append(decisionButton("Exclude", "excluded", [r.id], "danger"), decisionButton("Approve", "approved", [r.id]));
  if (r.reason) pane.append(el("p", `rejected by ${r.stage}: ${r.reason}` + (r.detail ? ` (${r.detail})` : ""), "reject"));
  pane.append(el("h3", "Fields"));
  for (const [name, value] of Object.entries(r.fields)) {
    pane.append(el("div", name, "field-name"), el("div", typeof value === "string" ? value : JSON.stringify(value, null, 1), "text"));
  }
  if (r.scores) { pane.append(el("h3", "Scores"), el("pre", JSON.stringify({scores: r.scores, judge: r.judge}, null, 1))); }
  pane.append(el("h3", "Provenance"));
  r.steps.forEach((s) => pane.append(stepBox(s)));
  pane.append(el("h3", "Parents"), tree(r.parents, "parents"), el("h3", "Children"), tree(r.children, "children"));
  if (r.parent) pane.append(el("h3", "Compared with parent " + r.parent.id), comparison(r.parent.compare));
}

function stepBox(s) {
  const box = el("div", null, "step");
  const st = s.step;
  box.append(el("div", `${st.stage || "?"} - template ${st.template || "-"}` + (st.leaf ? `, leaf ${st.leaf}` : "")
                       + `, model ${st.model || "?"}` + (st.finish_reason ? `, finish ${st.finish_reason}` : ""), "muted"));
  if (st.placeholders && Object.keys(st.placeholders).length) box.append(el("pre", "placeholders " + JSON.stringify(st.placeholders)));
  if (s.messages) s.messages.forEach((m) => box.append(el("div", m.role, "role"), el("div", m.content, "text prompt")));
  if (s.note) box.append(el("p", s.note, "muted"));
  if (s.completion !== null) box.append(el("div", "raw completion", "role"), el("div", s.completion, "text completion"));
  return box;
}

function tree(nodes, key) {
  const list = el("ul", null, "tree");
  if (!nodes.length) list.append(el("li", "none", "muted"));
  nodes.forEach((n) => {
    const item = el("li");
    const link = el("a", n.id);
    link.href = "#" + n.id;
    link.addEventListener("click", (e) => { e.preventDefault(); openRecord(n.id); });
    item.append(link, el("span", ` (${n.source || "input"}) `, "muted"), el("span", n.preview));
    if ((n[key] || []).length) item.append(tree(n[key], key));
    list.append(item);
  });
  return list;
}

function comparison(fields) {
  const box = el("div");
  fields.forEach((f) => {
    box.append(el("div", f.field, "field-name"));
    const side = el("div", null, "side");
    const diff = el("div", null, "text diff");
    f.diff.forEach(([op, text]) => diff.append(op === "equal" ? document.createTextNode(text) : el(op === "insert" ? "ins" : "del", text)));
    side.append(el("div", f.parent, "text"), diff);
    box.append(side);
  });
  return box;
}

function show(tab) {
  $("overview").hidden = tab !== "overview";
  $("records").hidden = tab !== "records";
  $("tab-overview").classList.toggle("active", tab === "overview");
  $("tab-records").classList.toggle("active", tab === "records");
}

document.addEventListener("DOMContentLoaded", async () => {
  $("tab-overview").addEventListener("click", () => show("overview"));
  $("tab-records").addEventListener("click", () => { show("records"); loadRecords(); });
  $("filters").addEventListener("submit", (e) => { e.preventDefault(); state.page = 0; loadRecords().catch((x) => status(x.message)); });
  $("source").addEventListener("change", () => { state.page = 0; loadRecords(); });
  $("prev").addEventListener("click", () => { state.page -= 1; loadRecords(); });
  $("next").addEventListener("click", () => { state.page += 1; loadRecords(); });
  $("bulk-exclude").addEventListener("click", () => decide({filter: filters(), action: "excluded"}));
  $("bulk-approve").addEventListener("click", () => decide({filter: filters(), action: "approved"}));
  await loadOverview();
  document.body.dataset.ready = "1";
});
