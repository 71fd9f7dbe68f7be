// Representation similarity (linear CKA, from the Gram matrices each event logs):
// in the layer view, under the probe, a step x step heat map of the layer with the
// value under the pointer; in the overview, a card beside the layers' with each
// layer's CKA to its last step over the steps (layers that settle early climb to 1
// first: the bottom-up picture).

import {formatTick, niceTicks} from './charts.js';
import {el, svg} from './dom.js';

// matplotlib's viridis at 9 evenly spaced positions (the grids' colour map too).
const VIRIDIS = ['#440154', '#472d7b', '#3b528b', '#2c728e', '#21918c', '#28ae80', '#5ec962', '#addc30', '#fde725']
    .map((hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16)));
const UNDEFINED = '#e040fb'; // magenta, as the grids mark NaN
const LINE_COLORS = ['#1a73e8', '#e8710a', '#1e8e3e', '#d93025', '#9334e6', '#12b5cb', '#e52592', '#f9ab00', '#5f6368'];

/** CKA in [0, 1] as a CSS colour; null (undefined) as magenta. */
export function viridis(v) {
  if (v === null || !Number.isFinite(v)) return UNDEFINED;
  const x = Math.min(1, Math.max(0, v)) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const t = x - i;
  const [r, g, b] = VIRIDIS[i].map((c, k) => Math.round(c + (VIRIDIS[i + 1][k] - c) * t));
  return `rgb(${r}, ${g}, ${b})`;
}

function formatCka(v) {
  return v === null || !Number.isFinite(v) ? 'undefined' : v.toFixed(3);
}

/** The layer view's heat map: rows and columns are the logged steps, top left the first. */
export class SimilarityPanel {
  constructor() {
    this.canvas = el('canvas', {id: 'actlog-similarity-heatmap'}, {'aria-label': 'linear CKA between steps'});
    // As wide as the column; each cell square, drawn with hard edges.
    this.canvas.style.cssText = 'display: block; width: 100%; height: auto; image-rendering: pixelated; cursor: crosshair;';
    this.axis = el('div', {className: 'similarity-axis'});
    this.axis.style.cssText = 'font-size: 11px; color: var(--muted); margin-top: 4px;';
    this.note = el('p', {className: 'similarity-note', hidden: true});
    this.note.style.cssText = 'margin: 6px 0 0; font-size: 12px; color: var(--faint); max-width: 520px;';
    this.hover = el('div', {id: 'actlog-similarity-hover', className: 'hover', hidden: true});
    this.title = el('h4', {textContent: 'Similarity over steps'});
    const caption = el('div', {textContent: 'linear CKA of the layer between every two steps, on the probes'});
    caption.style.cssText = 'font-size: 11px; color: var(--muted);';
    const legend = el('div', {className: 'similarity-legend'}, {}, [
      el('span', {textContent: '0'}), legendBar(), el('span', {textContent: '1'}),
    ]);
    legend.style.cssText = 'display: flex; align-items: center; gap: 4px; font-size: 11px; color: var(--muted); margin: 4px 0 6px;';
    this.root = el('section', {id: 'actlog-similarity', className: 'similarity-panel'}, {}, [
      this.title, caption, legend, this.canvas, this.axis, this.note, this.hover,
    ]);
    this.root.style.cssText = 'margin-top: 14px; padding-top: 10px; border-top: 1px solid var(--border);';
    this.body = null;
    this.canvas.addEventListener('mousemove', (event) => this.showHover(event));
    this.canvas.addEventListener('mouseleave', () => {
      this.hover.hidden = true;
    });
  }

  /** Nothing to show, with why. */
  absent(text) {
    this.body = null;
    this.canvas.hidden = true;
    this.axis.textContent = '';
    this.note.textContent = text;
    this.note.hidden = false;
    delete this.canvas.dataset.layer;
  }

  /** Draw `body` (from /similarity). */
  show(body, word) {
    const n = body.steps.length;
    if (!n) {
      this.absent(body.note || 'No Gram matrices for this layer yet.');
      return;
    }
    this.body = body;
    this.word = word;
    const cell = Math.max(1, Math.ceil(160 / n)); // then scaled to the column's width
    const side = cell * n;
    this.cell = cell;
    this.canvas.hidden = false;
    this.canvas.width = side;
    this.canvas.height = side;
    const context = this.canvas.getContext('2d');
    body.matrix.forEach((row, i) => row.forEach((v, j) => {
      context.fillStyle = viridis(v);
      context.fillRect(j * cell, i * cell, cell, cell);
    }));
    Object.assign(this.canvas.dataset, {layer: body.layer, steps: String(n), cell: String(cell)});
    this.axis.textContent = `rows, columns: ${word}s ${body.steps[0]}\u2013${body.steps[n - 1]}, the first top left`;
    this.note.textContent = body.note || '';
    this.note.hidden = !body.note;
  }

  showHover(event) {
    const body = this.body;
    if (!body) return;
    const rect = this.canvas.getBoundingClientRect();
    const n = body.steps.length;
    const j = Math.floor((event.clientX - rect.left) / rect.width * n);
    const i = Math.floor((event.clientY - rect.top) / rect.height * n);
    if (i < 0 || j < 0 || i >= n || j >= n) {
      this.hover.hidden = true;
      return;
    }
    this.hover.textContent = `${this.word} ${body.steps[i]} \u00d7 ${this.word} ${body.steps[j]}: CKA ${formatCka(body.matrix[i][j])}`;
    Object.assign(this.hover.dataset, {row: String(body.steps[i]), column: String(body.steps[j])});
    this.hover.style.left = `${event.clientX + 14}px`;
    this.hover.style.top = `${event.clientY + 14}px`;
    this.hover.hidden = false;
  }
}

