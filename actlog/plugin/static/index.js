// actlog's Activations dashboard: a plain ES module that TensorBoard loads in an
// iframe (no build step, nothing fetched from outside this TensorBoard).
//
// Safety rule for this file: every string that comes from a log (run and layer
// names are chosen by users) enters the page through `textContent`, `value` or
// `title`, never through `innerHTML` or any other HTML parser.
//
// Speed: the grids of the chosen layer and probe are fetched once, decoded and
// kept as object URLs, so moving the slider only swaps an <img> source.

const FETCH_CONCURRENCY = 4;
const GRID_DISPLAY_WIDTH = 380; // CSS pixels a grid aims for (integer upscaling)
const FILM_TILE_HEIGHT = 56;
const STAT_COLORS = {
  channel_mean: '#1a73e8',
  channel_max: '#e8710a',
  channel_drift: '#188038',
};

const state = {
  runs: [],
  run: null, // entry of state.runs
  layer: null, // entry of state.run.layers
  probe: 0,
  steps: [],
  index: 0, // position of the current step in `steps`
  compareIndex: 0,
  channel: null, // channel index followed in the channel view
  stats: null,
  cache: new Map(), // step -> Promise<{url, image}>
  loaded: 0, // grids of the current series decoded so far
  generation: 0, // bumped whenever run/layer/probe change; stale work checks it
};

const timings = []; // slider/key -> pixels on screen, in ms (read by benchmarks)
window.actlogDashboard = {timings, state};

const $ = {};

/** Create an element; `props` are DOM properties, `attrs` plain attributes. */
function el(tag, props = {}, attrs = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.appendChild(child);
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  return node;
}

function labelled(text, control) {
  return el('label', {}, {}, [el('span', {textContent: text}), control]);
}

