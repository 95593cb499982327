// geoxai view: Leaflet map of one run's layers, tile grid, pixel inspector and summary.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, text = "") => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
};
const fmt = (v) => (v === null || v === undefined ? "no data" : Number(v).toPrecision(5));
const fmtScale = (v) => (v !== 0 && Math.abs(v) < 1e-3 ? Number(v).toExponential(1) :
  String(Number(Number(v).toPrecision(3))));

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || `${url}: HTTP ${r.status}`);
  return body;
}

function problem(text) {
  const box = $("problems");
  if ([...box.children].some((p) => p.textContent === text)) return;
  box.appendChild(el("p", {}, text));
  box.hidden = false;
}

const state = { map: null, layers: {}, run: null, marker: null, grid: null };

function legend(layer) {
  const box = el("div", { class: "legend", "data-legend": layer.layer });
  if (layer.kind === "classes") {
    const c = el("div", { class: "classes" });
    for (const k of layer.classes) {
      const s = el("span");
      s.appendChild(el("i", { class: "sw", style: `background:${k.colour}` }));
      s.appendChild(document.createTextNode(`${k.code} ${k.label}`));
      c.appendChild(s);
    }
    box.appendChild(c);
  } else {
    box.appendChild(el("div", { class: "ramp",
      style: `background:linear-gradient(to right,${layer.stops.join(",")})` }));
    const lab = el("div", { class: "ramp-labels" });
    const units = layer.units && layer.units !== "1" ? ` ${layer.units}` : "";
    lab.appendChild(el("span", {}, fmtScale(layer.vmin) + units));
    lab.appendChild(el("span", {}, `${layer.cmap}`));
    lab.appendChild(el("span", {}, fmtScale(layer.vmax) + units));
    box.appendChild(lab);
  }
  return box;
}

function addLayer(layer, index, native) {
  const card = el("div", { class: "layer", "data-layer": layer.layer });
  const row = el("div", { class: "row" });
  const cb = el("input", { type: "checkbox", id: `layer-${layer.layer}` });
  const label = el("label", { for: `layer-${layer.layer}` }, layer.layer);
  const op = el("input", { type: "range", min: "0", max: "1", step: "0.05", value: "0.85",
    id: `opacity-${layer.layer}`, title: "opacity" });
  row.append(cb, label, op);
  card.appendChild(row);
  card.appendChild(el("div", { class: "desc" }, layer.description || ""));
  if (!layer.has_tiles) {
    card.appendChild(el("div", { class: "notiles" }, "no map tiles (no COG mosaic)"));
    cb.disabled = true;
  }
  card.appendChild(legend(layer));
  $("layers").appendChild(card);
  if (!layer.has_tiles) return;
  const tl = L.tileLayer(`/tiles/${encodeURIComponent(layer.layer)}/{z}/{x}/{y}.png`, {
    maxNativeZoom: native + 2, maxZoom: native + 5, minZoom: 0, opacity: 0.85,
    zIndex: 10 + index, attribution: "geoxai run",
  });
  tl.on("tileerror", async (ev) => {  // a corrupted COG: show the server's reason
    try {
      const r = await fetch(ev.tile.src);
      if (!r.ok) problem((await r.json()).error);
    } catch (e) { problem(String(e)); }
  });
  tl.on("load", () => { card.dataset.loaded = "1"; });
  state.layers[layer.layer] = tl;
  cb.addEventListener("change", () => {
    if (cb.checked) tl.addTo(state.map); else state.map.removeLayer(tl);
    delete card.dataset.loaded;
  });
  op.addEventListener("input", () => tl.setOpacity(Number(op.value)));
}

