// The playground page: draw, edit, compare, and see each request in every dialect.
import { AdminView } from "./admin.js";
import { ApiError, base64ToBlob, baseUrl, call, errorFrom, events, explain, getToken, newRequestId, path, setToken, authHeaders } from "./api.js";
import { MaskPainter } from "./mask.js";
import { snippet } from "./snippets.js";

const $ = (id) => document.getElementById(id);
const PARTIALS = 3;
const POLL_MS = 250;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

const state = { models: new Map(), aliases: {}, inputs: [], results: [], run: null, seq: 0, maskFor: null, adminReady: false };
const painter = new MaskPainter({
  canvas: $("mask"), base: $("mask-base"), cursor: $("mask-cursor"), brush: $("brush"),
  tools: () => document.querySelector('input[name="tool"]:checked'),
});
const adminView = new AdminView();

// ---- small helpers ----------------------------------------------------------------------------

function showError(text) { $("error").textContent = text; }
function setStatus(text) { $("status").textContent = text; }
const mode = () => document.querySelector('input[name="mode"]:checked').value;
const model = () => state.models.get($("model").value) || {};

function option(value, text, selected = false) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  o.selected = selected;
  return o;
}

function number(id) {
  const el = $(id);
  if (el.disabled || el.value.trim() === "") return null;
  const value = Number(el.value);
  return Number.isFinite(value) ? value : null;
}

/** The form as one plain object: what runs, and what "Show the request" shows. */
function settings() {
  const m = model();
  const n = Math.min(Math.max(1, Math.round(number("n") ?? 1)), m.max_images || 10);
  const editing = mode() === "edit";
  return {
    mode: mode(), prompt: $("prompt").value.trim(), model: $("model").value, aspect: $("aspect").value,
    size: $("size").value || "auto", n, seed: number("seed"), steps: number("steps"), guidance: number("guidance"),
    negative: $("negative").disabled ? "" : $("negative").value.trim(), style: $("style").value,
    strength: editing ? Number($("strength").value) : null,
    control: guideControl(m), reference: guideReference(m),
    expand: editing ? $("expand").value : "",
  };
}

// ---- control and reference images (limner extensions) ----------------------------------------------

const GUIDE_FILES = { control: "control.png", reference: "reference.png" };
const guideBlob = (id) => $(id).files?.[0] || null;

/** The chosen control, when the model offers it and an image is chosen: {name, scale, file}. */
function guideControl(m) {
  const name = $("control-name").value;
  if (!name || !guideBlob("control-file") || !(m.controls || []).some((c) => c.name === name)) return null;
  return { name, scale: number("control-scale"), file: GUIDE_FILES.control };
}

function guideReference(m) {
  if (m.reference_scale == null || !guideBlob("reference-file")) return null;
  return { scale: number("reference-scale"), file: GUIDE_FILES.reference };
}

/** The files "Show the request" names, by file name. */
const guideFile = (name) => guideBlob(name === GUIDE_FILES.control ? "control-file" : "reference-file");