async function getJson(route, params) {
  const response = await fetch(`${route}?${new URLSearchParams(params)}`);
  const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(message) {
  $.error.textContent = message || '';
  $.error.hidden = !message;
}

export async function render() {
  document.head.appendChild(el('link', {rel: 'stylesheet', href: './style.css'}));
  build();
  try {
    const body = await getJson('runs', {});
    state.runs = body.runs;
  } catch (err) {
    showError(`Could not list actlog runs: ${err.message}`);
    return;
  }
  if (!state.runs.length) {
    showError('No actlog data in this log directory yet.');
    return;
  }
  fillOptions($.run, state.runs.map((r) => r.run));
  await selectRun(0);
}

function build() {
  $.run = el('select', {id: 'actlog-run'}, {'data-testid': 'run-select'});
  $.layer = el('select', {id: 'actlog-layer'}, {'data-testid': 'layer-select'});
  $.probe = el('select', {id: 'actlog-probe'}, {'data-testid': 'probe-select'});
  $.slider = el('input', {id: 'actlog-step-slider', type: 'range', min: 0, max: 0, value: 0},
      {'data-testid': 'step-slider', 'aria-label': 'step'});
  $.prev = el('button', {id: 'actlog-prev', textContent: '\u25c0', title: 'previous step (\u2190)'});
  $.next = el('button', {id: 'actlog-next', textContent: '\u25b6', title: 'next step (\u2192)'});
  $.stepLabel = el('span', {id: 'actlog-step-label'}, {'data-testid': 'step-label'});
  $.error = el('div', {id: 'actlog-error', className: 'error', hidden: true},
      {'data-testid': 'error', role: 'alert'});
  $.warning = el('div', {id: 'actlog-warning', className: 'warning', hidden: true},
      {'data-testid': 'warning'});
  $.probeImage = el('img', {id: 'actlog-probe-image', alt: 'probe image'},
      {'data-testid': 'probe-image'});
  $.compare = el('select', {id: 'actlog-compare-step'}, {'data-testid': 'compare-step-select'});
  $.gridA = el('img', {id: 'actlog-grid-a', alt: 'grid at the compared step'},
      {'data-testid': 'grid-image-a'});
  $.gridB = el('img', {id: 'actlog-grid-b', alt: 'grid at the current step'},
      {'data-testid': 'grid-image-b'});
  $.markA = el('div', {className: 'tile-mark', hidden: true});
  $.markB = el('div', {className: 'tile-mark', hidden: true});
  $.captionB = el('span', {id: 'actlog-current-caption'}, {'data-testid': 'current-caption'});
  $.hover = el('div', {id: 'actlog-hover', className: 'hover', hidden: true},
      {'data-testid': 'hover-info'});
  $.channelTitle = el('h3', {id: 'actlog-channel-title'}, {'data-testid': 'channel-title'});
  $.channelClose = el('button', {id: 'actlog-channel-close', textContent: 'close'});
  $.filmstrip = el('div', {id: 'actlog-filmstrip', className: 'filmstrip'},
      {'data-testid': 'filmstrip'});
  $.plot = el('div', {id: 'actlog-stats-plot', className: 'plot'}, {'data-testid': 'stats-plot'});
  $.channelView = el('section', {id: 'actlog-channel-view', hidden: true},
      {'data-testid': 'channel-view'}, [
        el('div', {className: 'channel-head'}, {}, [$.channelTitle, $.channelClose]),
        $.filmstrip, $.plot]);

  const panel = (id, caption, image, mark) => el('figure', {id, className: 'panel'}, {}, [
    el('figcaption', {}, {}, caption),
    el('div', {className: 'gridwrap'}, {}, [image, mark]),
  ]);
  const root = el('div', {id: 'actlog-root'}, {'data-testid': 'actlog-root'}, [
    el('div', {className: 'controls'}, {}, [
      labelled('Run', $.run), labelled('Layer', $.layer), labelled('Probe', $.probe),
    ]),
    el('div', {className: 'timeline'}, {}, [$.prev, $.slider, $.next, $.stepLabel]),
    $.error,
    $.warning,
    el('div', {className: 'views'}, {}, [
      el('figure', {className: 'probe'}, {}, [
        el('figcaption', {textContent: 'Probe'}), $.probeImage]),
      panel('actlog-panel-a', [labelled('Step', $.compare)], $.gridA, $.markA),
      panel('actlog-panel-b', [$.captionB], $.gridB, $.markB),
    ]),
    $.channelView,
    $.hover,
  ]);
  document.body.appendChild(root);

  $.run.addEventListener('change', () => selectRun($.run.selectedIndex));
  $.layer.addEventListener('change', () => selectLayer($.layer.selectedIndex));
  $.probe.addEventListener('change', () => selectProbe($.probe.selectedIndex));
  $.slider.addEventListener('input', () => setIndex(Number($.slider.value)));
  $.prev.addEventListener('click', () => setIndex(state.index - 1));
  $.next.addEventListener('click', () => setIndex(state.index + 1));
  $.compare.addEventListener('change', () => {
    state.compareIndex = $.compare.selectedIndex;
    showPanel($.gridA, state.compareIndex, null);
  });
  $.channelClose.addEventListener('click', closeChannel);
  for (const image of [$.gridA, $.gridB]) {
    image.addEventListener('mousemove', (event) => onHover(image, event));
    image.addEventListener('mouseleave', () => { $.hover.hidden = true; });
    image.addEventListener('click', (event) => onTileClick(image, event));
  }
  document.addEventListener('keydown', (event) => {
    const tag = event.target && event.target.tagName;
    // The slider moves itself on arrow keys and selects use them for options.
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
    if (event.key === 'ArrowLeft') setIndex(state.index - 1);
    else if (event.key === 'ArrowRight') setIndex(state.index + 1);
    else return;
    event.preventDefault();
  });
}

function fillOptions(select, labels) {
  select.textContent = '';
  labels.forEach((label, i) => {
    select.appendChild(el('option', {value: String(i), textContent: String(label)}));
  });
}

async function selectRun(i) {
  state.run = state.runs[i];
  $.run.selectedIndex = i;
  fillOptions($.layer, state.run.layers.map((l) => l.name));
  const probes = Array.from({length: state.run.probes}, (_, p) => `probe ${p}`);
  fillOptions($.probe, probes);
  state.probe = 0;
  await selectLayer(0);
}

async function selectLayer(i) {
  state.layer = state.run.layers[i];
  $.layer.selectedIndex = i;
  await loadSeries();
}

async function selectProbe(i) {
  state.probe = i;
  $.probe.selectedIndex = i;
  await loadSeries();
}

function gridParams(step) {
  return {run: state.run.run, layer: state.layer.name, probe: state.probe, step};
}

/** Fetch the steps of the chosen grid, then every grid image in the background. */
async function loadSeries() {
  const generation = ++state.generation;
  for (const entry of state.cache.values()) entry.then((e) => URL.revokeObjectURL(e.url), () => {});
  state.cache = new Map();
  state.loaded = 0;
  showError('');
  loadProbeImage();
  let body;
  try {
    body = await getJson('steps', {run: state.run.run, layer: state.layer.name, probe: state.probe});
  } catch (err) {
    if (generation === state.generation) showError(err.message);
    return;
  }
  if (generation !== state.generation) return;
  // Keep the steps being looked at when only the layer or probe changed.
  const before = state.steps;
  const wasCurrent = before.length ? before[state.index] : undefined;
  const wasCompared = before.length ? before[state.compareIndex] : undefined;
  state.steps = body.steps;
  const keptOf = body.steps.length + body.missing_steps;
  $.warning.textContent = body.missing_steps ?
    `TensorBoard kept ${body.steps.length} of ${keptOf} logged steps of this grid. ` +
    'Start it with --samples_per_plugin=images=0,actlog=0 to see every step.' : '';
  $.warning.hidden = !body.missing_steps;
  fillOptions($.compare, state.steps.map((s) => `${stepWord()} ${s}`));
  $.slider.max = Math.max(state.steps.length - 1, 0);
  if (!state.steps.length) {
    showError('No grid logged for this layer and probe.');
    return;
  }
  const find = (step, fallback) => {
    const i = state.steps.indexOf(step);
    return i >= 0 ? i : fallback;
  };
  state.compareIndex = find(wasCompared, 0);
  $.compare.selectedIndex = state.compareIndex;
  const keep = state.channel !== null && state.layer.channels.includes(state.channel);
  setIndex(find(wasCurrent, state.steps.length - 1), true);
  showPanel($.gridA, state.compareIndex, null);
  if (keep) openChannel(state.channel); else closeChannel();
  preloadAll(generation);
}

function stepWord() {
  return state.run && state.run.step_axis === 'epoch' ? 'epoch' : 'step';
}

async function loadProbeImage() {
  const available = state.run.probe_images[state.probe];
  $.probeImage.hidden = !available;
  if (!available) return;
  $.probeImage.src = `probe?${new URLSearchParams({run: state.run.run, probe: state.probe})}`;
}

function grid(step) {
  let entry = state.cache.get(step);
  if (!entry) {
    const generation = state.generation;
    entry = (async () => {
      const response = await fetch(`grid?${new URLSearchParams(gridParams(step))}`);
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw new Error(body.error || `HTTP ${response.status}`);
      }
      const url = URL.createObjectURL(await response.blob());
      const image = new Image();
      image.src = url;
      await image.decode();
      if (generation === state.generation) onGridLoaded(step, image);
      return {url, image};
    })();
    state.cache.set(step, entry);
  }
  return entry;
}

