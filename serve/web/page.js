// The library page: a search box, a tag filter, the grid of hits and one asset's details,
// all from the server's /v1 routes. Every name, path, tag and caption is set as text
// (textContent), never as markup: the library's records are a user's text.
"use strict";

const K = 40;
const $ = (id) => document.getElementById(id);
let shown = null;  // the asset id in the details pane

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function getJson(url, options = {}) {
  const reply = await fetch(url, { ...options, headers: { Accept: "application/json" } });
  let body = null;
  try { body = await reply.json(); } catch (_) { /* not JSON: said below */ }
  if (!reply.ok) throw new Error(body && body.error ? body.error : `${url}: HTTP ${reply.status}`);
  if (body === null) throw new Error(`${url}: the server's answer was not JSON`);
  return body;
}

function filtered(params) {
  const tag = $("tag").value.trim();
  if (tag) params.append("tag", tag);
  params.set("k", String(K));
  return params;
}

function baseName(path) {
  return path.split(/[\\/]/).pop();
}

function card(hit) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "card";
  button.dataset.id = String(hit.asset_id);
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = "";
  img.src = `/v1/assets/${hit.asset_id}/thumbnail`;
  img.addEventListener("error", () => img.replaceWith(Object.assign(document.createElement("div"), { className: "noimg" })));
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = hit.object ? `${baseName(hit.path)} : ${hit.object}` : baseName(hit.path);
  name.title = hit.path;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  button.append(img, name, score);
  button.addEventListener("click", () => details(hit.asset_id));
  return button;
}

function showHits(answer, what) {
  const grid = $("grid");
  grid.replaceChildren(...answer.hits.map(card));
  say(answer.hits.length ? `${answer.hits.length} best for ${what}` : `nothing matches ${what}`);
}

async function search(text) {
  say(`searching for "${text}"...`);
  try {
    showHits(await getJson(`/v1/search?${filtered(new URLSearchParams({ q: text }))}`), `"${text}"`);
  } catch (error) { say(error.message, true); }
}

async function similar(id) {
  say("searching for similar assets...");
  try {
    showHits(await getJson(`/v1/like/${id}?${filtered(new URLSearchParams())}`), `assets like ${$("detail-name").textContent}`);
  } catch (error) { say(error.message, true); }
}

const IMAGE_TYPES = ["png", "jpg", "jpeg", "webp"];

async function searchByFile(file) {
  const type = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  say(`searching for assets like ${file.name}...`);
  try {
    const url = IMAGE_TYPES.includes(type) ? `/v1/search/image?${filtered(new URLSearchParams())}`
      : `/v1/search/mesh?${filtered(new URLSearchParams({ type }))}`;
    showHits(await getJson(url, { method: "POST", body: file }), `assets like ${file.name}`);
  } catch (error) { say(error.message, true); }
}

async function details(id) {
  let record;
  try { record = await getJson(`/v1/assets/${id}`); } catch (error) { say(error.message, true); return; }
  shown = id;
  const thumb = $("detail-thumb");
  thumb.hidden = !record.has_thumbnail;
  if (record.has_thumbnail) thumb.src = `/v1/assets/${id}/thumbnail`;
  $("detail-name").textContent = record.object ? `${baseName(record.path)} : ${record.object}` : baseName(record.path);
  $("detail-path").textContent = record.path;
  $("detail-format").textContent = record.format;
  $("detail-user-tags").textContent = record.user_tags.length ? record.user_tags.join(", ") : "none yet";
  // As core.spaces.vocabularies.prompt_name reads a label (LVIS's "step_stool": "step stool").
  $("detail-tags").textContent = record.tags.map((t) => `${t.tag.replaceAll("_", " ")} (${t.score.toFixed(2)})`)
    .join(", ") || "none";
  $("detail-caption").textContent = record.captions.length ? record.captions[0].caption : "none";
  $("details").hidden = false;
}

document.addEventListener("DOMContentLoaded", async () => {
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("query").value.trim();
    if (text) search(text);
  });
  $("mesh").addEventListener("change", () => {
    const file = $("mesh").files[0];
    if (file) searchByFile(file);
  });
  $("similar").addEventListener("click", () => { if (shown !== null) similar(shown); });
  $("close").addEventListener("click", () => { $("details").hidden = true; shown = null; });
  try {
    const status = await getJson("/v1/status");
    say(`${status.assets} assets in ${status.library}, ${status.embedded} searchable; type a query`);
  } catch (error) { say(error.message, true); }
});