function dataUrlOf(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** The request's ``controls`` and ``reference_images`` lists, images as data URLs. */
async function guideFields(s) {
  const fields = {};
  if (s.control) {
    const item = { name: s.control.name, image: await dataUrlOf(guideBlob("control-file")) };
    if (s.control.scale !== null) item.scale = s.control.scale;
    fields.controls = [item];
  }
  if (s.reference) {
    const item = { image: await dataUrlOf(guideBlob("reference-file")) };
    if (s.reference.scale !== null) item.scale = s.reference.scale;
    fields.reference_images = [item];
  }
  return fields;
}

function updateGuides(m) {
  const controls = m.controls || [];
  const previous = $("control-name").value;
  $("control-name").replaceChildren(option("", "none"),
    ...controls.map((c) => option(c.name, `${c.name} (${c.kind})`, c.name === previous)));
  for (const id of ["control-field", "control-file-field", "control-scale-field"]) $(id).hidden = !controls.length;
  for (const id of ["reference-file-field", "reference-scale-field"]) $(id).hidden = m.reference_scale == null;
  $("reference-scale").placeholder = m.reference_scale != null ? `default ${m.reference_scale}` : "";
  $("guides").hidden = !controls.length && m.reference_scale == null;
}

// ---- tokens and views ---------------------------------------------------------------------------

function refreshAccess() {
  $("access-toggle").textContent = getToken("api") ? "Token: set" : "Token: none";
  $("token").value = getToken("api");
  $("admin-token").value = getToken("admin");
}

function toggleAccess(open = $("access").hidden) {
  $("access").hidden = !open;
  $("access-toggle").setAttribute("aria-expanded", String(open));
  if (open) $("token").focus();
}

function showView(view) {
  $("view-work").hidden = view !== "work";
  $("view-admin").hidden = view !== "admin";
  for (const tab of document.querySelectorAll(".view-tab")) {
    if (tab.dataset.view === view) tab.setAttribute("aria-current", "page"); else tab.removeAttribute("aria-current");
  }
  if (view === "admin") adminView.load();
}

async function probeAdmin() {
  state.adminReady = Boolean(getToken("admin")) && (await adminView.probe());
  document.querySelector('.view-tab[data-view="admin"]').hidden = !state.adminReady;
  if (!state.adminReady && !$("view-admin").hidden) showView("work");
}

// ---- models and choices -------------------------------------------------------------------------

async function loadModels() {
  document.body.dataset.models = "loading";
  try {
    const [list, info] = await Promise.all([call("GET", "/v1/models"), call("GET", "/playground/models")]);
    state.models = new Map(info.models.map((m) => [m.name, m]));
    state.aliases = Object.fromEntries(info.models.map((m) => [m.name, m.model]));
    const names = list.data.map((m) => m.id);
    const isId = (name) => state.aliases[name] === name;
    names.sort((a, b) => Number(isId(b)) - Number(isId(a)));
    const previous = $("model").value || info.default_model;
    $("model").replaceChildren(...names.map((name) => {
      const target = state.aliases[name];
      return option(name, target && target !== name ? `${name} → ${target}` : name, name === previous);
    }));
    $("style").replaceChildren(...info.styles.map((s) => option(s.id === "none" ? "" : s.id, s.id === "none" ? "none" : `${s.id}: ${s.description}`)));
    onModelChange();
    showError("");
    setStatus("Ready.");
    document.body.dataset.models = "ready";
  } catch (error) {
    showError(explain(error));
    setStatus("Could not load the models.");
    document.body.dataset.models = "failed";
  }
}

function onModelChange() {
  const m = model();
  const ratios = Object.keys(m.sizes || {});
  const previous = $("aspect").value || "1:1";
  $("aspect").replaceChildren(...(ratios.length ? ratios.map((r) => option(r, r, r === previous)) : [option("", "model default")]));
  onAspectChange();
  $("n").max = String(m.max_images || 10);
  $("steps").placeholder = m.default_steps ? `default ${m.default_steps}` : "default";
  $("guidance").placeholder = m.default_guidance != null ? `default ${m.default_guidance}` : "default";
  if (m.default_strength != null && !$("strength").dataset.touched) {
    $("strength").value = String(m.default_strength);
    $("strength-out").textContent = $("strength").value;
  }
  $("negative").disabled = m.supports_negative_prompt === false;
  $("seed").disabled = m.supports_seed === false;
  updateGuides(m);
  const canEdit = !m.modes || m.modes.includes("edit");
  const edit = document.querySelector('input[name="mode"][value="edit"]');
  edit.disabled = !canEdit;
  if (!canEdit && edit.checked) { document.querySelector('input[name="mode"][value="draw"]').checked = true; }
  onModeChange();
}

function onAspectChange() {
  const m = model();
  const sizes = (m.sizes || {})[$("aspect").value] || [];
  const previous = $("size").value;
  const preferred = sizes.includes(previous) ? previous : sizes.includes(m.default_size) ? m.default_size : sizes[Math.min(1, sizes.length - 1)];
  const auto = `auto (model default${m.default_size ? ` ${m.default_size}` : ""})`;
  $("size").replaceChildren(...sizes.map((s) => option(s, s, s === preferred)), option("auto", auto, !sizes.length));
}

function onModeChange() {
  const editing = mode() === "edit";
  $("edit-section").hidden = !editing;
  updateGoLabel();
  updateMaskTools();
}

function updateGoLabel() {
  $("go").textContent = mode() === "draw" ? "Generate" : state.inputs.length > 1 ? "Compose" : "Edit";
}

// ---- input images and the mask -------------------------------------------------------------------

async function addInputs(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) { showError(`${file.name || "That file"} is not an image.`); continue; }
    state.inputs.push({ blob: file, url: URL.createObjectURL(file) });
  }
  await renderInputs();
}