async function preloadAll(generation) {
  const order = [state.index, state.compareIndex]
      .concat(state.steps.map((_, i) => i).reverse())
      .map((i) => state.steps[i]);
  const queue = [...new Set(order)];
  const worker = async () => {
    while (queue.length && generation === state.generation) {
      await grid(queue.shift()).catch(() => {});
    }
  };
  await Promise.all(Array.from({length: FETCH_CONCURRENCY}, worker));
}

/** Make `steps[index]` current: slider, label, right panel, filmstrip, plot. */
function setIndex(index, force = false) {
  if (!state.steps.length) return;
  index = Math.max(0, Math.min(state.steps.length - 1, index));
  if (index === state.index && !force) return;
  state.index = index;
  const step = state.steps[index];
  $.slider.value = String(index);
  $.stepLabel.textContent = `${stepWord()} ${step}  (${index + 1} of ${state.steps.length})`;
  $.captionB.textContent = `${stepWord()} ${step} (current)`;
  showPanel($.gridB, index, performance.now());
  markCurrentFrame();
  if (state.stats) drawPlot();
}

async function showPanel(image, index, started) {
  const step = state.steps[index];
  const generation = state.generation;
  let entry;
  try {
    entry = await grid(step);
  } catch (err) {
    if (generation === state.generation) showError(err.message);
    return;
  }
  const current = image === $.gridB ? state.index : state.compareIndex;
  if (generation !== state.generation || current !== index) return;
  const {url, image: decoded} = entry;
  const scale = Math.max(1, Math.floor(GRID_DISPLAY_WIDTH / decoded.naturalWidth));
  image.style.width = `${decoded.naturalWidth * scale}px`;
  image.src = url;
  await image.decode().catch(() => {});
  if (generation !== state.generation) return;
  image.dataset.step = String(step);
  image.dataset.layer = state.layer.name;
  image.dataset.probe = String(state.probe);
  if (started !== null) timings.push(performance.now() - started);
  placeMark(image === $.gridA ? $.markA : $.markB, image);
}

