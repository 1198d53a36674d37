// camloc serve: the page. Plain JS, no build step, no CDN.
//
// Each photo is POSTed once to /api/explain; the map of the selected class comes from /api/map (raw, feature
// resolution) and everything else happens here: the map is upsampled to the network input (bilinear, pixel
// centres aligned, as torch's interpolate with align_corners=False), normalised by its max, coloured (jet) and
// drawn over the network input's extent in the photo; the box is the paper's rule (keep >= threshold * max,
// largest 8-connected component) mapped to original pixels, so the threshold slider redraws it live.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { photos: [], current: -1, categories: [], health: null };
window.camloc = state; // for debugging in the console

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `HTTP ${r.status}` }; }
  if (!r.ok) throw new Error(body && body.error ? body.error : `HTTP ${r.status}`);
  return body;
}

// ---------------------------------------------------------------------------------------------- map math
function upsample(raw, h, w, H, W) {
  // bilinear, align_corners=False: src = (dst + 0.5) * in / out - 0.5, clamped at 0 (torch's rule)
  const out = new Float32Array(H * W);
  const sy = h / H, sx = w / W;
  const x0s = new Int32Array(W), x1s = new Int32Array(W), lxs = new Float32Array(W);
  for (let x = 0; x < W; x++) {
    let s = (x + 0.5) * sx - 0.5;
    if (s < 0) s = 0;
    const x0 = Math.floor(s);
    x0s[x] = x0; x1s[x] = x0 < w - 1 ? x0 + 1 : x0; lxs[x] = s - x0;
  }
  for (let y = 0; y < H; y++) {
    let s = (y + 0.5) * sy - 0.5;
    if (s < 0) s = 0;
    const y0 = Math.floor(s), y1 = y0 < h - 1 ? y0 + 1 : y0, ly = s - y0;
    for (let x = 0; x < W; x++) {
      const a = raw[y0 * w + x0s[x]], b = raw[y0 * w + x1s[x]];
      const c = raw[y1 * w + x0s[x]], d = raw[y1 * w + x1s[x]];
      const lx = lxs[x];
      out[y * W + x] = (1 - ly) * ((1 - lx) * a + lx * b) + ly * ((1 - lx) * c + lx * d);
    }
  }
  return out;
}

function prepareMap(m) {
  // m: the JSON of /api/map. Returns {H, W, up, max}: the upsampled raw map and its max.
  const [h, w] = m.shape, [H, W] = m.network_size;
  const up = upsample(Float32Array.from(m.data), h, w, H, W);
  let max = -Infinity;
  for (let i = 0; i < up.length; i++) if (up[i] > max) max = up[i];
  return { H, W, up, max };
}

function networkBox(p, t) {
  // Largest 8-connected component of {up / max >= t} (all pixels for t = 0; nothing if max <= 0):
  // [x0, y0, x1, y1] in network pixels (pixel j covers [j, j + 1)), or null. Ties: the first in raster order.
  const { H, W, up, max } = p;
  if (!(max > 0)) return null;
  const keep = new Uint8Array(H * W);
  for (let i = 0; i < up.length; i++) keep[i] = t === 0 || up[i] / max >= t ? 1 : 0;
  const seen = new Uint8Array(H * W), stack = new Int32Array(H * W);
  let best = null, bestArea = 0;
  for (let start = 0; start < H * W; start++) {
    if (!keep[start] || seen[start]) continue;
    let top = 0, area = 0, x0 = W, y0 = H, x1 = -1, y1 = -1;
    stack[top++] = start; seen[start] = 1;
    while (top) {
      const i = stack[--top], y = (i / W) | 0, x = i - y * W;
      area++;
      if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      for (let dy = -1; dy <= 1; dy++) {
        const yy = y + dy;
        if (yy < 0 || yy >= H) continue;
        for (let dx = -1; dx <= 1; dx++) {
          const xx = x + dx;
          if (xx < 0 || xx >= W) continue;
          const j = yy * W + xx;
          if (keep[j] && !seen[j]) { seen[j] = 1; stack[top++] = j; }
        }
      }
    }
    if (area > bestArea) { bestArea = area; best = [x0, y0, x1 + 1, y1 + 1]; }
  }
  return best;
}

function originalBox(b, m) {
  // network pixels -> original pixels through the extent, clipped to the photo; no area -> [0, 0, 0, 0]
  if (!b) return [0, 0, 0, 0];
  const [H, W] = m.network_size, [ex0, ey0, ex1, ey1] = m.extent;
  const fx = (ex1 - ex0) / W, fy = (ey1 - ey0) / H;
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
  const o = [clip(ex0 + b[0] * fx, m.width), clip(ey0 + b[1] * fy, m.height),
             clip(ex0 + b[2] * fx, m.width), clip(ey0 + b[3] * fy, m.height)];
  if (o[2] <= o[0] || o[3] <= o[1]) return [0, 0, 0, 0];
  return o.map((v) => Math.round(v * 100) / 100);
}