async function renderInputs() {
  const list = $("inputs");
  list.replaceChildren();
  state.inputs.forEach((input, i) => {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = input.url;
    img.alt = `Input image ${i + 1}`;
    const caption = document.createElement("span");
    caption.textContent = `Image ${i + 1}`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Remove image ${i + 1}`);
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(input.url);
      state.inputs.splice(i, 1);
      renderInputs();
    });
    item.append(img, caption, remove);
    list.append(item);
  });
  const first = state.inputs[0];
  if (first && state.maskFor !== first) {
    state.maskFor = first;
    await painter.load(first.blob);
  }
  if (!first) state.maskFor = null;
  updateGoLabel();
  updateMaskTools();
}

function updateMaskTools() {
  const show = mode() === "edit" && state.inputs.length === 1 && model().supports_mask !== false;
  $("mask-tools").hidden = !show;
}

const useMask = () => mode() === "edit" && state.inputs.length === 1 && model().supports_mask !== false && painter.hasMask() && !$("expand").value;
const inputName = (input, i) => `input-${i + 1}.${EXT[input.blob.type] || "png"}`;

// ---- running a request --------------------------------------------------------------------------

async function send(s, seed, requestId, signal) {
  const headers = { ...authHeaders(), "X-Request-Id": requestId };
  const params = { model: s.model, prompt: s.prompt, n: s.n, size: s.size === "auto" || s.expand ? null : s.size, seed,
    steps: s.steps, guidance_scale: s.guidance, negative_prompt: s.negative || null, style_preset: s.style || null,
    stream: true, partial_images: PARTIALS };
  const guides = await guideFields(s);
  if (s.mode === "draw") {
    const body = { ...Object.fromEntries(Object.entries(params).filter(([, v]) => v !== null)), ...guides };
    return fetch(path("/v1/images/generations"), { method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify(body), signal });
  }
  const form = new FormData();
  for (const [k, v] of Object.entries({ ...params, strength: s.strength })) if (v !== null) form.append(k, String(v));
  for (const [k, v] of Object.entries(guides)) form.append(k, JSON.stringify(v)); // JSON string form fields
  const field = state.inputs.length > 1 ? "image[]" : "image";
  state.inputs.forEach((input, i) => form.append(field, input.blob, inputName(input, i)));
  if (useMask()) form.append("mask", await painter.toBlob(), "mask.png");
  if (s.expand) form.append("expand", JSON.stringify({ aspect_ratio: s.expand }));
  return fetch(path("/v1/images/edits"), { method: "POST", headers, body: form, signal });
}

function setBusy(busy) {
  $("go").disabled = busy;
  $("cancel").disabled = !busy;
  $("progress").setAttribute("aria-busy", String(busy));
}

async function run() {
  if (state.run) return;
  const s = settings();
  if (!s.prompt) { showError("Write a prompt first."); $("prompt").focus(); return; }
  if (s.mode === "edit" && !state.inputs.length) { showError("Add an input image first: drop one, choose a file, or use a result."); return; }
  // The page picks the seed when none is given, so every result knows the seed that makes it again.
  const seed = s.seed ?? Math.floor(Math.random() * 2 ** 31);
  const current = { requestId: newRequestId(), controller: new AbortController(), seed, partials: 0, done: 0, finished: false, started: performance.now() };
  state.run = current;
  const progress = $("progress");
  Object.assign(progress.dataset, { requestId: current.requestId, state: "running", partials: "0", images: "0" });
  $("preview").hidden = true;
  $("progress-bar").removeAttribute("value");
  showError("");
  setStatus("Sending…");
  setBusy(true);
  let polling = null;
  try {
    const response = await send(s, seed, current.requestId, current.controller.signal);
    if (!response.ok) throw await errorFrom(response);
    polling = pollJob(current); // the stream answers once the job is accepted, so the job exists from here on
    for await (const { event, data } of events(response)) {
      if (event.endsWith(".partial_image")) {
        current.partials += 1;
        progress.dataset.partials = String(current.partials);
        if (data.partial_image_index >= 0) showPreview(data);
      } else if (event.endsWith(".completed")) {
        current.lastCard = addResult(data, { ...s, seed: seed + current.done }, current.lastCard);
        current.done += 1;
        progress.dataset.images = String(current.done);
      } else if (event === "error") {
        throw new ApiError(null, data.error?.code, data.error?.message || "the server reported an error");
      }
    }
    if (!current.done) throw new ApiError(null, null, "the stream ended without an image");
    const seconds = ((performance.now() - current.started) / 1000).toFixed(1);
    $("progress-bar").max = 1;
    $("progress-bar").value = 1;
    setStatus(`Done: ${current.done} image${current.done > 1 ? "s" : ""} in ${seconds} s.`);
    progress.dataset.state = "done";
  } catch (error) {
    if (error.name === "AbortError") {
      await confirmCancelled(current);
    } else {
      showError(explain(error));
      setStatus("Failed.");
      progress.dataset.state = "failed";
      $("progress-bar").value = 0;
    }
  } finally {
    current.finished = true;
    await polling;
    state.run = null;
    setBusy(false);
    $("preview").hidden = true;
  }
}

function showPreview(data) {
  const img = $("preview");
  img.src = `data:image/${data.output_format || "png"};base64,${data.b64_json}`;
  img.hidden = false;
}

async function pollJob(current) {
  while (!current.finished && !current.controller.signal.aborted) {
    try {
      const job = await call("GET", `/v1/jobs/${current.requestId}`);
      if (!current.finished && !current.controller.signal.aborted) showJob(job, current);
    } catch { /* not registered yet, or gone: the stream says what matters */ }
    await sleep(POLL_MS);
  }
}

function showJob(job, current) {
  const bar = $("progress-bar");
  if (job.status === "queued") {
    bar.removeAttribute("value");
    setStatus(job.queue_position ? `Waiting in line: position ${job.queue_position}.` : "Waiting in line.");
  } else if (job.status === "running" && job.total_steps) {
    bar.max = job.total_steps;
    bar.value = job.step;
    const eta = job.eta_seconds != null ? `, about ${Math.ceil(job.eta_seconds)} s left` : "";
    const previews = current.partials ? `, ${current.partials} preview${current.partials > 1 ? "s" : ""}` : "";
    setStatus(`Step ${job.step} of ${job.total_steps}${eta}${previews}.`);
  }
}

function cancel() {
  if (!state.run) return;
  setStatus("Cancelling…");
  state.run.controller.abort();
}

/** After the page let go of the request, ask the server until it says the job stopped. */
async function confirmCancelled(current) {
  const progress = $("progress");
  for (let i = 0; i < 40; i++) {
    try {
      const job = await call("GET", `/v1/jobs/${current.requestId}`);
      if (job.status === "cancelled") {
        setStatus(`Cancelled: the server stopped the job at step ${job.step}${job.total_steps ? ` of ${job.total_steps}` : ""}.`);
        progress.dataset.state = "cancelled";
        return;
      }
      if (job.status === "done" || job.status === "failed") {
        setStatus(`The job had already ended (${job.status}) when the cancel reached the server.`);
        progress.dataset.state = job.status;
        return;
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        setStatus("Cancelled before the server took the request.");
        progress.dataset.state = "cancelled";
        return;
      }
    }
    await sleep(POLL_MS);
  }
  setStatus("Cancelled here; the server has not confirmed it yet.");
}

// ---- the gallery ---------------------------------------------------------------------------------

/** A card for one image: newest runs first, a batch's images in seed order (after `previous`). */
function addResult(data, s, previous = null) {
  const type = `image/${data.output_format || "png"}`;
  const blob = base64ToBlob(data.b64_json, type);
  const id = ++state.seq;
  const result = { id, blob, url: URL.createObjectURL(blob), settings: s, size: data.size };
  state.results.push(result);
  const card = document.createElement("li");
  card.className = "card";
  card.dataset.result = String(id);
  card.dataset.seed = String(s.seed);
  const img = document.createElement("img");
  img.src = result.url;
  img.alt = `Result ${id}: ${s.prompt} (seed ${s.seed})`;
  const facts = document.createElement("dl");
  const rows = [
    ["Prompt", s.prompt], ["Mode", s.mode === "draw" ? "draw" : state.inputs.length > 1 ? "compose" : "edit"],
    ["Model", s.model], ["Size", data.size], ["Seed", s.seed], ["Steps", s.steps ?? "default"],
    ["Guidance", s.guidance ?? "default"], ["Style", s.style || "none"],
  ];
  if (s.negative) rows.push(["Negative", s.negative]);
  if (s.mode === "edit") rows.push(["Strength", s.strength], ["Mask", useMask() ? "painted" : "none"], ["Expand", s.expand || "no"]);
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = String(v);
    facts.append(dt, dd);
  }
  const actions = document.createElement("div");
  actions.className = "row";
  const download = document.createElement("a");
  download.className = "button";
  download.href = result.url;
  download.download = `limner-${id}-seed-${s.seed}.${EXT[type] || "png"}`;
  download.textContent = "Download";
  download.setAttribute("aria-label", `Download (result ${id})`);
  actions.append(download,
    button("Use as input", `Use as input (result ${id})`, () => useAsInput(result)),
    button("Reuse seed", `Reuse seed (result ${id})`, () => { $("seed").value = String(s.seed); setStatus(`Seed ${s.seed} set.`); }),
    button("Upscale 2x", `Upscale 2x (result ${id})`, () => upscale(result, card)));
  const credentials = document.createElement("details");
  credentials.className = "credentials";
  credentials.dataset.credentials = "loading";
  const summary = document.createElement("summary");
  summary.textContent = "Content Credentials: reading…";
  credentials.append(summary);
  card.append(img, facts, credentials, actions);
  if (previous) previous.after(card); else $("gallery").prepend(card);
  $("empty").hidden = true;
  showCredentials(credentials, data.b64_json, id);
  return card;
}

const SOURCE_TYPES = {
  trainedAlgorithmicMedia: "made by an AI model",
  compositeWithTrainedAlgorithmicMedia: "partly made by an AI model",
  algorithmicMedia: "made by an algorithm",
  digitalCapture: "a camera's capture",
};
const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** What the result's C2PA manifest says (read by the server: the page has no C2PA reader). */
async function showCredentials(details, b64, id) {
  const summary = details.querySelector("summary");
  let report;
  try {
    report = await call("POST", "/playground/credentials", { body: { image: b64 } });
  } catch (error) {
    summary.textContent = "Content Credentials: could not be read";
    details.append(Object.assign(document.createElement("p"), { textContent: explain(error) }));
    details.dataset.credentials = "failed";
    return;
  }
  if (!report.present) {
    summary.textContent = "Content Credentials: none";
    details.append(Object.assign(document.createElement("p"), { textContent: "This image carries no C2PA manifest." }));
    details.dataset.credentials = "absent";
    return;
  }
  const untrusted = report.failures.includes("signingCredential.untrusted");
  const intact = report.state === "Valid" || report.state === "Trusted";
  summary.textContent = `Content Credentials: ${intact ? (report.trusted ? "valid, trusted signer" : "valid") : "invalid"}`;
  const when = report.when && !Number.isNaN(Date.parse(report.when)) ? TIME.format(new Date(report.when)) : report.when;
  const rows = [
    ["State", intact
      ? `signature and image intact${report.trusted ? ", signer trusted" : untrusted ? "; the signer is on no trust list" : ""}`
      : `broken (${report.failures.join(", ") || report.state})`],
    ["Signed by", [report.signer, report.signer_name].filter(Boolean).join(": ") || "unknown"],
    ["When", when || "not recorded"],
    ["Made with", report.generator || "unknown"],
    ["Actions", report.actions.join(", ") || "none"],
    ["Source", report.source_types.map((t) => SOURCE_TYPES[t] ? `${t} (${SOURCE_TYPES[t]})` : t).join(", ") || "not stated"],
  ];
  if (report.agents.length) rows.push(["Model", [...new Set(report.agents)].join(", ")]);
  rows.push(["Ingredients", report.ingredients.join(", ") || "none"]);
  const list = document.createElement("dl");
  list.setAttribute("aria-label", `Content Credentials of result ${id}`);
  for (const [k, v] of rows) {
    list.append(Object.assign(document.createElement("dt"), { textContent: k }), Object.assign(document.createElement("dd"), { textContent: v }));
  }
  details.append(list);
  details.dataset.credentials = intact ? "valid" : "invalid";
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

/** The result made twice as large by the server's built-in upscaler (/v1/images/upscale), as a new card beside it. */
async function upscale(result, card) {
  showError("");
  setStatus(`Upscaling result ${result.id}...`);
  const form = new FormData();
  form.append("image", result.blob, `result-${result.id}.${EXT[result.blob.type] || "png"}`);
  form.append("scale", "2");
  form.append("response_format", "b64_json");
  try {
    const response = await fetch(path("/v1/images/upscale"), { method: "POST", headers: authHeaders(), body: form });
    if (!response.ok) throw await errorFrom(response);
    const body = await response.json();
    addResult({ ...body.data[0], output_format: body.output_format, size: body.size }, result.settings, card);
    setStatus(`Result ${result.id} upscaled to ${body.size}.`);
  } catch (error) {
    showError(explain(error));
    setStatus("");
  }
}

async function useAsInput(result) {
  document.querySelector('input[name="mode"][value="edit"]').checked = true;
  onModeChange();
  state.inputs.push({ blob: result.blob, url: URL.createObjectURL(result.blob) });
  await renderInputs();
  setStatus(`Result ${result.id} is input image ${state.inputs.length}.`);
  $("prompt").focus();
}

// ---- show the request ----------------------------------------------------------------------------

const picked = (name) => document.querySelector(`input[name="${name}"]:checked`).value;
let fileUrls = [];
let renders = 0;

async function renderRequest() {
  const render = ++renders; // a newer render (another radio clicked meanwhile) wins
  const s = settings();
  const editing = s.mode === "edit" && state.inputs.length > 0;
  const token = getToken("api");
  const mask = editing && useMask() ? "mask.png" : null;
  const spec = { ...s, base: baseUrl(), aliases: state.aliases, mask,
    token: token ? { inline: $("inline-token").checked, value: token } : null,
    inputs: editing ? state.inputs.map(inputName) : [] };
  const { code, notes, files } = snippet(picked("dialect"), picked("lang"), spec);
  const blobs = await Promise.all(files.map((name) =>
    name === "mask.png" ? painter.toBlob() : name.startsWith("input-")
      ? state.inputs[Number(name.match(/input-(\d+)/)[1]) - 1].blob : guideFile(name)));
  if (render !== renders) return;
  $("request-code").textContent = code;
  $("request-code").dataset.shows = `${picked("dialect")}/${picked("lang")}/${s.mode}`;
  $("request-notes").replaceChildren(...notes.map((note) => Object.assign(document.createElement("li"), { textContent: note })));
  for (const url of fileUrls) URL.revokeObjectURL(url);
  fileUrls = blobs.map((blob) => URL.createObjectURL(blob));
  const links = files.flatMap((name, i) => [
    Object.assign(document.createElement("a"), { href: fileUrls[i], download: name, textContent: `download ${name}` }), " "]);
  $("request-files").replaceChildren(...(files.length ? ["It reads these files from the folder it runs in: ", ...links] : []));
  $("request-files").hidden = !files.length;
  $("request-copied").textContent = "";
}

async function copyRequest() {
  const text = $("request-code").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("request-code"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    document.execCommand("copy");
  }
  $("request-copied").textContent = "Copied.";
}

// ---- wiring --------------------------------------------------------------------------------------

$("work").addEventListener("submit", (e) => { e.preventDefault(); run(); });
$("cancel").addEventListener("click", cancel);
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("view-work").hidden && !$("request-dialog").open) {
    e.preventDefault();
    run();
  }
});
$("model").addEventListener("change", onModelChange);
$("aspect").addEventListener("change", onAspectChange);
for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", onModeChange);
$("strength").addEventListener("input", () => { $("strength").dataset.touched = "1"; $("strength-out").textContent = $("strength").value; });
$("brush").addEventListener("input", () => { $("brush-out").textContent = $("brush").value; painter.showCursor(); });
$("mask-clear").addEventListener("click", () => painter.clear());
$("mask-fill").addEventListener("click", () => painter.fill());
$("files").addEventListener("change", async (e) => { await addInputs([...e.target.files]); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); addInputs([...e.dataTransfer.files]); });

$("access-toggle").addEventListener("click", () => toggleAccess());
$("access-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  setToken("api", $("token").value.trim());
  setToken("admin", $("admin-token").value.trim());
  refreshAccess();
  toggleAccess(false);
  $("access-toggle").focus();
  await Promise.all([loadModels(), probeAdmin()]);
});
$("access-clear").addEventListener("click", async () => {
  setToken("api", "");
  setToken("admin", "");
  refreshAccess();
  await Promise.all([loadModels(), probeAdmin()]);
});
for (const tab of document.querySelectorAll(".view-tab")) tab.addEventListener("click", () => showView(tab.dataset.view));

$("show-request").addEventListener("click", async () => { await renderRequest(); $("request-dialog").showModal(); });
$("request-close").addEventListener("click", () => $("request-dialog").close());
for (const input of document.querySelectorAll('#request-dialog input')) input.addEventListener("change", renderRequest);
$("request-copy").addEventListener("click", copyRequest);

refreshAccess();
loadModels();
probeAdmin();
