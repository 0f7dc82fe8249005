// "Show the request": the current settings as one request in each dialect, written in curl, Python and
// JavaScript (Node 18+). Each program runs unchanged against this server (the tests run every one).

const MILADY_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "21:9", "9:21"];
const IMAGINEART_RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9", "4:5", "5:4", "3:1", "1:3", "4:1", "1:4"];
const MIME = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp" };
const mimeOf = (name) => MIME[name.split(".").pop().toLowerCase()] || "image/png";

/**
 * One dialect's request for the settings `s`:
 *   {path, body: "json" | "form", fields: [[name, value]], files: [[field, filename]],
 *    dataUrls: {field: [filenames], list: bool}, answer: "images" | "aiml" | "milady" | "bytes", notes: [...]}
 * `lang` matters only for the response format (curl prints links; programs save files).
 */
export function requestFor(dialect, s, lang) {
  const edit = s.mode === "edit" && s.inputs.length > 0;
  const notes = [];
  const fields = [];
  const put = (name, value) => { if (value !== undefined && value !== null && value !== "") fields.push([name, value]); };
  const sized = s.size && s.size !== "auto" ? s.size : null;
  const links = lang === "curl";
  const r = { path: "", body: "json", fields, files: [], dataUrls: null, embeds: [], answer: "images", notes };

  if (dialect === "openai") {
    r.path = edit ? "/v1/images/edits" : "/v1/images/generations";
    r.body = edit ? "form" : "json";
    put("model", s.model); put("prompt", s.prompt); put("n", s.n); put("size", edit && s.expand ? null : sized);
    put("seed", s.seed); put("steps", s.steps); put("guidance_scale", s.guidance);
    put("negative_prompt", s.negative); put("style_preset", s.style);
    if (edit) {
      put("strength", s.strength);
      if (s.expand) put("expand", JSON.stringify({ aspect_ratio: s.expand }));
      const name = s.inputs.length > 1 ? "image[]" : "image";
      r.files = s.inputs.map((file) => [name, file]);
      if (s.mask) r.files.push(["mask", s.mask]);
    }
    put("response_format", links ? "url" : "b64_json");
    if (s.seed !== null && s.n > 1) notes.push(`Image i of the batch has seed ${s.seed} + i.`);
  } else if (dialect === "aigne") {
    r.path = "/api/images/generations";
    put("prompt", s.prompt); put("model", s.model); put("n", s.n); put("size", sized);
    put("seed", s.seed); put("negative_prompt", s.negative);
    if (edit) r.dataUrls = { field: "image", files: s.inputs, list: s.inputs.length > 1 };
    put("response_format", links ? "url" : "b64_json");
    notes.push(...lost(s, { steps: true, guidance: true, style: true, strength: edit, mask: edit, expand: edit }));
  } else if (dialect === "aiml") {
    r.path = "/v1/generation/images";
    r.answer = "aiml";
    put("model", s.model); put("prompt", s.prompt);
    if (edit) r.dataUrls = { field: "image", files: s.inputs, list: s.inputs.length > 1 };
    put("response_format", links ? "presigned_url" : "b64_json");
    put("size", sized);
    if (s.n > 1) notes.push("AI.ML makes one image per request (n is not sent).");
    notes.push(...lost(s, { seed: true, steps: true, guidance: true, negative: true, style: true, strength: edit, mask: edit, expand: edit }));
  } else if (dialect === "milady") {
    r.path = "/api/v1/generate-image";
    r.answer = "milady";
    const ratio = MILADY_RATIOS.includes(s.aspect) ? s.aspect : "1:1";
    put("prompt", s.prompt); put("model", s.model); put("aspectRatio", ratio);
    put("numImages", Math.min(s.n, 4)); put("stylePreset", s.style);
    if (edit) r.dataUrls = { field: "sourceImage", files: s.inputs.slice(0, 1), list: false };
    notes.push("Milady answers PNG at about one megapixel in its aspect ratio (no size field).");
    if (ratio !== s.aspect && s.aspect) notes.push(`Milady has no ${s.aspect}; 1:1 is sent.`);
    if (s.n > 4) notes.push("Milady makes at most 4 images per request.");
    if (edit && s.inputs.length > 1) notes.push("Milady takes one source image: only the first is sent.");
    notes.push(...lost(s, { seed: true, steps: true, guidance: true, negative: true, strength: edit, mask: edit, expand: edit }));
  } else if (dialect === "imagineart") {
    r.path = edit ? "/v1/images/edits" : "/v1/images/generations";
    r.body = "form";
    r.answer = "bytes";
    const ratio = edit ? "auto" : IMAGINEART_RATIOS.includes(s.aspect) ? s.aspect : "1:1";
    put("prompt", s.prompt); put("aspect_ratio", ratio); put("resolution", "1K"); put("seed", s.seed);
    if (edit) r.files = s.inputs.slice(0, 4).map((file) => ["images", file]);
    const target = edit ? "image-edit" : "text-to-image";
    notes.push(`ImagineArt's model is always ${target}${s.aliases[target] ? ` (on this server: ${s.aliases[target]})` : ""}; the answer is the PNG itself, one per request.`);
    if (edit && s.inputs.length > 4) notes.push("ImagineArt takes at most 4 images: the first 4 are sent.");
    notes.push(...lost(s, { steps: true, guidance: true, negative: true, style: true, strength: edit, mask: edit, expand: edit }));
  }
  guides(r, s, put);
  return r;
}

