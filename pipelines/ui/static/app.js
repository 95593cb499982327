"use strict";
// geoxai ui: plain DOM, no build step. All checks happen on the server (/api/validate).

const LOSS_HELP = {
  bce: "Binary cross-entropy: the standard choice when the class covers a fair share of the " +
    "area (roughly 15 % of the pixels or more).",
  weighted_bce: "BCE with class pixels counted more (the weight below): use it when the class " +
    "is rare (a few % of the pixels), so the model is not rewarded for answering 'absent' " +
    "everywhere.",
  dice: "Dice: scores the overlap of predicted and true class areas directly, so the amount of " +
    "background does not matter; good for rare classes, can be unsteady at the start.",
  bce_dice: "BCE + Dice (default): steady like BCE and insensitive to imbalance like Dice; a " +
    "good first choice, including for moderately rare classes.",
  focal: "Focal loss: down-weights pixels the model already gets right (gamma below), so " +
    "learning concentrates on the hard, rare class pixels; use it for very rare classes or " +
    "when most background is trivially easy.",
};
const $ = (id) => document.getElementById(id);
const state = { rasters: [], mask: null, polling: null };

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
const q = (s) => encodeURIComponent(s);
const fmt = (v, d = 3) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(d)) : "");
function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

// ---- errors next to controls --------------------------------------------------------------
function clearErrors() {
  document.querySelectorAll("[data-error-for]").forEach((e) => { e.textContent = ""; });
  document.querySelectorAll(".invalid").forEach((e) => e.classList.remove("invalid"));
}
function showErrors(errors) {
  for (const [key, msg] of Object.entries(errors || {})) {
    let slot = document.querySelector(`[data-error-for="${CSS.escape(key)}"]`);
    if (!slot) slot = document.querySelector('[data-error-for="general"]');
    slot.textContent = msg;
    const input = $(key) || (key === "predict.out" ? $("predict-out") : null) ||
      (key === "predict.bundle" ? $("predict-bundle") : null);
    if (input) input.classList.add("invalid");
  }
}

// ---- file browser ---------------------------------------------------------------------------
async function browse(dir) {
  let data;
  try { data = await api(`/api/ls?dir=${q(dir)}`); } catch (e) { alert(e.message); return; }
  $("workdir").textContent = data.root;
  $("cwd").textContent = "/" + data.dir;
  $("up").disabled = data.parent === null;
  $("up").onclick = () => browse(data.parent || "");
  const ul = $("entries");
  ul.replaceChildren();
  for (const e of data.entries) {
    const li = el("li", { "data-path": e.path, class: e.kind });
    if (e.kind === "dir") {
      li.append(el("a", { href: "#", class: "dir", onclick: (ev) => { ev.preventDefault(); browse(e.path); } }, e.name + "/"));
    } else {
      li.append(el("span", { class: "name" }, e.name));
      if (e.kind === "raster") li.append(el("button", { type: "button", class: "add-raster", onclick: () => addRaster(e.path) }, "+ raster"));
      li.append(el("button", { type: "button", class: "use-mask", onclick: () => setMask(e.path) }, "use as mask"));
    }
    ul.append(li);
  }
  if (!data.entries.length) ul.append(el("li", { class: "muted" }, "(no rasters, polygon files or folders here)"));
}

