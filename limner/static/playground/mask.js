// The mask canvas: paint (or erase) over the input image; exported as white-on-black PNG (white = repaint).

const MAX_SIDE = 1024;

export class MaskPainter {
  constructor({ canvas, base, cursor, brush, tools }) {
    this.canvas = canvas;
    this.base = base;
    this.cursor = cursor;
    this.brush = brush;
    this.tools = tools;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.last = null;
    this.keyPos = null;
    this.painted = false;
    canvas.addEventListener("pointerdown", (e) => this.down(e));
    canvas.addEventListener("pointermove", (e) => this.move(e));
    canvas.addEventListener("pointerup", () => { this.last = null; });
    canvas.addEventListener("pointercancel", () => { this.last = null; });
    canvas.addEventListener("keydown", (e) => this.key(e));
    canvas.addEventListener("focus", () => this.showCursor());
    canvas.addEventListener("blur", () => { cursor.hidden = true; });
  }

  /** Start over on a new image (a Blob): the canvas takes its shape, at most MAX_SIDE pixels a side. */
  async load(blob) {
    const bitmap = await createImageBitmap(blob);
    const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
    this.canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    this.canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    bitmap.close();
    this.canvas.parentElement.style.aspectRatio = `${this.canvas.width} / ${this.canvas.height}`; // no jump on load
    if (this.base.src) URL.revokeObjectURL(this.base.src);
    this.base.src = URL.createObjectURL(blob);
    this.keyPos = { x: this.canvas.width / 2, y: this.canvas.height / 2 };
    this.clear();
  }

  erasing() { return this.tools().value === "erase"; }

  /** Brush diameter in canvas pixels (the slider is in screen pixels). */
  width() {
    const shown = this.canvas.getBoundingClientRect().width || this.canvas.width;
    return Number(this.brush.value) * (this.canvas.width / shown);
  }

  point(e) {
    const r = this.canvas.getBoundingClientRect();
    return { x: ((e.clientX - r.left) / r.width) * this.canvas.width, y: ((e.clientY - r.top) / r.height) * this.canvas.height };
  }

  down(e) {
    this.canvas.setPointerCapture?.(e.pointerId);
    this.last = this.point(e);
    this.stroke(this.last, this.last);
    e.preventDefault();
  }

  move(e) {
    if (!this.last) return;
    const p = this.point(e);
    this.stroke(this.last, p);
    this.last = p;
  }

  stroke(from, to) {
    const c = this.ctx;
    c.globalCompositeOperation = this.erasing() ? "destination-out" : "source-over";
    c.strokeStyle = c.fillStyle = "#ff1f5a";
    c.lineWidth = this.width();
    c.lineCap = c.lineJoin = "round";
    c.beginPath();
    c.moveTo(from.x, from.y);
    c.lineTo(to.x + 0.01, to.y);
    c.stroke();
    if (!this.erasing()) this.painted = true;
    this.changed?.();
  }

  key(e) {
    if (!this.keyPos) return;
    const step = (e.shiftKey ? 4 : 1) * Math.max(2, this.width() / 2);
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (e.key in moves) {
      const [dx, dy] = moves[e.key];
      const from = { ...this.keyPos };
      this.keyPos.x = Math.min(this.canvas.width, Math.max(0, this.keyPos.x + dx));
      this.keyPos.y = Math.min(this.canvas.height, Math.max(0, this.keyPos.y + dy));
      if (this.keyPaint) this.stroke(from, this.keyPos);
      this.showCursor();
      e.preventDefault();
    } else if (e.key === " " || e.key === "Enter") {
      this.keyPaint = !this.keyPaint;
      if (this.keyPaint) this.stroke(this.keyPos, this.keyPos);
      e.preventDefault();
    }
  }

  showCursor() {
    if (!this.keyPos || !this.canvas.width) return;
    const s = this.cursor.style;
    const shown = this.canvas.getBoundingClientRect().width || 1;
    const size = Number(this.brush.value);
    s.left = `${(this.keyPos.x / this.canvas.width) * 100}%`;
    s.top = `${(this.keyPos.y / this.canvas.height) * 100}%`;
    s.width = s.height = `${Math.min(size, shown)}px`;
    this.cursor.hidden = false;
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = false;
    this.keyPaint = false;
    this.changed?.();
  }

  fill() {
    this.ctx.globalCompositeOperation = "source-over";
    this.ctx.fillStyle = "#ff1f5a";
    this.ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = true;
    this.changed?.();
  }

  /** Whether any pixel is painted. */
  hasMask() {
    if (!this.painted || !this.canvas.width) return false;
    const { data } = this.ctx.getImageData(0, 0, this.canvas.width, this.canvas.height);
    for (let i = 3; i < data.length; i += 4) if (data[i] >= 128) return true;
    return false;
  }

  /** The mask as a PNG Blob: white where painted (repaint), black elsewhere (keep). */
  async toBlob() {
    const { width, height } = this.canvas;
    const source = this.ctx.getImageData(0, 0, width, height).data;
    const out = new ImageData(width, height);
    for (let i = 0; i < source.length; i += 4) {
      const v = source[i + 3] >= 128 ? 255 : 0;
      out.data[i] = out.data[i + 1] = out.data[i + 2] = v;
      out.data[i + 3] = 255;
    }
    const canvas = new OffscreenCanvas(width, height);
    canvas.getContext("2d").putImageData(out, 0, 0);
    return canvas.convertToBlob({ type: "image/png" });
  }
}