function summary(run) {
  const t = $("summary");
  const rows = [
    ["run", run.name], ["year", run.year], ["AOI", run.aoi],
    ["tiles", `${run.tiles} (done ${run.counts.done}, empty ${run.counts.empty}, failed ` +
      `${run.counts.failed}, pending ${run.counts.pending})`],
    ["UTM zones", run.zones.map((z) => `EPSG:${z}`).join(", ")],
    ["config hash", run.config_hash || "n/a"], ["code version", run.code_version || "n/a"],
    ["native zoom", run.native_zoom], ["run root", run.root],
  ];
  for (const [k, v] of rows) {
    const tr = el("tr", { "data-key": k });
    tr.append(el("th", {}, k), el("td", {}, String(v)));
    t.appendChild(tr);
  }
  const st = $("status-legend");
  st.className = "status";
  for (const [s, c] of Object.entries(run.status_colours)) {
    if (!run.counts[s]) continue;
    const sp = el("span");
    sp.appendChild(el("i", { class: "sw", style: `background:${c}` }));
    sp.appendChild(document.createTextNode(`${s} (${run.counts[s]})`));
    st.appendChild(sp);
  }
}

function plot(series) {
  const svg = $("series-plot");
  svg.innerHTML = "";
  const name = "NDVI" in series.series ? "NDVI" : Object.keys(series.series)[0];
  const ys = series.series[name];
  const W = 330, H = 150, L0 = 34, B = 20;
  const lo = Math.min(...ys, 0), hi = Math.max(...ys, 1e-6);
  const px = (i) => L0 + (i / Math.max(ys.length - 1, 1)) * (W - L0 - 6);
  const py = (v) => 6 + (1 - (v - lo) / (hi - lo || 1)) * (H - B - 6);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    svg.appendChild(e);
  };
  add("line", { x1: L0, y1: H - B, x2: W - 6, y2: H - B, stroke: "#9aa5b1" });
  add("line", { x1: L0, y1: 6, x2: L0, y2: H - B, stroke: "#9aa5b1" });
  add("text", { x: 2, y: 12, "font-size": 10 }, hi.toFixed(2));
  add("text", { x: 2, y: H - B, "font-size": 10 }, lo.toFixed(2));
  add("text", { x: L0, y: H - 4, "font-size": 10 }, series.times[0]);
  add("text", { x: W - 70, y: H - 4, "font-size": 10 }, series.times[series.times.length - 1]);
  add("polyline", { fill: "none", stroke: "#2e7d32", "stroke-width": 2,
    points: ys.map((v, i) => `${px(i)},${py(v)}`).join(" ") });
  add("text", { x: L0 + 6, y: 16, "font-size": 11, fill: "#2e7d32" }, `${name} (smoothed)`);
  svg.hidden = false;
}