// ---- rasters and mask -----------------------------------------------------------------------
async function addRaster(path) {
  if (state.rasters.some((r) => r.path === path)) return;
  try {
    const info = await api(`/api/raster?path=${q(path)}`);
    state.rasters.push({ path, info, bands: new Set(info.bands.map((b) => b.index)) });
  } catch (e) { showErrors({ rasters: e.message }); return; }
  renderRasters();
}
function renderRasters() {
  const box = $("rasters");
  box.replaceChildren();
  state.rasters.forEach((r, i) => {
    const inf = r.info;
    const unit = inf.units === "metre" ? "m" : (inf.units || "");
    const card = el("div", { class: "card raster", "data-index": String(i) },
      el("div", { class: "title" }, el("b", {}, r.path),
        el("button", { type: "button", class: "remove", onclick: () => { state.rasters.splice(i, 1); renderRasters(); } }, "remove")),
      el("div", { class: "meta" },
        `CRS ${inf.crs || "none"}${inf.crs_name ? " (" + inf.crs_name + ")" : ""} · pixel ` +
        `${fmt(inf.res[0], 6)} x ${fmt(inf.res[1], 6)} ${unit} · ${inf.width} x ${inf.height} px · ${inf.count} band(s)`));
    const bands = el("div", { class: "bands" });
    for (const b of inf.bands) {
      const id = `band-${i}-${b.index}`;
      const cb = el("input", { type: "checkbox", id, "data-band": String(b.index) });
      cb.checked = r.bands.has(b.index);
      cb.addEventListener("change", () => { if (cb.checked) r.bands.add(b.index); else r.bands.delete(b.index); });
      bands.append(el("label", { for: id, class: "band" }, cb,
        ` ${b.index}${b.description ? " " + b.description : ""} (${b.dtype}${b.nodata !== null ? ", nodata " + b.nodata : ""})`));
    }
    card.append(bands, el("p", { class: "error", "data-error-for": `rasters.${i}` }));
    box.append(card);
  });
  if (!state.rasters.length) box.append(el("div", { class: "card muted" }, "no raster chosen yet"));
}
async function setMask(path) {
  let info;
  try { info = await api(`/api/mask?path=${q(path)}`); } catch (e) { showErrors({ mask: e.message }); return; }
  state.mask = { path, info };
  const box = $("mask-info");
  box.classList.remove("muted");
  box.textContent = info.kind === "vector"
    ? `${path}: ${info.features} ${info.geometry_type || "feature"}(s), CRS ${info.crs || "unknown"}`
    : `${path}: raster mask (values > 0 are the class), CRS ${info.crs}, ${info.width} x ${info.height} px`;
  const sel = $("mask-attribute");
  sel.replaceChildren(el("option", { value: "" }, "(every polygon is the class)"));
  for (const f of info.fields || []) sel.append(el("option", { value: f }, f));
  $("mask-attr-field").hidden = !(info.fields && info.fields.length);
}

// ---- form -----------------------------------------------------------------------------------
const INPUTS = ["tile_size", "loss", "pos_weight", "focal_gamma", "val_fraction", "resolution",
  "training.epochs", "training.lr", "training.batch_size", "training.seed", "out_dir"];
function formData() {
  const f = {};
  for (const k of INPUTS) f[k] = $(k).value;
  f.rasters = state.rasters.map((r) => ({
    path: r.path,
    bands: r.bands.size === r.info.count ? null : [...r.bands].sort((a, b) => a - b),
  }));
  f.mask = state.mask ? { path: state.mask.path, attribute: $("mask-attribute").value, values: $("mask-values").value } : {};
  f.resume = $("resume").checked;
  return f;
}
function showConfig(res) {
  const sm = res.summary;
  $("summary").textContent = sm ? `Training grid ${sm.crs}, ${fmt(sm.resolution, 6)} units per pixel, ` +
    `${sm.shape[0]} x ${sm.shape[1]} px, ${sm.bands.length} bands (${sm.bands.join(", ")}); tiles: ` +
    `${sm.tiles.train} train, ${sm.tiles.val} validation, ${sm.tiles.gap} gap; the class covers ` +
    `${(100 * sm.positive_fraction).toFixed(1)} % of the labelled pixels` +
    (sm.positive_fraction < 0.1 ? " (rare: consider weighted_bce or focal)." : ".") : "";
  if (!res.yaml) return;
  $("yaml-box").hidden = false;
  $("yaml").textContent = res.yaml;
  $("command").textContent = res.command;
}
async function check() {
  clearErrors();
  $("check-result").textContent = "checking...";
  let res;
  try { res = await api("/api/validate", formData()); } catch (e) { $("check-result").textContent = e.message; return null; }
  showErrors(res.errors);
  showConfig(res);
  $("check-result").textContent = res.ok ? "settings OK" : "please fix the marked settings";
  $("check-result").className = res.ok ? "ok" : "bad";
  return res;
}
async function train() {
  clearErrors();
  $("check-result").textContent = "starting...";
  let res;
  try { res = await api("/api/train", formData()); } catch (e) { $("check-result").textContent = e.message; $("check-result").className = "bad"; return; }
  showErrors(res.errors);
  showConfig(res);
  if (!res.ok) { $("check-result").textContent = "please fix the marked settings"; $("check-result").className = "bad"; return; }
  $("check-result").textContent = "training started";
  $("check-result").className = "ok";
  $("metrics-fig").hidden = true;
  $("trainpred-fig").hidden = true;
  const dl = $("yaml-download");
  dl.href = `/api/file?path=${q(res.job.config)}&download=1`;
  dl.hidden = false;
  poll();
}
async function predict() {
  clearErrors();
  $("predict-error").textContent = "";
  const body = { bundle: $("predict-bundle").value, out: $("predict-out").value, rasters: formData().rasters };
  let res;
  try { res = await api("/api/predict", body); } catch (e) { $("predict-error").textContent = e.message; return; }
  if (!res.ok) { showErrors(res.errors); return; }
  $("quicklook-fig").hidden = true;
  $("predict-state").textContent = "running";
  poll();
}