function jet(v) {
  // OpenCV-like jet: 0 -> dark blue, 1 -> dark red
  const c = (x) => Math.max(0, Math.min(1, x));
  return [c(1.5 - Math.abs(4 * v - 3)), c(1.5 - Math.abs(4 * v - 2)), c(1.5 - Math.abs(4 * v - 1))];
}

function heatCanvas(p) {
  const cv = document.createElement("canvas");
  cv.width = p.W; cv.height = p.H;
  const ctx = cv.getContext("2d"), img = ctx.createImageData(p.W, p.H);
  for (let i = 0; i < p.up.length; i++) {
    const v = p.max > 0 ? Math.max(0, Math.min(1, p.up[i] / p.max)) : 0;
    const [r, g, b] = jet(Math.round(v * 255) / 255);
    img.data[4 * i] = 255 * r; img.data[4 * i + 1] = 255 * g; img.data[4 * i + 2] = 255 * b; img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return cv;
}

// ---------------------------------------------------------------------------------------------- photos
function threshold() { return parseFloat($("threshold").value); }

async function explainPhoto(photo) {
  const form = new FormData();
  form.append("file", photo.file, photo.file.name || "pasted.png");
  form.append("model", $("model").value);
  form.append("method", $("method").value);
  form.append("threshold", String(threshold()));
  form.append("topk", "5");
  photo.result = null; photo.error = null; photo.maps = new Map(); photo.prepared = new Map(); photo.heat = null;
  photo.figure.classList.remove("failed");
  photo.caption.textContent = "explaining...";
  try {
    const r = await getJSON("/api/explain", { method: "POST", body: form });
    photo.result = r;
    photo.selected = r.topk[0].class_idx;
    photo.caption.textContent = `${r.topk[0].name} ${(100 * r.topk[0].prob).toFixed(1)}%`;
  } catch (e) {
    photo.error = e.message;
    photo.figure.classList.add("failed");
    photo.caption.textContent = "failed";
    photo.figure.title = e.message;
  }
}

async function addFiles(files) {
  const list = Array.from(files).filter((f) => f && f.size !== undefined);
  if (!list.length) return;
  setStatus(`explaining ${list.length} photo(s)...`);
  const added = list.map((file) => {
    const photo = { file, url: URL.createObjectURL(file) };
    const fig = document.createElement("figure"), img = document.createElement("img"), cap = document.createElement("figcaption");
    img.src = photo.url; img.alt = file.name || "photo";
    fig.append(img, cap);
    photo.figure = fig; photo.caption = cap;
    const index = state.photos.push(photo) - 1;
    fig.addEventListener("click", () => select(index));
    $("gallery").append(fig);
    return index;
  });
  select(added[0]);
  let failed = 0;
  for (const i of added) { // one at a time: the server's pool serves other clients too
    await explainPhoto(state.photos[i]);
    if (state.photos[i].error) failed++;
    if (i === state.current) await render();
  }
  const last = state.photos[added[added.length - 1]];
  setStatus(failed ? `${failed} of ${added.length} failed: ${last.error || "see the gallery"}` : `${added.length} photo(s) explained`, failed > 0);
}

async function select(index) {
  state.current = index;
  state.photos.forEach((p, i) => p.figure.classList.toggle("selected", i === index));
  await render();
}

async function selectClass(classIdx) {
  const photo = state.photos[state.current];
  if (!photo || !photo.result) return;
  photo.selected = classIdx;
  await render();
}

async function mapOf(photo, classIdx) {
  if (!photo.maps.has(classIdx)) {
    const r = photo.result;
    const url = r.map_url.replace("{class_idx}", String(classIdx)) + "&format=json";  // model, method and its arguments
    photo.maps.set(classIdx, await getJSON(url));
  }
  const m = photo.maps.get(classIdx);
  if (!photo.prepared.has(classIdx)) photo.prepared.set(classIdx, prepareMap(m));
  return [m, photo.prepared.get(classIdx)];
}

function loadImage(photo) {
  if (photo.image) return Promise.resolve(photo.image);
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => { photo.image = img; resolve(img); };
    img.onerror = () => reject(new Error("the browser cannot display this file"));
    img.src = photo.url;
  });
}

function renderList(photo) {
  const ol = $("topk");
  ol.textContent = "";
  if (!photo || !photo.result) return;
  for (const c of photo.result.topk) {
    const li = document.createElement("li");
    li.dataset.classIdx = c.class_idx;
    li.innerHTML = `<span class="name"></span><span class="prob"></span>`;
    li.querySelector(".name").textContent = c.name;
    li.querySelector(".prob").textContent = `${(100 * c.prob).toFixed(1)}%`;
    li.classList.toggle("selected", c.class_idx === photo.selected);
    li.addEventListener("click", () => selectClass(c.class_idx));
    ol.append(li);
  }
  renderMatches();
}