/** The tile under a mouse event: {tile, channel} or null over padding. */
function tileAt(image, event) {
  const g = state.layer.grid;
  if (!image.naturalWidth || !g || !g.cols) return null;
  const rect = image.getBoundingClientRect();
  const x = (event.clientX - rect.left) * image.naturalWidth / rect.width;
  const y = (event.clientY - rect.top) * image.naturalHeight / rect.height;
  const col = Math.floor((x - g.pad) / (g.tile_width + g.pad));
  const row = Math.floor((y - g.pad) / (g.tile_height + g.pad));
  if (col < 0 || row < 0 || col >= g.cols || row >= g.rows) return null;
  const inX = x - g.pad - col * (g.tile_width + g.pad);
  const inY = y - g.pad - row * (g.tile_height + g.pad);
  if (inX >= g.tile_width || inY >= g.tile_height) return null;
  const tile = row * g.cols + col;
  if (tile >= state.layer.channels.length) return null;
  return {tile, channel: state.layer.channels[tile]};
}

function onHover(image, event) {
  const hit = tileAt(image, event);
  if (!hit) {
    $.hover.hidden = true;
    return;
  }
  const step = image.dataset.step;
  $.hover.textContent = `${state.layer.name} \u00b7 channel ${hit.channel} \u00b7 ${stepWord()} ${step}`;
  $.hover.style.left = `${event.clientX + 14}px`;
  $.hover.style.top = `${event.clientY + 14}px`;
  $.hover.hidden = false;
}

function onTileClick(image, event) {
  const hit = tileAt(image, event);
  if (hit) openChannel(hit.channel);
}

/** Outline the followed channel's tile on a grid panel. */
function placeMark(mark, image) {
  const g = state.layer.grid;
  const tile = state.channel === null ? -1 : state.layer.channels.indexOf(state.channel);
  if (tile < 0 || !image.naturalWidth) {
    mark.hidden = true;
    return;
  }
  const scale = image.clientWidth / image.naturalWidth;
  const col = tile % g.cols;
  const row = Math.floor(tile / g.cols);
  Object.assign(mark.style, {
    left: `${(g.pad + col * (g.tile_width + g.pad)) * scale}px`,
    top: `${(g.pad + row * (g.tile_height + g.pad)) * scale}px`,
    width: `${g.tile_width * scale}px`,
    height: `${g.tile_height * scale}px`,
  });
  mark.hidden = false;
}

async function openChannel(channel) {
  state.channel = channel;
  const generation = state.generation;
  $.channelView.hidden = false;
  $.channelView.dataset.channel = String(channel);
  $.channelTitle.textContent = `${state.layer.name} \u00b7 channel ${channel}`;
  placeMark($.markA, $.gridA);
  placeMark($.markB, $.gridB);
  buildFilmstrip();
  state.stats = null;
  $.plot.textContent = 'loading statistics\u2026';
  try {
    const body = await getJson('channel', {run: state.run.run, layer: state.layer.name, channel});
    if (generation !== state.generation || state.channel !== channel) return;
    state.stats = body.stats;
    drawPlot();
  } catch (err) {
    $.plot.textContent = `No statistics: ${err.message}`;
  }
}

function closeChannel() {
  state.channel = null;
  state.stats = null;
  $.channelView.hidden = true;
  $.markA.hidden = true;
  $.markB.hidden = true;
}

function buildFilmstrip() {
  $.filmstrip.textContent = '';
  const tile = state.layer.channels.indexOf(state.channel);
  if (tile < 0) {
    $.filmstrip.textContent = 'This channel is not among the tiles shown in the grid.';
    return;
  }
  const g = state.layer.grid;
  const scale = Math.max(1, Math.round(FILM_TILE_HEIGHT / g.tile_height));
  state.steps.forEach((step, index) => {
    const canvas = el('canvas', {width: g.tile_width, height: g.tile_height});
    canvas.style.width = `${g.tile_width * scale}px`;
    canvas.style.height = `${g.tile_height * scale}px`;
    const frame = el('figure', {className: 'frame'}, {'data-step': String(step)}, [
      canvas, el('figcaption', {textContent: String(step)}),
    ]);
    frame.title = `${stepWord()} ${step}`;
    frame.addEventListener('click', () => setIndex(index));
    $.filmstrip.appendChild(frame);
    const entry = state.cache.get(step);
    if (entry) entry.then((e) => drawFrame(step, e.image), () => {});
  });
  markCurrentFrame();
}