/** limner's ``controls`` and ``reference_images``: JSON lists whose images are data URLs of files (marks here,
 * filled in by each language). Forms would carry them as JSON strings holding data URLs: not shown. */
function guides(r, s, put) {
  const chosen = [s.control && "control image", s.reference && "reference image"].filter(Boolean);
  if (!chosen.length) return;
  if (r.body === "form") {
    r.notes.push(`The ${chosen.join(" and ")} ride in this dialect's form as JSON string fields (controls, reference_images) with data URLs; the JSON dialects show how.`);
    return;
  }
  const mark = (file) => { r.embeds.push(file); return `@@FILE:${file}@@`; };
  const scaled = (item, scale) => (scale === null || scale === undefined ? item : { ...item, scale });
  if (s.control) put("controls", [scaled({ name: s.control.name, image: mark(s.control.file) }, s.control.scale)]);
  if (s.reference) put("reference_images", [scaled({ image: mark(s.reference.file) }, s.reference.scale)]);
}

const EMBED = /"@@FILE:([^@"]+)@@"/g;

function lost(s, which) {
  const names = {
    seed: s.seed !== null && "seed", steps: s.steps !== null && "steps", guidance: s.guidance !== null && "guidance",
    negative: s.negative && "negative prompt", style: s.style && "style preset",
    strength: s.strength !== null && "strength", mask: s.mask && "mask", expand: s.expand && "expand",
  };
  const gone = Object.keys(which).filter((key) => which[key] && names[key]).map((key) => names[key]);
  return gone.length ? [`Not in this dialect, so not sent: ${gone.join(", ")}.`] : [];
}

// ---- quoting -----------------------------------------------------------------------------------

const sh = (text) => `'${String(text).replace(/'/g, `'\\''`)}'`;
/** A Python literal (JSON's string escapes are Python's too); dicts one key a line, at `level`. */
function py(value, level = 0) {
  if (value === null || value === undefined) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((item) => py(item, level)).join(", ")}]`;
  const pad = "    ".repeat(level + 1);
  const lines = Object.entries(value).map(([k, v]) => `${pad}${JSON.stringify(k)}: ${py(v, level + 1)},`);
  return `{\n${lines.join("\n")}\n${"    ".repeat(level)}}`;
}
const js = (value) => JSON.stringify(value, null, 2);
const indent = (text, spaces) => text.split("\n").join("\n" + " ".repeat(spaces));
const asObject = (fields) => Object.fromEntries(fields);

// ---- curl --------------------------------------------------------------------------------------