// ---- progress -------------------------------------------------------------------------------
function renderHistory(hist) {
  // One row per epoch, one column per metric the workflow reports (loss, val_loss, val_iou...).
  hist = hist || [];
  const keys = [];
  for (const h of hist) for (const k of Object.keys(h)) if (!keys.includes(k) && typeof h[k] === "number") keys.push(k);
  const cols = ["epoch", ...keys.filter((k) => k !== "epoch" && k !== "seconds"), "seconds"].filter((k) => keys.includes(k));
  // metrics without a val_ prefix are means over the training batches of the epoch
  const isTrain = (k) => !k.startsWith("val_") && !["epoch", "lr", "seconds"].includes(k);
  const label = (k) => (isTrain(k) ? "train " : "") + k.replace(/_/g, " ").replace(/\biou\b/, "IoU");
  $("history").querySelector("thead").replaceChildren(el("tr", {}, ...cols.map((k) => el("th", {}, label(k)))));
  const tb = $("history").querySelector("tbody");
  const cell = (h, k) => el("td", { "data-key": k }, fmt(h[k], k === "lr" ? 6 : 4));
  tb.replaceChildren(...hist.map((h) => el("tr", {}, ...cols.map((k) => cell(h, k)))));
}
const stamp = () => `&t=${Date.now()}`;
async function refresh() {
  let st;
  try { st = await api("/api/job"); } catch (e) { return; }
  if (st.state === "idle") return;
  const running = st.state === "running";
  if (st.kind === "train") {
    $("job-state").textContent = st.state;
    $("job-elapsed").textContent = `(${st.elapsed_s} s)`;
    $("job-error").textContent = st.error || "";
    renderHistory(st.history);
    $("log-tail").textContent = (st.log_tail || []).join("\n");
    if (!running && $("check-result").textContent === "training started") $("check-result").textContent = "";
    if (st.state === "done") {
      if (st.metrics_png && $("metrics-fig").hidden) {
        $("metrics-img").src = `/api/file?path=${q(st.metrics_png)}${stamp()}`;
        $("metrics-fig").hidden = false;
      }
      if (st.prediction && $("trainpred-fig").hidden) {
        $("trainpred-img").src = `/api/quicklook.png?path=${q(st.prediction)}${stamp()}`;
        $("trainpred-fig").hidden = false;
      }
      if (st.result && !$("predict-bundle").value) $("predict-bundle").value = st.result;
      if (!$("predict-out").value) $("predict-out").value = `${st.out_dir}/predict/prediction.tif`;
    }
  } else {
    $("predict-state").textContent = `${st.state} (${st.elapsed_s} s)`;
    $("predict-error").textContent = st.error || "";
    if (st.state === "done" && $("quicklook-fig").hidden) {
      $("quicklook-img").src = `/api/quicklook.png?path=${q(st.result)}${stamp()}`;
      const a = $("predict-link");
      a.textContent = st.result;
      a.href = `/api/file?path=${q(st.result)}&download=1`;
      $("quicklook-fig").hidden = false;
    }
  }
  $("train").disabled = running;
  $("predict").disabled = running;
  $("stop").disabled = !running;
  if (!running && state.polling) { clearInterval(state.polling); state.polling = null; }
}
function poll() {
  if (!state.polling) state.polling = setInterval(refresh, 1000);
  refresh();
}

// ---- start ----------------------------------------------------------------------------------
async function init() {
  const d = await api("/api/defaults");
  const loss = $("loss");
  for (const c of d.loss_choices) loss.append(el("option", { value: c }, c));
  for (const k of INPUTS) if (d[k] !== undefined && d[k] !== null) $(k).value = d[k];
  const onLoss = () => {
    $("loss-help").textContent = LOSS_HELP[loss.value] || "";
    $("pos_weight-field").hidden = !["weighted_bce", "bce_dice"].includes(loss.value);
    $("focal_gamma-field").hidden = loss.value !== "focal";
  };
  loss.addEventListener("change", onLoss);
  onLoss();
  $("check").onclick = check;
  $("train").onclick = train;
  $("stop").onclick = async () => { await api("/api/stop", {}); refresh(); };
  $("predict").onclick = predict;
  $("stop").disabled = true;
  renderRasters();
  await browse("");
  poll();
  document.body.dataset.ready = "1";
}
init();