async function inspect(latlng) {
  const lon = latlng.lng, lat = latlng.lat;
  if (state.marker) state.marker.remove();
  state.marker = L.circleMarker(latlng, { radius: 6, color: "#e07a1f" }).addTo(state.map);
  $("pixel-hint").hidden = true;
  $("pixel").hidden = false;
  const box = $("pixel");
  box.dataset.ready = "";
  const px = await getJSON(`/api/pixel?lon=${lon}&lat=${lat}`);
  const body = $("pixel-values").querySelector("tbody");
  body.innerHTML = "";
  box.dataset.lon = lon; box.dataset.lat = lat;
  if (!px.inside) {
    $("pixel-where").textContent = `${lat.toFixed(5)} N, ${lon.toFixed(5)} E: outside the run.`;
    $("pixel-quality").textContent = "";
    $("series-status").textContent = "";
    $("series-plot").hidden = true;
    $("record").hidden = true;
    box.dataset.ready = "outside";
    return;
  }
  Object.assign(box.dataset, { epsg: px.epsg, row: px.row, col: px.col, tile: px.tile_id });
  $("pixel-where").textContent = `${lat.toFixed(5)} N, ${lon.toFixed(5)} E — tile ` +
    `${px.tile_id}, EPSG:${px.epsg} row ${px.row} col ${px.col} (x ${px.x.toFixed(1)}, ` +
    `y ${px.y.toFixed(1)} m)`;
  const kinds = Object.fromEntries(state.run.layers.map((l) => [l.layer, l.kind]));
  for (const [layer, bands] of Object.entries(px.values)) {
    for (const [band, v] of Object.entries(bands)) {
      const tr = el("tr");
      const td = el("td", { class: "num", "data-layer": layer, "data-band": band,
        "data-value": v === null ? "" : String(v) },
        v !== null && kinds[layer] === "classes" ? String(v) : fmt(v));
      tr.append(el("td", {}, layer), el("td", {}, band === layer ? "" : band), td);
      body.appendChild(tr);
    }
  }
  const qlayer = (state.run.layers.find((l) => l.layer === "quality") || {}).classes || [];
  const q = qlayer.find((c) => c.code === px.quality);
  $("pixel-quality").textContent = `quality code: ${px.quality === null ? "0 (no data)" :
    px.quality + (q ? ` (${q.label})` : "")}`;
  $("pixel-quality").dataset.code = px.quality === null ? "0" : String(px.quality);
  $("record").hidden = false;
  $("record-tile").textContent = px.tile_id;
  $("record-json").textContent = px.record ? JSON.stringify(px.record, null, 1) :
    "no record for this tile (not processed yet)";
  box.dataset.ready = "values";
  $("series-status").textContent = "smoothing the pixel's series from the tile's cube…";
  $("series-plot").hidden = true;
  try {
    const s = await getJSON(`/api/series?lon=${lon}&lat=${lat}`);
    if (!s.kept) {
      $("series-status").textContent = `Time series not available: ${s.message}`;
      $("series-status").dataset.nobs = "";
    } else {
      $("series-status").textContent = `clear observations: ${s.n_obs}; longest gap ` +
        `${s.max_gap_days.toFixed(0)} days; ${s.valid ? "valid" : "too few observations"}`;
      $("series-status").dataset.nobs = String(s.n_obs);
      plot(s);
    }
  } catch (e) {
    $("series-status").textContent = `Time series failed: ${e.message}`;
  }
  box.dataset.ready = "done";
}

async function main() {
  let run;
  try {
    run = await getJSON("/api/run");
  } catch (e) {
    $("run-title").textContent = "cannot show this run";
    problem(e.message);
    document.body.dataset.ready = "error";
    return;
  }
  state.run = run;
  $("run-title").textContent = `${run.name || "run"} ${run.year} — ${run.root}`;
  for (const p of run.problems) problem(p);
  const map = L.map("map", { zoomControl: true, preferCanvas: false });
  state.map = map;
  if (run.bounds.length) {
    map.fitBounds([[run.bounds[1], run.bounds[0]], [run.bounds[3], run.bounds[2]]]);
  } else {
    map.setView([0, 0], 2);
  }
  L.control.scale({ imperial: false }).addTo(map);
  run.layers.forEach((layer, i) => addLayer(layer, i, run.native_zoom));
  const first = run.layers.find((l) => l.has_tiles);
  if (first) $(`layer-${first.layer}`).click();
  summary(run);
  const grid = await getJSON("/api/grid");
  state.grid = L.geoJSON(grid, {
    style: (f) => ({ color: f.properties.status === "done" ? "#334e68" : f.properties.colour,
      weight: f.properties.status === "done" ? 1 : 2, fillColor: f.properties.colour,
      fillOpacity: f.properties.status === "done" ? 0.08 : 0.45 }),
    onEachFeature: (f, lyr) => lyr.bindTooltip(`${f.properties.tile_id}: ${f.properties.status}` +
      (f.properties.reason ? ` — ${f.properties.reason}` : "")),
    interactive: true,
  });
  state.grid.addTo(map);
  $("grid-toggle").addEventListener("change", (ev) => {
    if (ev.target.checked) state.grid.addTo(map); else map.removeLayer(state.grid);
  });
  map.on("click", (ev) => inspect(ev.latlng));
  document.body.dataset.ready = "1";
}

main();
