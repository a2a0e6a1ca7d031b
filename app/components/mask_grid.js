// The editable K×N mask, drawn on a canvas in the browser: the Streamlit app mounts it as a components-v2
// module, the Gradio app inside a gr.HTML (app/gradio_demo.py wires props/trigger to `data`/`setTriggerValue`).
// Above the grid: a colour legend and zoom buttons (taller rows for large K; the grid scrolls to pan).
// Block bands name each block; with Δ_k known, a log-scaled Δ_k strip sits right of the rows.
// Clicks and box drags change the cells here at once (no server round trip before the redraw),
// then report the edit to Python as a trigger value {seq, k0, k1, i0, i1, mode}; Python applies the
// same rule (blockmask.viz.MaskEditor) and sends the mask back with ack = seq. Until the server has
// acknowledged the browser's last edit, the browser keeps its own cells.
export default function bmMaskGrid(component) {
  const { data, parentElement, setTriggerValue } = component;
  let root = parentElement.querySelector(".bm-grid");
  if (!root) {
    root = document.createElement("div");
    root.className = "bm-grid";
    root.innerHTML = '<div class="bm-bar"><span class="bm-legend"></span><span class="bm-zoom">' +
      '<button type="button" data-z="out" title="Shorter rows">−</button><button type="button" data-z="fit" ' +
      'title="Fit the rows to the view">fit</button><button type="button" data-z="in" title="Taller rows (scroll to ' +
      'pan)">+</button></span></div><div class="bm-scroll"><canvas class="bm-canvas" data-testid="bm-mask-canvas">' +
      '</canvas><div class="bm-tip" role="tooltip"></div></div><div class="bm-status" data-testid="bm-mask-status"></div>';
    parentElement.appendChild(root);
    root.__bm = { seq: 0, cells: null, zoom: 1 };
    root.querySelectorAll(".bm-zoom button").forEach((b) => b.addEventListener("click", () => {
      const s = root.__bm, z = b.dataset.z;
      s.zoom = z === "fit" ? 1 : Math.max(1, Math.min(64, s.zoom * (z === "in" ? 2 : 0.5)));
      s.render();
    }));
  }
  const st = root.__bm;
  const canvas = root.querySelector("canvas");
  const tip = root.querySelector(".bm-tip");
  const status = root.querySelector(".bm-status");
  const legend = root.querySelector(".bm-legend");
  const K = data.K, N = data.N;
  // adopt the server's cells unless the browser holds edits the server has not applied yet
  // (an edit the server never answered — e.g. dropped by an interrupted rerun — stops blocking after 4 s)
  if (st.cells === null || data.ack >= st.seq || st.K !== K || st.N !== N || Date.now() - (st.sentAt || 0) > 4000) {
    st.cells = data.cells.split("");
    st.seq = Math.max(st.seq, data.ack);
  }
  st.K = K; st.N = N; st.data = data;
  st.component = component;
  st.render = () => bmMaskGrid(st.component);

  // geometry: cells at most 26 px wide, gaps between blocks, step labels left, unit names on top
  const avail = Math.max(320, (parentElement.host || parentElement).clientWidth || 900);
  const left = 96, top = N <= 60 ? 74 : 30, gap = 3;
  const starts = new Set(data.blocks.map((b) => b[1]).filter((a) => a > 0));
  const strip = data.delta ? 56 : 0;  // Δ_k strip right of the rows
  const cw = Math.max(4, Math.min(26, Math.floor((avail - left - 10 - strip - gap * starts.size) / N)));
  const dpr = window.devicePixelRatio || 1;
  const fit = Math.max(2, Math.min(cw, Math.floor(640 / K)));
  const ch = Math.max(2, Math.min(Math.max(cw, fit), Math.floor(fit * st.zoom), Math.floor(30000 / dpr / K)));
  const x0 = []; let x = left;
  for (let i = 0; i < N; i++) { if (starts.has(i)) x += gap; x0.push(x); x += cw; }
  const sx0 = x + 6, W = x + 8 + strip, H = top + K * ch + 6;
  const dvals = (data.delta || []).map((v) => (v > 0 ? Math.log10(v) : null));
  const dfin = dvals.filter((v) => v !== null), dlo = Math.min(...dfin), dhi = Math.max(...dfin);
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
  }
  st.geo = { left, top, cw, ch, x0, W, H };

  function colour(k, i) {
    const c = st.cells[k * N + i];
    if (c === "1") return k === 0 ? data.colors.row0 : data.colors.computed;
    return c === "2" ? data.colors.removed : data.colors.reused;
  }
  function draw(box) {
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, W, H);
    g.fillStyle = "#ffffff"; g.fillRect(0, 0, W, H);
    const inner = cw >= 6 ? cw - 1 : cw, innerH = ch >= 5 ? ch - 1 : ch;
    for (let k = 0; k < K; k++) {
      const y = top + k * ch;
      for (let i = 0; i < N; i++) { g.fillStyle = colour(k, i); g.fillRect(x0[i], y, inner, innerH); }
    }
    g.fillStyle = "#333"; g.font = "10px sans-serif"; g.textBaseline = "middle"; g.textAlign = "right";
    const every = Math.max(1, Math.ceil(12 / ch));
    for (let k = 0; k < K; k += every) g.fillText(data.rows[k], left - 6, top + k * ch + ch / 2);
    g.textAlign = "left";
    if (N <= 60) {  // unit names, rotated, and block names above them
      for (let i = 0; i < N; i++) {
        g.save(); g.translate(x0[i] + cw / 2, top - 4); g.rotate(-Math.PI / 2.6);
        g.font = "9px sans-serif"; g.fillStyle = "#444"; g.fillText(data.units[i], 0, 0); g.restore();
      }
    }
    data.blocks.forEach((b, j) => {  // block bands: a shaded strip with the block name above each block
      const bx = x0[b[1]], bw = x0[b[2]] + cw - bx;
      g.fillStyle = j % 2 ? "#eef1f6" : "#dfe5ef"; g.fillRect(bx, 0, bw, 12);
      g.fillStyle = "#333"; g.font = "9px sans-serif"; g.textAlign = "center";
      if (bw > 14) g.fillText(b[0], bx + bw / 2, 6);
      g.textAlign = "left";
    });
    if (strip && dfin.length) {  // Δ_k strip: log-scaled bar per step (long = the output changes a lot)
      g.fillStyle = "#333"; g.font = "9px sans-serif"; g.fillText("Δ_k (log)", sx0, top - 8);
      for (let k = 0; k < K; k++) {
        if (dvals[k] === null) continue;
        const f = dhi > dlo ? (dvals[k] - dlo) / (dhi - dlo) : 1;
        g.fillStyle = "#b5651d"; g.fillRect(sx0, top + k * ch, Math.max(1, f * (strip - 8)), Math.max(1, innerH));
      }
    }
    g.strokeStyle = data.colors.sep; g.setLineDash([2, 2]); g.lineWidth = 1;
    for (const a of starts) { const sx = x0[a] - gap / 2 - 0.5; g.beginPath(); g.moveTo(sx, top); g.lineTo(sx, top + K * ch); g.stroke(); }
    g.setLineDash([]);
    if (box) {
      const a = Math.min(box.i0, box.i1), b = Math.max(box.i0, box.i1);
      const c = Math.min(box.k0, box.k1), d = Math.max(box.k0, box.k1);
      g.strokeStyle = "#ff4b4b"; g.lineWidth = 2;
      g.strokeRect(x0[a] - 1, top + c * ch - 1, x0[b] + cw - x0[a] + 2, (d - c + 1) * ch + 2);
    }
    const on = st.cells.filter((c) => c === "1").length;
    status.textContent = `${on} / ${K * N} cells computed` + (data.readonly ? " · read-only view" : "") +
      (st.zoom > 1 ? ` · rows ×${st.zoom} (scroll to pan)` : "");
    const c = data.colors;
    legend.innerHTML = [[c.computed, "computed"], [c.row0, "step 0 (always computed)"], [c.reused, "reused (cache)"],
      [c.removed, "removed by rectification"]].map(([col, t]) =>
      `<span class="bm-key"><i style="background:${col}"></i>${t}</span>`).join("");
    root.dataset.cells = st.cells.join("");  // for tests and automation: cells and cell geometry
    root.dataset.geo = JSON.stringify({ left, top, cw, ch, x0, K, N });
  }
  function cellAt(ev) {
    const r = canvas.getBoundingClientRect();
    const px = ev.clientX - r.left, py = ev.clientY - r.top;
    const k = Math.floor((py - top) / ch);
    if (k < 0 || k >= K) return null;
    for (let i = 0; i < N; i++) if (px >= x0[i] && px < x0[i] + cw) return { k, i };
    return null;
  }
  function apply(k0, k1, i0, i1, mode) {  // the same rule as MaskEditor.set_region / toggle
    const n = st.N;
    for (let k = Math.min(k0, k1); k <= Math.max(k0, k1); k++)
      for (let i = Math.min(i0, i1); i <= Math.max(i0, i1); i++) {
        const j = k * n + i, was = st.cells[j] === "1";
        const want = mode === "on" ? true : mode === "off" ? false : !was;
        if (k === 0 && !want) continue;  // step 0 has no cache to reuse: it stays computed
        st.cells[j] = want ? "1" : (st.cells[j] === "2" ? "2" : "0");
      }
  }
  canvas.onmousedown = (ev) => {
    if (data.readonly) return;
    const c = cellAt(ev); if (!c) return;
    st.drag = { k0: c.k, i0: c.i, k1: c.k, i1: c.i };
    ev.preventDefault();
  };
  canvas.onmousemove = (ev) => {
    const c = cellAt(ev);
    if (st.drag && c && (c.k !== st.drag.k1 || c.i !== st.drag.i1)) { st.drag.k1 = c.k; st.drag.i1 = c.i; draw(st.drag); }
    if (!c) { tip.style.display = "none"; return; }
    const s = st.cells[c.k * N + c.i];
    tip.textContent = `${data.tips[c.i]} · step ${data.rows[c.k]} · ` +
      (s === "1" ? "computed" : s === "2" ? "removed by rectification (reused)" : "reused (cache)") +
      (data.delta && data.delta[c.k] !== null ? ` · Δ_k ${data.delta[c.k].toPrecision(3)}` : "");
    tip.style.display = "block";
    tip.style.maxWidth = Math.max(160, W - 8) + "px";  // stay inside the component's frame
    const tw = tip.offsetWidth;
    tip.style.left = Math.max(0, Math.min(ev.offsetX + 14, W - tw - 4)) + "px";
    tip.style.top = (ev.offsetY + 14) + "px";
  };
  canvas.onmouseleave = () => { tip.style.display = "none"; };
  window.addEventListener("mouseup", root.__up || (root.__up = (ev) => {
    const d = root.__bm.drag; root.__bm.drag = null;
    if (!d) return;
    const s = root.__bm, mode = s.data.mode;
    s.apply(d.k0, d.k1, d.i0, d.i1, mode);
    s.seq += 1;
    s.redraw();
    s.send({ seq: s.seq, k0: Math.min(d.k0, d.k1), k1: Math.max(d.k0, d.k1), i0: Math.min(d.i0, d.i1),
             i1: Math.max(d.i0, d.i1), mode });
  }));
  st.redraw = () => draw(null);
  st.apply = apply;
  st.send = (edit) => { st.sentAt = Date.now(); setTriggerValue("edit", edit); };
  draw(null);
}