function legendBar() {
  const bar = el('span');
  const stops = VIRIDIS.map((_, i) => viridis(i / (VIRIDIS.length - 1))).join(', ');
  bar.style.cssText = `display: inline-block; flex: 1; height: 10px; background: linear-gradient(to right, ${stops});`;
  return bar;
}

/** The overview's card: each layer's CKA between every step and its last step. */
export class SettlingChart {
  constructor() {
    this.chart = el('div', {className: 'similarity-chart'});
    this.legend = el('div', {className: 'similarity-legend'});
    this.legend.style.cssText = 'display: flex; flex-wrap: wrap; gap: 2px 12px; font-size: 11px; color: var(--muted);';
    const title = el('h3', {textContent: 'Similarity to the last step'});
    title.style.cssText = 'margin: 0; font-size: 14px; font-weight: 500;';
    const caption = el('div', {textContent: 'each layer\'s linear CKA on the probes; at 1 it has settled'});
    caption.style.cssText = 'font-size: 11px; color: var(--muted); margin-bottom: 6px;';
    this.readout = el('div', {id: 'actlog-settling-readout'});
    this.readout.style.cssText = 'min-height: 15px; font-size: 11px; font-variant-numeric: tabular-nums;';
    this.root = el('section', {id: 'actlog-settling', className: 'card', hidden: true}, {}, [
      title, caption, this.readout, this.chart, this.legend,
    ]);
    this.root.style.cssText = 'padding: 10px 12px 12px;';
  }

  /** Draw `body` (from /similarity_overview); hidden when no layer has Gram matrices. */
  show(body, word) {
    const layers = body.layers.filter((layer) => layer.steps.length);
    this.root.hidden = !layers.length;
    const drawn = `${body.run} ${body.version}`;
    if (this.drawn === drawn) return; // the poll found nothing new
    this.drawn = drawn;
    this.chart.textContent = '';
    this.legend.textContent = '';
    if (!layers.length) return;
    this.chart.appendChild(settlingChart(layers, word, Math.max(this.chart.clientWidth, 300), this.readout));
    layers.forEach((layer, k) => {
      const swatch = el('span');
      swatch.style.cssText = `display: inline-block; width: 12px; height: 3px; margin-right: 4px; vertical-align: middle; background: ${LINE_COLORS[k % LINE_COLORS.length]};`;
      this.legend.appendChild(el('span', {title: layer.name}, {}, [swatch, el('span', {textContent: layer.name})]));
    });
  }
}

function settlingChart(layers, word, width, readout) {
  const height = 220;
  const m = {left: 36, right: 8, top: 8, bottom: 30};
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, class: 'chart', id: 'actlog-settling-chart'});
  root.style.cssText = 'display: block; width: 100%; height: auto;';
  const steps = layers.flatMap((layer) => layer.steps);
  const x0 = Math.min(...steps);
  const x1 = Math.max(...steps) > x0 ? Math.max(...steps) : x0 + 1;
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const values = layers.flatMap((layer) => layer.values).filter((v) => v !== null);
  const lo = Math.min(0, ...values);
  const sx = (s) => m.left + (s - x0) / (x1 - x0) * plotW;
  const sy = (v) => m.top + plotH - (v - lo) / (1 - lo) * plotH;
  for (const t of niceTicks(lo, 1, 4)) {
    root.appendChild(svg('line', {x1: m.left, x2: m.left + plotW, y1: sy(t), y2: sy(t), class: 'grid-line'}));
    root.appendChild(svg('text', {x: m.left - 6, y: sy(t) + 3, 'text-anchor': 'end', class: 'axis'}, formatTick(t)));
  }
  for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(plotW / 70)))) {
    if (!Number.isInteger(t)) continue;
    root.appendChild(svg('text', {x: sx(t), y: height - 14, 'text-anchor': 'middle', class: 'axis'}, t));
  }
  root.appendChild(svg('text', {x: m.left + plotW, y: height - 2, 'text-anchor': 'end', class: 'axis-title'}, word));
  root.appendChild(svg('line', {x1: m.left, x2: m.left + plotW, y1: m.top + plotH, y2: m.top + plotH, class: 'axis-line'}));
  layers.forEach((layer, k) => {
    const color = LINE_COLORS[k % LINE_COLORS.length];
    let d = '';
    let pen = false;
    layer.steps.forEach((s, i) => {
      const v = layer.values[i];
      if (v === null) {
        pen = false;
        return;
      }
      d += `${pen ? 'L' : 'M'}${sx(s).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = true;
    });
    root.appendChild(svg('path', {d, fill: 'none', stroke: color, 'stroke-width': 1.75, 'data-layer': layer.name}));
  });
  const hit = svg('rect', {x: m.left, y: m.top, width: plotW, height: plotH, class: 'hit'});
  root.append(hit);
  hit.addEventListener('mousemove', (event) => {
    const box = root.getBoundingClientRect();
    const x = (event.clientX - box.left) * width / box.width;
    const step = [...new Set(steps)].reduce((a, b) => (Math.abs(sx(b) - x) < Math.abs(sx(a) - x) ? b : a));
    const parts = layers.map((layer) => {
      const i = layer.steps.indexOf(step);
      return i < 0 ? null : `${layer.name} ${formatCka(layer.values[i])}`;
    }).filter(Boolean);
    readout.textContent = `${word} ${step}: ${parts.join(', ')}`;
  });
  hit.addEventListener('mouseleave', () => {
    readout.textContent = '';
  });
  return root;
}
