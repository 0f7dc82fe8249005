// The admin view: consumers and balances, tokens (create, revoke, rotate), usage per consumer and model.
import { call, explain } from "./api.js";

const $ = (id) => document.getElementById(id);
const COLORS = ["#2746b8", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#1098ad", "#c2255c", "#5c940d", "#862e9c", "#495057"];
const SVG = "http://www.w3.org/2000/svg";

const admin = (method, path, body) => call(method, path, { body, kind: "admin" });

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text ?? "—";
  row.append(td);
  return td;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "never";
}

export class AdminView {
  constructor() {
    this.error = $("admin-error");
    $("token-form").addEventListener("submit", (e) => { e.preventDefault(); this.createToken(); });
    $("grant-form").addEventListener("submit", (e) => { e.preventDefault(); this.grant(); });
    $("usage-refresh").addEventListener("click", () => this.loadUsage());
    $("usage-since").addEventListener("change", () => this.loadUsage());
    $("usage-measure").addEventListener("change", () => this.drawUsage());
    let resized = null;
    window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(() => this.usage && this.drawUsage(), 200); });
    $("new-secret-copy").addEventListener("click", () => navigator.clipboard?.writeText($("new-secret-value").textContent));
  }

  async guard(action) {
    try {
      this.error.textContent = "";
      return await action();
    } catch (error) {
      this.error.textContent = explain(error);
      return undefined;
    }
  }

  /** Whether the admin token works (the view is offered only then). */
  async probe() {
    try { await admin("GET", "/admin/consumers"); return true; } catch { return false; }
  }

  async load() {
    await this.guard(async () => {
      await Promise.all([this.loadConsumers(), this.loadTokens(), this.loadUsage()]);
    });
  }

  async loadConsumers() {
    const { data } = await admin("GET", "/admin/consumers");
    const body = $("consumers").tBodies[0];
    body.replaceChildren();
    for (const c of data) {
      const row = body.insertRow();
      const th = document.createElement("th");
      th.scope = "row";
      th.textContent = c.name;
      row.append(th);
      cell(row, c.metered ? String(c.balance) : "unlimited");
      cell(row, c.rpm ?? "default");
      cell(row, c.ipm ?? "default");
      cell(row, String(c.active_tokens));
    }
  }

  async loadTokens() {
    const { data } = await admin("GET", "/admin/tokens");
    const body = $("tokens").tBodies[0];
    body.replaceChildren();
    for (const t of data) {
      const row = body.insertRow();
      row.dataset.token = t.id;
      cell(row, t.prefix + "…");
      cell(row, t.consumer);
      cell(row, t.label || "");
      cell(row, t.status);
      cell(row, when(t.last_used_at));
      const actions = cell(row, "");
      if (t.status === "active") {
        for (const [label, verb] of [["Rotate", "rotate"], ["Revoke", "revoke"]]) {
          const button = document.createElement("button");
          button.type = "button";
          button.textContent = label;
          button.setAttribute("aria-label", `${label} token ${t.prefix}`);
          button.addEventListener("click", () => this.tokenAction(t.id, verb));
          actions.append(button);
        }
      }
    }
  }

  showSecret(issued) {
    $("new-secret-value").textContent = issued.token;
    $("new-secret").hidden = false;
  }

  async createToken() {
    await this.guard(async () => {
      const expires = $("new-expires").value.trim();
      const issued = await admin("POST", "/admin/tokens", {
        consumer: $("new-consumer").value.trim(),
        label: $("new-label").value.trim(),
        expires: !expires || expires === "never" ? null : expires,
      });
      this.showSecret(issued);
      await Promise.all([this.loadTokens(), this.loadConsumers()]);
    });
  }

  async tokenAction(id, verb) {
    await this.guard(async () => {
      const answer = await admin("POST", `/admin/tokens/${encodeURIComponent(id)}/${verb}`);
      if (verb === "rotate") this.showSecret(answer);
      await Promise.all([this.loadTokens(), this.loadConsumers()]);
    });
  }

  async grant() {
    await this.guard(async () => {
      const name = $("grant-consumer").value.trim();
      await admin("POST", `/admin/consumers/${encodeURIComponent(name)}/credits`, { amount: Number($("grant-amount").value) });
      await this.loadConsumers();
    });
  }

  async loadUsage() {
    await this.guard(async () => {
      this.usage = await admin("GET", `/admin/usage?since=${encodeURIComponent($("usage-since").value)}&limit=1000`);
      const body = $("usage-summary").tBodies[0];
      body.replaceChildren();
      for (const s of this.usage.summary) {
        const row = body.insertRow();
        for (const value of [s.consumer, s.model, s.requests, s.failed, s.images, s.cost]) cell(row, String(value));
      }
      this.drawUsage();
    });
  }

  /** Stacked bars: one bar per time bucket, one colour per consumer / model. */
  drawUsage() {
    const chart = $("usage-chart");
    chart.replaceChildren();
    const records = this.usage?.records ?? [];
    const measure = $("usage-measure").value;
    const since = $("usage-since").value;
    const bucketMs = since === "24h" ? 3600e3 : 86400e3;
    const span = since === "24h" ? 24 : since === "7d" ? 7 : 30;
    const now = Date.now();
    const start = Math.floor(now / bucketMs) * bucketMs - (span - 1) * bucketMs;
    const series = new Map();
    for (const r of records) {
      const t = Date.parse(r.created_at);
      const index = Math.floor((t - start) / bucketMs);
      if (index < 0 || index >= span) continue;
      const key = `${r.consumer} / ${r.model}`;
      if (!series.has(key)) series.set(key, new Array(span).fill(0));
      series.get(key)[index] += measure === "requests" ? 1 : measure === "cost" ? Number(r.cost || 0) : r.images;
    }
    const keys = [...series.keys()].sort();
    const totals = Array.from({ length: span }, (_, i) => keys.reduce((sum, k) => sum + series.get(k)[i], 0));
    const max = Math.max(1e-9, ...totals);
    const [W, H, left, bottom] = [Math.max(320, Math.round(chart.clientWidth)), 220, 44, 22]; // text at its real size
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    const total = totals.reduce((a, b) => a + b, 0);
    svg.setAttribute("aria-label", `${measure} per ${bucketMs === 3600e3 ? "hour" : "day"}: ${+total.toFixed(4)} in all, ${keys.length} consumer and model pairs`);
    const add = (name, attrs, text) => {
      const el = document.createElementNS(SVG, name);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text !== undefined) el.textContent = text;
      svg.append(el);
      return el;
    };
    const plotW = W - left - 8;
    const plotH = H - bottom - 10;
    const barW = plotW / span;
    add("line", { x1: left, y1: 10 + plotH, x2: W - 8, y2: 10 + plotH, stroke: "currentColor", "stroke-opacity": "0.4" });
    add("text", { x: left - 6, y: 14, "text-anchor": "end", "font-size": 11, fill: "currentColor" }, +max.toFixed(3));
    add("text", { x: left - 6, y: 10 + plotH, "text-anchor": "end", "font-size": 11, fill: "currentColor" }, "0");
    for (let i = 0; i < span; i++) {
      let y = 10 + plotH;
      keys.forEach((key, k) => {
        const value = series.get(key)[i];
        if (!value) return;
        const h = (value / max) * plotH;
        y -= h;
        const rect = add("rect", { x: left + i * barW + 1, y, width: Math.max(1, barW - 2), height: h, fill: COLORS[k % COLORS.length] });
        rect.append(Object.assign(document.createElementNS(SVG, "title"), { textContent: `${key}: ${+value.toFixed(4)}` }));
      });
      const label = bucketMs === 3600e3 ? new Date(start + i * bucketMs).getHours() + "h" : new Date(start + i * bucketMs).getDate();
      if (span <= 8 || i % Math.ceil(span / 8) === 0) {
        add("text", { x: left + (i + 0.5) * barW, y: H - 6, "text-anchor": "middle", "font-size": 11, fill: "currentColor" }, String(label));
      }
    }
    chart.append(svg);
    const legend = document.createElement("ul");
    legend.className = "legend";
    keys.forEach((key, k) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.style.background = COLORS[k % COLORS.length];
      item.append(swatch, key);
      legend.append(item);
    });
    if (!keys.length) legend.append(Object.assign(document.createElement("li"), { textContent: "No usage in this period." }));
    chart.append(legend);
    const partial = records.length >= 1000 ? " (from the newest 1,000 requests)" : "";
    $("usage-caption").textContent = `${measure[0].toUpperCase()}${measure.slice(1)} per consumer and model, per ${bucketMs === 3600e3 ? "hour" : "day"}${partial}.`;
  }
}