let renderSeq = 0;
async function render() {
  const seq = ++renderSeq;
  const photo = state.photos[state.current];
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  renderList(photo);
  $("download-json").disabled = $("download-png").disabled = !(photo && photo.result);
  if (!photo) return;
  let img;
  try { img = await loadImage(photo); } catch (e) { setStatus(e.message, true); return; }
  const r = photo.result;
  const width = r ? r.width : img.naturalWidth, height = r ? r.height : img.naturalHeight;
  const s = Math.min(1, 640 / width, 480 / height);
  canvas.width = Math.max(1, Math.round(width * s)); canvas.height = Math.max(1, Math.round(height * s));
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  if (!r) { $("selected-label").textContent = photo.error ? `error: ${photo.error}` : "explaining..."; return; }
  let m, p;
  try { [m, p] = await mapOf(photo, photo.selected); } catch (e) { setStatus(e.message, true); return; }
  if (seq !== renderSeq) return; // a newer render started meanwhile
  const [ex0, ey0, ex1, ey1] = m.extent;
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 0.5;
  ctx.drawImage(photo.heat && photo.heat.cls === m.class_idx ? photo.heat.canvas : (photo.heat = { cls: m.class_idx, canvas: heatCanvas(p) }).canvas,
                ex0 * s, ey0 * s, (ex1 - ex0) * s, (ey1 - ey0) * s);
  ctx.globalAlpha = 1;
  const box = originalBox(networkBox(p, threshold()), m);
  photo.box = box;
  if (box[2] > box[0]) {
    const [x0, y0, x1, y1] = box.map((v) => v * s);
    ctx.lineWidth = 3; ctx.strokeStyle = "#000"; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.lineWidth = 2; ctx.strokeStyle = "#fff"; ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const label = `${m.name} ${m.prob.toFixed(2)}`;
    ctx.font = "14px system-ui, sans-serif";
    const tw = ctx.measureText(label).width;
    const ly = y0 >= 18 ? y0 - 18 : y0;
    ctx.fillStyle = "#fff"; ctx.fillRect(x0, ly, tw + 8, 18);
    ctx.fillStyle = "#000"; ctx.fillText(label, x0 + 4, ly + 14);
  }
  $("selected-label").textContent = `${m.name} (${(100 * m.prob).toFixed(1)}%)`;
  const bt = $("box-text");
  bt.textContent = `box [${box.map((v) => v.toFixed(1)).join(", ")}] at ${threshold().toFixed(2)}`;
  bt.dataset.box = JSON.stringify(box);
}

// ---------------------------------------------------------------------------------------------- search
function renderMatches() {
  const q = $("search").value.trim().toLowerCase(), ul = $("matches");
  ul.textContent = "";
  const photo = state.photos[state.current];
  if (!q) return;
  let n = 0;
  for (let i = 0; i < state.categories.length && n < 30; i++) {
    const name = state.categories[i];
    if (!name.toLowerCase().includes(q) && String(i) !== q) continue;
    const li = document.createElement("li");
    li.textContent = `${name} (${i})`;
    li.dataset.classIdx = i;
    li.classList.toggle("selected", photo && photo.selected === i);
    li.addEventListener("click", () => selectClass(i));
    ul.append(li);
    n++;
  }
}

async function loadCategories() {
  try {
    state.categories = (await getJSON(`/api/classes?model=${encodeURIComponent($("model").value)}`)).categories;
  } catch (e) { setStatus(e.message, true); }
  renderMatches();
}

// ---------------------------------------------------------------------------------------------- downloads
function download(name, blob) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function stem(photo) { return (photo.result.path || "photo").replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_"); }

// ---------------------------------------------------------------------------------------------- wiring
async function init() {
  try {
    state.health = await getJSON("/api/health");
  } catch (e) { setStatus(`server not reachable: ${e.message}`, true); return; }
  for (const name of state.health.models) $("model").append(new Option(name, name));
  for (const name of state.health.methods) $("method").append(new Option(name, name, false, name === state.health.default_method));
  $("model").value = state.health.default_model;
  await loadCategories();
  setStatus("ready: drop, paste or choose photos");
}

$("file").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => addFiles(e.dataTransfer.files));
document.addEventListener("paste", (e) => {
  const files = Array.from(e.clipboardData ? e.clipboardData.items : []).filter((it) => it.type.startsWith("image/")).map((it) => it.getAsFile());
  if (files.length) addFiles(files);
});
$("threshold").addEventListener("input", () => { $("threshold-value").textContent = threshold().toFixed(2); render(); });
$("search").addEventListener("input", renderMatches);
$("model").addEventListener("change", async () => {
  await loadCategories();
  const photo = state.photos[state.current];
  if (photo) { await explainPhoto(photo); await render(); }
});
$("download-json").addEventListener("click", () => {
  const photo = state.photos[state.current];
  const out = Object.assign({}, photo.result);
  delete out.overlay_png;
  const m = photo.maps.get(photo.selected);
  out.selected = { class_idx: photo.selected, name: m ? m.name : null, threshold: threshold(), box: photo.box };
  download(`${stem(photo)}.json`, new Blob([JSON.stringify(out, null, 2)], { type: "application/json" }));
});
$("download-png").addEventListener("click", () => {
  const photo = state.photos[state.current];
  $("canvas").toBlob((b) => download(`${stem(photo)}_${photo.selected}.png`, b), "image/png");
});
init();
