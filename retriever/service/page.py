"""The search page the service serves at ``/``: one self-contained HTML document (inline CSS and
plain JavaScript with ``fetch``; no framework, nothing loaded from the network).

It fills the index selector from ``GET /indexes``, searches with ``GET /search`` and shows each
hit's doc id, score and a snippet of its stored text (``GET /doc``). The page's URL carries the
search (``/?q=...&k=...&index=...`` runs it on load), so a result page can be shared.

For scripts and tests: each hit is an ``li.hit`` with ``data-docid`` and ``data-score`` (the
score exactly as the API returned it); ``#hits`` has ``data-state="done"`` once a search (and
its snippets) has been rendered, and ``#status`` says how many hits, or the error.
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>retriever search</title>
<link rel="icon" href="data:,">
<style>
  :root { color-scheme: light; --ink: #1d2330; --muted: #5b6577; --line: #d9dee7; --accent: #2456c9; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: #f6f7fa; }
  header { padding: 18px 28px 8px; }
  h1 { margin: 0; font-size: 20px; letter-spacing: .02em; }
  h1 span { color: var(--muted); font-weight: 400; font-size: 14px; margin-left: 8px; }
  form { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; padding: 10px 28px 14px;
         border-bottom: 1px solid var(--line); background: #fff; }
  #q { flex: 1 1 420px; padding: 9px 12px; font-size: 16px; border: 1px solid #b9c1cf; border-radius: 6px; }
  #q:focus { outline: 2px solid var(--accent); outline-offset: 0; border-color: var(--accent); }
  label { color: var(--muted); font-size: 13px; }
  select { padding: 7px 8px; border: 1px solid #b9c1cf; border-radius: 6px; background: #fff; font-size: 14px; }
  button { padding: 9px 18px; border: 0; border-radius: 6px; background: var(--accent); color: #fff;
           font-size: 15px; cursor: pointer; }
  main { padding: 6px 28px 28px; max-width: 1000px; }
  #status { color: var(--muted); font-size: 13px; min-height: 1.4em; margin: 10px 0 6px; }
  #status.error { color: #b3261e; }
  ol { list-style: none; margin: 0; padding: 0; }
  li.hit { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
           margin-bottom: 8px; display: grid; grid-template-columns: 2.2em minmax(0, 1fr) auto; column-gap: 10px; }
  /* values from the index: each isolated (a bidi override in an id must not reorder the title after
     it) and wrapped anywhere (a 3,000-character id made the page 54,000 px wide) */
  .docid, .title, .snippet { unicode-bidi: isolate; overflow-wrap: anywhere; }
  .rank { color: var(--muted); font-variant-numeric: tabular-nums; }
  .docid { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-weight: 600; }
  .title { margin-left: 8px; }
  .score { font-family: ui-monospace, Menlo, monospace; color: var(--muted); font-variant-numeric: tabular-nums; }
  .snippet { grid-column: 2 / 4; color: #3a4354; font-size: 14px; margin-top: 3px; }
</style>
</head>
<body>
<header><h1>retriever <span id="served"></span></h1></header>
<form id="search" autocomplete="off">
  <input id="q" name="q" type="search" placeholder="Search the index" aria-label="query" required autofocus>
  <label>k <select id="k" name="k">
    <option value="1">1</option><option value="5">5</option><option value="10" selected>10</option>
    <option value="20">20</option><option value="50">50</option><option value="100">100</option>
  </select></label>
  <label>index <select id="index" name="index"></select></label>
  <button id="go" type="submit">Search</button>
</form>
<main>
  <p id="status" role="status"></p>
  <ol id="hits"></ol>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let latest = 0;  // only the newest search may render

async function getJSON(url) {
  const response = await fetch(url, {headers: {Accept: "application/json"}});
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.detail) || `${response.status} ${response.statusText}`);
  return body;
}

function snippet(doc, width) {
  if (!doc) return "";
  const text = (doc.text || "").replace(/\\s+/g, " ").trim();
  return text.length <= width ? text : text.slice(0, width - 1) + "\\u2026";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function render(hits, docs) {
  const list = $("hits");
  list.replaceChildren(...hits.map((hit, i) => {
    const item = element("li", "hit");
    item.dataset.docid = hit.docid;
    item.dataset.score = String(hit.score);
    const head = element("div");
    head.append(element("span", "docid", hit.docid));
    if (docs[i] && docs[i].title) head.append(element("span", "title", docs[i].title));
    item.append(element("span", "rank", String(i + 1)), head, element("span", "score", hit.score.toFixed(4)),
                element("div", "snippet", snippet(docs[i], 260)));
    return item;
  }));
}

async function search() {
  const mine = ++latest;
  const q = $("q").value, k = $("k").value, index = $("index").value;
  const params = new URLSearchParams({q, k});
  if (index) params.set("index", index);
  history.replaceState(null, "", "?" + params);
  const list = $("hits"), status = $("status");
  list.dataset.state = "loading";
  status.className = "";
  status.textContent = "searching\\u2026";
  const started = performance.now();
  try {
    const hits = await getJSON("/search?" + params);
    const docs = await Promise.all(hits.map(  // (by query parameter: a browser resolves /doc/.. to /)
      (h) => getJSON("/doc?" + new URLSearchParams(index ? {docid: h.docid, index} : {docid: h.docid}))
        .catch(() => null)));
    if (mine !== latest) return;
    render(hits, docs);
    const ms = Math.round(performance.now() - started);
    status.textContent = hits.length ? `${hits.length} hit${hits.length > 1 ? "s" : ""} in ${ms} ms`
                                     : "no documents match";
  } catch (error) {
    if (mine !== latest) return;
    list.replaceChildren();
    status.className = "error";
    status.textContent = error.message;
  }
  list.dataset.state = "done";
}

function choose(select, value) {  // select value, adding it when it is not offered
  if (![...select.options].some((o) => o.value === value)) select.append(element("option", "", value));
  select.value = value;
}

async function start() {
  const form = $("search");
  form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
  try {
    const indexes = await getJSON("/indexes");
    for (const ix of indexes) {
      const option = element("option", "", `${ix.name} (${ix.kind}, ${ix.doc_count} docs)`);
      option.value = ix.name;
      $("index").append(option);
    }
    $("served").textContent = `${indexes.length} index${indexes.length > 1 ? "es" : ""} served`;
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = "cannot list the indexes: " + error.message;
  }
  const given = new URLSearchParams(location.search);
  if (given.get("k")) choose($("k"), given.get("k"));
  if (given.get("index")) choose($("index"), given.get("index"));
  document.body.dataset.ready = "true";
  if (given.get("q")) { $("q").value = given.get("q"); search(); }
}
start();
</script>
</body>
</html>
"""