function curl(r, s) {
  const url = s.base + r.path;
  const auth = s.token ? [`-H ${s.token.inline ? sh(`Authorization: Bearer ${s.token.value}`) : `"Authorization: Bearer $LIMNER_TOKEN"`}`] : [];
  const lines = [];
  if (r.body === "form") {
    const parts = [
      ...r.fields.map(([k, v]) => `--form-string ${sh(`${k}=${v}`)}`),
      ...r.files.map(([k, file]) => `-F ${sh(`${k}=@${file};type=${mimeOf(file)}`)}`),
    ];
    const out = r.answer === "bytes" ? ["--output image.png"] : [];
    lines.push(`curl -sS --fail-with-body ${url}`, ...auth, ...parts, ...out);
    const text = lines.join(" \\\n  ");
    return r.answer === "bytes" ? `${text}\necho "saved image.png"` : text;
  }
  const head = [`curl -sS --fail-with-body ${url}`, ...auth, `-H 'Content-Type: application/json'`];
  if (!r.dataUrls && !r.embeds.length) return [...head, `-d ${sh(JSON.stringify(asObject(r.fields)))}`].join(" \\\n  ");
  // Input images become data URLs inside the JSON, streamed through stdin (no command-line size limit).
  const body = asObject(r.fields);
  if (r.dataUrls) {
    const marks = r.dataUrls.files.map((file) => `@@FILE:${file}@@`);
    body[r.dataUrls.field] = r.dataUrls.list ? marks : marks[0];
  }
  const json = JSON.stringify(body);
  const pieces = [];
  let rest = json;
  for (const [mark, file] of json.matchAll(/@@FILE:([^@"]+)@@/g)) {
    const at = rest.indexOf(mark);
    pieces.push(`printf '%s' ${sh(rest.slice(0, at))}`, `printf '%s' ${sh(`data:${mimeOf(file)};base64,`)}`, `base64 < ${file} | tr -d '\\n'`);
    rest = rest.slice(at + mark.length);
  }
  pieces.push(`printf '%s' ${sh(rest)}`);
  return `{\n  ${pieces.join("\n  ")}\n} | ${[...head, "--data-binary @-"].join(" \\\n  ")}`;
}

// ---- Python --------------------------------------------------------------------------------------

const DATA_URL_PY = ["def data_url(path):",
  '    kind = mimetypes.guess_type(path)[0] or "image/png"',
  '    with open(path, "rb") as f:',
  '        return f"data:{kind};base64," + base64.b64encode(f.read()).decode()', "", ""];

function pyToken(s) {
  if (!s.token) return null;
  return s.token.inline ? JSON.stringify(s.token.value) : 'os.environ["LIMNER_TOKEN"]';
}

function pythonOpenAI(r, s) {
  const sdkNames = new Set(["model", "prompt", "n", "size", "response_format"]);
  const args = r.fields.filter(([k]) => sdkNames.has(k));
  const extra = r.fields.filter(([k]) => !sdkNames.has(k));
  const key = pyToken(s) || '"unused"';
  const embeds = r.embeds.length > 0;
  const lines = ["import base64", ...(embeds ? ["import mimetypes"] : []), ...(s.token && !s.token.inline ? ["import os"] : []), "",
    "from openai import OpenAI", "", ...(embeds ? DATA_URL_PY : []),
    `client = OpenAI(base_url=${JSON.stringify(s.base + "/v1")}, api_key=${key})`];
  const call = [];
  let method = "generate";
  if (r.files.length) {
    method = "edit";
    const images = r.files.filter(([k]) => k !== "mask").map(([, f]) => `open(${JSON.stringify(f)}, "rb")`);
    call.push(`image=${images.length > 1 ? `[${images.join(", ")}]` : images[0]},`);
    const mask = r.files.find(([k]) => k === "mask");
    if (mask) call.push(`mask=open(${JSON.stringify(mask[1])}, "rb"),`);
  }
  for (const [k, v] of args) call.push(`${k}=${py(v)},`);
  if (extra.length) call.push(`extra_body=${py(asObject(extra), 1).replace(EMBED, (_, f) => `data_url(${JSON.stringify(f)})`)},  # limner's extensions`);
  lines.push(`result = client.images.${method}(`, ...call.map((line) => "    " + line), ")");
  lines.push("for i, item in enumerate(result.data):",
    '    with open(f"image-{i}.png", "wb") as f:',
    "        f.write(base64.b64decode(item.b64_json))",
    '    print(f"saved image-{i}.png (seed {item.seed})")');
  return lines.join("\n");
}

function pythonHttpx(r, s) {
  const token = pyToken(s);
  const embeds = Boolean(r.dataUrls) || r.embeds.length > 0;
  const needsBase64 = embeds || r.answer === "images" || r.answer === "aiml";
  const stdlib = [...(needsBase64 ? ["import base64"] : []), ...(embeds ? ["import mimetypes"] : []),
    ...(s.token && !s.token.inline ? ["import os"] : [])];
  const lines = [...stdlib, ...(stdlib.length ? [""] : []), "import httpx", ""];
  const headers = !token ? "" : s.token.inline ? `, headers={"Authorization": ${JSON.stringify(`Bearer ${s.token.value}`)}}`
    : `, headers={"Authorization": "Bearer " + ${token}}`;
  if (embeds) lines.push(...DATA_URL_PY);
  lines.push(`client = httpx.Client(base_url=${JSON.stringify(s.base)}, timeout=300${headers})`);
  if (r.body === "form") {
    const files = [
      ...r.fields.map(([k, v]) => `(${JSON.stringify(k)}, (None, ${JSON.stringify(String(v))})),`),
      ...r.files.map(([k, f]) => `(${JSON.stringify(k)}, (${JSON.stringify(f)}, open(${JSON.stringify(f)}, "rb"), ${JSON.stringify(mimeOf(f))})),`),
    ];
    lines.push(`response = client.post(`, `    ${JSON.stringify(r.path)},`, "    files=[  # multipart/form-data",
      ...files.map((line) => "        " + line), "    ],", ")");
  } else {
    let body = py(asObject(r.fields));
    if (r.dataUrls) {
      const value = r.dataUrls.list ? `[${r.dataUrls.files.map((f) => `data_url(${JSON.stringify(f)})`).join(", ")}]` : `data_url(${JSON.stringify(r.dataUrls.files[0])})`;
      body = body.replace(/\n}$/, `\n    ${JSON.stringify(r.dataUrls.field)}: ${value},\n}`);
    }
    body = body.replace(EMBED, (_, f) => `data_url(${JSON.stringify(f)})`);
    lines.push(`response = client.post(${JSON.stringify(r.path)}, json=${body})`);
  }
  lines.push("response.raise_for_status()");
  if (r.answer === "bytes") {
    lines.push('with open("image.png", "wb") as f:', "    f.write(response.content)",
      'print("saved image.png, seed", response.headers.get("X-Seed"))');
  } else if (r.answer === "milady") {
    lines.push('for i, item in enumerate(response.json()["images"]):',
      '    with open(f"image-{i}.png", "wb") as f:',
      '        f.write(client.get(item["url"]).raise_for_status().content)',
      '    print(f"saved image-{i}.png")');
  } else if (r.answer === "aiml") {
    lines.push('with open("image.png", "wb") as f:',
      '    f.write(base64.b64decode(response.json()["data"]["image"]["b64_json"]))', 'print("saved image.png")');
  } else {
    lines.push('for i, item in enumerate(response.json()["data"]):',
      '    with open(f"image-{i}.png", "wb") as f:',
      '        f.write(base64.b64decode(item["b64_json"]))',
      '    print(f"saved image-{i}.png")');
  }
  return lines.join("\n");
}

// ---- JavaScript (Node 18+, an ES module) ----------------------------------------------------------

function javascript(r, s) {
  const reads = r.files.length || r.dataUrls || r.embeds.length ? "readFile, " : "";
  const lines = ["// Node 18+: save as request.mjs, then run `node request.mjs`.", `import { ${reads}writeFile } from "node:fs/promises";`, ""];
  const headers = {};
  if (s.token) headers.Authorization = s.token.inline ? `Bearer ${s.token.value}` : "@@TOKEN@@";
  let init;
  if (r.body === "form") {
    lines.push("const form = new FormData();");
    for (const [k, v] of r.fields) lines.push(`form.append(${JSON.stringify(k)}, ${JSON.stringify(String(v))});`);
    for (const [k, f] of r.files) {
      lines.push(`form.append(${JSON.stringify(k)}, new Blob([await readFile(${JSON.stringify(f)})], { type: ${JSON.stringify(mimeOf(f))} }), ${JSON.stringify(f)});`);
    }
    lines.push("");
    init = { method: "POST", headers, body: "@@BODY@@" };
  } else {
    if (r.dataUrls || r.embeds.length) {
      lines.push("const dataUrl = async (path, type) => `data:${type};base64,${(await readFile(path)).toString(\"base64\")}`;", "");
    }
    headers["Content-Type"] = "application/json";
    init = { method: "POST", headers, body: "@@BODY@@" };
  }
  let initText = js(init).replace('"@@TOKEN@@"', "`Bearer ${process.env.LIMNER_TOKEN}`");
  if (r.body === "form") {
    initText = initText.replace('"@@BODY@@"', "form");
  } else {
    let body = js(asObject(r.fields));
    if (r.dataUrls) {
      const urls = r.dataUrls.files.map((f) => `await dataUrl(${JSON.stringify(f)}, ${JSON.stringify(mimeOf(f))})`);
      const value = r.dataUrls.list ? `[${urls.join(", ")}]` : urls[0];
      body = body.replace(/\n}$/, `,\n  ${JSON.stringify(r.dataUrls.field)}: ${value}\n}`);
    }
    body = body.replace(EMBED, (_, f) => `await dataUrl(${JSON.stringify(f)}, ${JSON.stringify(mimeOf(f))})`);
    initText = initText.replace('"@@BODY@@"', `JSON.stringify(${indent(body, 2)})`);
  }
  lines.push(`const response = await fetch(${JSON.stringify(s.base + r.path)}, ${initText});`,
    "if (!response.ok) throw new Error(`${response.status}: ${await response.text()}`);");
  if (r.answer === "bytes") {
    lines.push('await writeFile("image.png", Buffer.from(await response.arrayBuffer()));',
      'console.log("saved image.png, seed", response.headers.get("X-Seed"));');
  } else if (r.answer === "milady") {
    lines.push("const { images } = await response.json();", "for (const [i, item] of images.entries()) {",
      "  const image = await fetch(item.url);",
      "  await writeFile(`image-${i}.png`, Buffer.from(await image.arrayBuffer()));",
      "  console.log(`saved image-${i}.png`);", "}");
  } else if (r.answer === "aiml") {
    lines.push("const { data } = await response.json();",
      'await writeFile("image.png", Buffer.from(data.image.b64_json, "base64"));', 'console.log("saved image.png");');
  } else {
    lines.push("const { data } = await response.json();", "for (const [i, item] of data.entries()) {",
      '  await writeFile(`image-${i}.png`, Buffer.from(item.b64_json, "base64"));',
      "  console.log(`saved image-${i}.png`);", "}");
  }
  return lines.join("\n");
}

/** {code, notes, files} for one dialect and language. */
export function snippet(dialect, lang, s) {
  const r = requestFor(dialect, s, lang);
  let code;
  if (lang === "curl") code = curl(r, s);
  else if (lang === "python") code = dialect === "openai" ? pythonOpenAI(r, s) : pythonHttpx(r, s);
  else code = javascript(r, s);
  const files = [...new Set([...r.files.map(([, f]) => f), ...(r.dataUrls?.files ?? []), ...r.embeds])];
  if (s.token && !s.token.inline) r.notes.unshift("Reads your token from the LIMNER_TOKEN environment variable (export LIMNER_TOKEN=…).");
  return { code, notes: r.notes, files };
}
