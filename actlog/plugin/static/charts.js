// Small SVG charts: a line chart with axes and a hover readout (the channel
// view), and a sparkline (the overview). Values may be null (not finite in the
// log): the line breaks there.

import {svg} from './dom.js';

/** Round tick values covering [lo, hi], about `count` of them. */
export function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

export function formatNumber(v) {
  if (v === null || v === undefined) return 'n/a';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10000 || a < 0.001) return v.toExponential(2);
  if (a >= 100) return v.toFixed(0);
  return Number(v.toPrecision(3)).toString();
}

function extent(values) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (!finite.length) return null;
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (hi - lo < 1e-12) {
    const pad = Math.abs(hi) * 0.1 || 0.5;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

/** SVG path through the points, broken where a value is null. */
function linePath(steps, values, sx, sy) {
  let d = '';
  let pen = false;
  steps.forEach((s, i) => {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      return;
    }
    d += `${pen ? 'L' : 'M'}${sx(s).toFixed(1)},${sy(v).toFixed(1)}`;
    pen = true;
  });
  return d;
}

/** A short axis label: 0.0006 -> "6e-4", 0.25 -> "0.25", 1200 -> "1200". */
export function formatTick(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10000 || a < 0.001) return v.toExponential(2).replace(/\.?0+e/, 'e');
  return Number(v.toPrecision(4)).toString();
}

/**
 * A line chart of one statistic over steps.
 * `series` = {steps, values}; `domain` = [first step, last step] shared by charts;
 * `current` = the step on screen (marked); `onPick(step)` on click.
 */
export function lineChart({title, series, domain, current, color, stepWord, width, height = 150, onPick}) {
  const m = {left: 52, right: 12, top: 24, bottom: 30};
  const root = svg('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart'});
  root.appendChild(svg('text', {x: m.left, y: 15, class: 'chart-title'}, title));
  const [x0, x1] = domain[1] > domain[0] ? domain : [domain[0], domain[0] + 1];
  const plotW = width - m.left - m.right;
  const plotH = height - m.top - m.bottom;
  const sx = (s) => m.left + (s - x0) / (x1 - x0) * plotW;
  for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(plotW / 70)))) {
    if (!Number.isInteger(t)) continue; // steps are whole numbers
    root.appendChild(svg('line', {x1: sx(t), x2: sx(t), y1: m.top + plotH, y2: m.top + plotH + 4, class: 'tick'}));
    root.appendChild(svg('text', {x: sx(t), y: height - 14, 'text-anchor': 'middle', class: 'axis'}, t));
  }
  root.appendChild(svg('text', {x: m.left + plotW, y: height - 2, 'text-anchor': 'end', class: 'axis-title'}, stepWord));
  root.appendChild(svg('line', {x1: m.left, x2: m.left + plotW, y1: m.top + plotH, y2: m.top + plotH, class: 'axis-line'}));
  const range = extent(series.values);
  if (!range) {
    root.appendChild(svg('text', {x: m.left + plotW / 2, y: m.top + plotH / 2, 'text-anchor': 'middle', class: 'axis'}, 'not logged'));
    return root;
  }
  // A little room above and below, so the line never runs along the frame.
  const pad = (range[1] - range[0]) * 0.06;
  const [lo, hi] = [range[0] - pad, range[1] + pad];
  const sy = (v) => m.top + plotH - (v - lo) / (hi - lo) * plotH;
  for (const t of niceTicks(lo, hi, 4)) {
    root.appendChild(svg('line', {x1: m.left, x2: m.left + plotW, y1: sy(t), y2: sy(t), class: 'grid-line'}));
    root.appendChild(svg('text', {x: m.left - 6, y: sy(t) + 3, 'text-anchor': 'end', class: 'axis'}, formatTick(t)));
  }
  root.appendChild(svg('path', {d: linePath(series.steps, series.values, sx, sy), fill: 'none', stroke: color, 'stroke-width': 1.75}));
  if (current !== undefined && current !== null) {
    root.appendChild(svg('line', {x1: sx(current), x2: sx(current), y1: m.top, y2: m.top + plotH, class: 'cursor'}));
    const at = series.steps.indexOf(current);
    if (at >= 0 && series.values[at] !== null) {
      root.appendChild(svg('circle', {cx: sx(current), cy: sy(series.values[at]), r: 3.5, fill: color}));
    }
  }
  // Hover: the nearest logged step, its value written at the top right.
  const rule = svg('line', {y1: m.top, y2: m.top + plotH, class: 'hover-rule', visibility: 'hidden'});
  const dot = svg('circle', {r: 4, fill: '#fff', stroke: color, 'stroke-width': 2, visibility: 'hidden'});
  const readout = svg('text', {x: width - m.right, y: 15, 'text-anchor': 'end', class: 'readout'});
  const hit = svg('rect', {x: m.left, y: m.top, width: plotW, height: plotH, class: 'hit'});
  root.append(rule, dot, readout, hit);
  const nearestIndex = (event) => {
    const box = root.getBoundingClientRect();
    const x = (event.clientX - box.left) * width / box.width;
    let best = -1;
    series.steps.forEach((s, i) => {
      if (series.values[i] === null) return;
      if (best < 0 || Math.abs(sx(s) - x) < Math.abs(sx(series.steps[best]) - x)) best = i;
    });
    return best;
  };
  hit.addEventListener('mousemove', (event) => {
    const i = nearestIndex(event);
    if (i < 0) return;
    const s = series.steps[i];
    const v = series.values[i];
    for (const node of [rule, dot]) node.setAttribute('visibility', 'visible');
    rule.setAttribute('x1', sx(s));
    rule.setAttribute('x2', sx(s));
    dot.setAttribute('cx', sx(s));
    dot.setAttribute('cy', sy(v));
    readout.textContent = `${stepWord} ${s}: ${formatNumber(v)}`;
  });
  hit.addEventListener('mouseleave', () => {
    for (const node of [rule, dot]) node.setAttribute('visibility', 'hidden');
    readout.textContent = '';
  });
  if (onPick) {
    hit.addEventListener('click', (event) => {
      const i = nearestIndex(event);
      if (i >= 0) onPick(series.steps[i]);
    });
  }
  return root;
}