/** Crop the followed channel's tile out of a decoded grid into its frame. */
function drawFrame(step, image) {
  if (state.channel === null) return;
  const tile = state.layer.channels.indexOf(state.channel);
  const frame = $.filmstrip.querySelector(`figure[data-step="${CSS.escape(String(step))}"]`);
  if (tile < 0 || !frame) return;
  const g = state.layer.grid;
  const x = g.pad + (tile % g.cols) * (g.tile_width + g.pad);
  const y = g.pad + Math.floor(tile / g.cols) * (g.tile_height + g.pad);
  const canvas = frame.querySelector('canvas');
  const context = canvas.getContext('2d');
  context.imageSmoothingEnabled = false;
  context.drawImage(image, x, y, g.tile_width, g.tile_height, 0, 0, g.tile_width, g.tile_height);
  frame.dataset.drawn = 'true';
}

function onGridLoaded(step, image) {
  state.loaded += 1;
  if (!$.channelView.hidden) drawFrame(step, image);
}

function markCurrentFrame() {
  const step = String(state.steps[state.index]);
  for (const frame of $.filmstrip.querySelectorAll('figure.frame')) {
    const current = frame.dataset.step === step;
    frame.classList.toggle('current', current);
    if (current && !$.channelView.hidden) frame.scrollIntoView({block: 'nearest', inline: 'nearest'});
  }
}

/** One small line chart per statistic, with the current step marked. */
function drawPlot() {
  $.plot.textContent = '';
  const width = 300;
  const height = 90;
  const margin = {left: 44, right: 8, top: 16, bottom: 16};
  const allSteps = state.steps.length ? state.steps : [0];
  const x0 = Math.min(...allSteps);
  const x1 = Math.max(...allSteps, x0 + 1);
  const sx = (s) => margin.left + (s - x0) / (x1 - x0) * (width - margin.left - margin.right);
  const current = state.steps[state.index];
  for (const [name, series] of Object.entries(state.stats)) {
    const svg = svgEl('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'chart'});
    svg.dataset.stat = name;
    const title = svgEl('text', {x: margin.left, y: 11, class: 'chart-title'});
    title.textContent = name;
    svg.appendChild(title);
    const values = series.values.filter((v) => Number.isFinite(v));
    if (values.length) {
      let lo = Math.min(...values);
      let hi = Math.max(...values);
      if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
      const sy = (v) => height - margin.bottom - (v - lo) / (hi - lo) * (height - margin.top - margin.bottom);
      const points = series.steps.map((s, i) => [s, series.values[i]])
          .filter(([, v]) => Number.isFinite(v))
          .map(([s, v]) => `${sx(s).toFixed(1)},${sy(v).toFixed(1)}`).join(' ');
      svg.appendChild(svgEl('polyline', {points, fill: 'none', stroke: STAT_COLORS[name] || '#444', 'stroke-width': 1.5}));
      for (const [label, v] of [[hi, hi], [lo, lo]]) {
        const text = svgEl('text', {x: margin.left - 4, y: sy(v) + 3, 'text-anchor': 'end', class: 'axis'});
        text.textContent = formatNumber(label);
        svg.appendChild(text);
      }
      const at = series.steps.indexOf(current);
      if (at >= 0 && Number.isFinite(series.values[at])) {
        svg.appendChild(svgEl('circle', {cx: sx(current), cy: sy(series.values[at]), r: 3, fill: STAT_COLORS[name] || '#444'}));
        const value = svgEl('text', {x: width - margin.right, y: 11, 'text-anchor': 'end', class: 'axis'});
        value.textContent = `${stepWord()} ${current}: ${formatNumber(series.values[at])}`;
        svg.appendChild(value);
      }
    } else {
      const none = svgEl('text', {x: margin.left, y: height / 2, class: 'axis'});
      none.textContent = 'not logged';
      svg.appendChild(none);
    }
    if (current !== undefined) {
      svg.appendChild(svgEl('line', {x1: sx(current), x2: sx(current), y1: margin.top, y2: height - margin.bottom, class: 'cursor'}));
    }
    for (const [s, anchor] of [[x0, 'start'], [x1, 'end']]) {
      const text = svgEl('text', {x: sx(s), y: height - 3, 'text-anchor': anchor, class: 'axis'});
      text.textContent = String(s);
      svg.appendChild(text);
    }
    $.plot.appendChild(svg);
  }
}

function formatNumber(v) {
  return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(2) : v.toFixed(3);
}