/** The top of a scale that starts at 0 and holds `hi`: a round number (0.0123 -> 0.015). */
export function niceTop(hi) {
  if (!(hi > 0) || !Number.isFinite(hi)) return 1;
  const ticks = niceTicks(0, hi, 4);
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : hi;
  const top = ticks[ticks.length - 1];
  return top >= hi ? top : top + step;
}

/**
 * A sparkline over `domain` that stretches to the width it is given (CSS),
 * the `current` step marked with a vertical rule. `range` = [lo, hi] fixes the
 * vertical scale (several sparklines on one scale); else it is [min(0, lowest), highest].
 */
export function sparkline({series, domain, current, color, range = null, width = 200, height = 28}) {
  const root = svg('svg', {viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', class: 'sparkline'});
  const [x0, x1] = domain[1] > domain[0] ? domain : [domain[0], domain[0] + 1];
  const sx = (s) => 1 + (s - x0) / (x1 - x0) * (width - 2);
  const line = (attrs) => svg('line', {...attrs, 'vector-effect': 'non-scaling-stroke'});
  root.appendChild(line({x1: 0, x2: width, y1: height - 1, y2: height - 1, class: 'baseline'}));
  if (current !== undefined && current !== null) {
    root.appendChild(line({x1: sx(current), x2: sx(current), y1: 0, y2: height, class: 'now'}));
  }
  const found = extent(series.values);
  if (!found) return root;
  const [lo, hi] = range || [Math.min(found[0], 0), found[1]];
  const sy = (v) => height - 2 - (v - lo) / (hi - lo) * (height - 4);
  root.appendChild(svg('path', {
    d: linePath(series.steps, series.values, sx, sy), fill: 'none', stroke: color, 'stroke-width': 1.5,
    'vector-effect': 'non-scaling-stroke',
  }));
  return root;
}
