// actlog's Activations dashboard: a plain ES module that TensorBoard loads in an
// iframe (no build step, nothing fetched from outside this TensorBoard).
//
// Safety rule for this file: every string that comes from a log (run and layer
// names are chosen by users) enters the page through `textContent`, `value` or
// `title`, never through `innerHTML` or any other HTML parser.
//
// Speed: the grids of the chosen layer and probe are fetched once, decoded and
// kept as object URLs, so moving the slider only swaps an <img> source.
//
// Live: actlog logs while a model trains, and TensorBoard's reload button does
// not reach this iframe, so the page polls `/steps` itself (and `/runs`, less
// often) and fetches only the grids of steps it has not seen.

const FETCH_CONCURRENCY = 4;
const POLL_MS = 5000; // new steps of the grid on screen
const RUNS_EVERY = 3; // polls between two looks at the run list (15 s)
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
  wallTimes: [], // per step: when it was written; a change means new pixels
  series: 'none', // 'loading' | 'ready' | 'failed': state of loadSeries
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
  startPolling();
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

const poller = {timer: null, busy: false, ticks: 0};

/** Poll every POLL_MS while the page is visible; resume at once when it shows again. */
function startPolling() {
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !poller.busy) {
      clearTimeout(poller.timer);
      poll();
    }
  });
  poller.timer = setTimeout(poll, POLL_MS);
}

async function poll() {
  // A hidden page schedules nothing; `visibilitychange` starts polling again.
  if (document.hidden || poller.busy) return;
  poller.busy = true;
  try {
    const runs = !state.run || poller.ticks % RUNS_EVERY === RUNS_EVERY - 1;
    poller.ticks += 1;
    // A series just loaded from scratch has nothing newer to add.
    if (!(runs && await refreshRuns())) await refreshSteps();
  } catch (err) {
    // A missed poll (TensorBoard restarting, a run being rewritten) is retried
    // at the next one; what is on screen stays valid meanwhile.
  } finally {
    poller.busy = false;
    clearTimeout(poller.timer);
    if (!document.hidden) poller.timer = setTimeout(poll, POLL_MS);
  }
}

/**
 * Pick up new runs, layers and probes; keep the run, layer and probe shown.
 * Resolves to true when the grid series was loaded again from scratch.
 */
async function refreshRuns() {
  const body = await getJson('runs', {});
  if (!body.runs.length || JSON.stringify(body.runs) === JSON.stringify(state.runs)) return false;
  const before = state.run;
  const layerName = state.layer && state.layer.name;
  state.runs = body.runs;
  fillOptions($.run, state.runs.map((r) => r.run));
  const i = before ? state.runs.findIndex((r) => r.run === before.run) : -1;
  if (i < 0) {
    // First data in an empty log directory, or the run shown was removed.
    showError('');
    await selectRun(0);
    return true;
  }
  state.run = state.runs[i];
  $.run.selectedIndex = i;
  if (JSON.stringify(state.run) === JSON.stringify(before)) return false;
  // The run's manifest changed (another `fit` logged more layers or probes).
  fillOptions($.layer, state.run.layers.map((l) => l.name));
  fillOptions($.probe, Array.from({length: state.run.probes}, (_, p) => `probe ${p}`));
  const probe = state.probe < state.run.probes ? state.probe : 0;
  $.probe.selectedIndex = probe;
  const j = state.run.layers.findIndex((l) => l.name === layerName);
  if (j < 0) {
    state.probe = probe;
    await selectLayer(0);
    return true;
  }
  const layerBefore = state.layer;
  state.layer = state.run.layers[j];
  $.layer.selectedIndex = j;
  if (probe !== state.probe || JSON.stringify(state.layer) !== JSON.stringify(layerBefore)) {
    // Another probe, or another tile layout: the grids kept no longer apply.
    state.probe = probe;
    await loadSeries();
    return true;
  }
  loadProbeImage();
  return false;
}

/** Add the steps logged since the last look; fetch only their grids. */
async function refreshSteps() {
  if (!state.run || !state.layer || state.series === 'loading') return;
  if (state.series === 'failed') {
    await loadSeries();
    return;
  }
  const generation = state.generation;
  const body = await getJson('steps', {run: state.run.run, layer: state.layer.name, probe: state.probe});
  if (generation !== state.generation || state.series !== 'ready') return;
  showMissing(body);
  if (!state.steps.length) {
    if (body.steps.length) await loadSeries();
    return;
  }
  // No steps at all is a log being removed or rewritten: keep what is on screen.
  if (!body.steps.length) return;
  const written = new Map(state.steps.map((s, i) => [s, state.wallTimes[i]]));
  // A step written again (a run restarted in the same directory) has new pixels.
  const stale = new Set(body.steps.filter((s, i) => written.has(s) && written.get(s) !== body.wall_times[i]));
  const kept = new Set(body.steps);
  const added = body.steps.filter((s) => !written.has(s));
  if (!added.length && !stale.size && kept.size === state.steps.length) return;
  for (const [step, entry] of state.cache) {
    if (kept.has(step) && !stale.has(step)) continue;
    state.cache.delete(step);
    entry.then((e) => URL.revokeObjectURL(e.url), () => {});
  }

  const current = state.steps[state.index];
  const compared = state.steps[state.compareIndex];
  const following = state.index === state.steps.length - 1;
  const appended = body.steps.length >= state.steps.length &&
      state.steps.every((s, i) => s === body.steps[i]);
  state.steps = body.steps;
  state.wallTimes = body.wall_times;
  if (appended) {
    for (const step of added) {
      $.compare.appendChild(el('option', {value: String($.compare.options.length), textContent: `${stepWord()} ${step}`}));
    }
  } else {
    fillOptions($.compare, state.steps.map((s) => `${stepWord()} ${s}`));
  }
  const nearest = (step) => {
    // The step itself, else the last one before it, else the first.
    let i = state.steps.length - 1;
    while (i > 0 && state.steps[i] > step) i -= 1;
    return i;
  };
  state.compareIndex = nearest(compared);
  $.compare.selectedIndex = state.compareIndex;
  if (compared !== state.steps[state.compareIndex] || stale.has(compared)) {
    showPanel($.gridA, state.compareIndex, null);
  }
  const index = following ? state.steps.length - 1 : nearest(current);
  if (state.steps[index] !== current || stale.has(current)) {
    setIndex(index, true, null);
  } else {
    state.index = index;
    showTimeline();
  }
  if (!$.channelView.hidden && state.channel !== null) refreshChannel(generation, stale);
  preloadAll(generation);
}

function showMissing(body) {
  const keptOf = body.steps.length + body.missing_steps;
  $.warning.textContent = body.missing_steps ?
    `TensorBoard kept ${body.steps.length} of ${keptOf} logged steps of this grid. ` +
    'Start it with --samples_per_plugin=images=10000,actlog=0 to see every step.' : '';
  $.warning.hidden = !body.missing_steps;
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
  state.series = 'loading';
  showError('');
  loadProbeImage();
  let body;
  try {
    body = await getJson('steps', {run: state.run.run, layer: state.layer.name, probe: state.probe});
  } catch (err) {
    if (generation === state.generation) {
      showError(err.message);
      state.series = 'failed'; // the next poll tries again
    }
    return;
  }
  if (generation !== state.generation) return;
  state.series = 'ready';
  // Keep the steps being looked at when only the layer or probe changed.
  const before = state.steps;
  const wasCurrent = before.length ? before[state.index] : undefined;
  const wasCompared = before.length ? before[state.compareIndex] : undefined;
  state.steps = body.steps;
  state.wallTimes = body.wall_times;
  showMissing(body);
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
      // A step dropped or rewritten meanwhile (see refreshSteps) is not drawn.
      if (generation === state.generation && state.cache.get(step) === entry) onGridLoaded(step, image);
      return {url, image};
    })();
    state.cache.set(step, entry);
    // A failed fetch is forgotten, so the next look (a poll, the slider) tries again.
    entry.catch(() => {
      if (state.cache.get(step) === entry) state.cache.delete(step);
    });
  }
  return entry;
}

async function preloadAll(generation) {
  const order = [state.index, state.compareIndex]
      .concat(state.steps.map((_, i) => i).reverse())
      .map((i) => state.steps[i]);
  const queue = [...new Set(order)].filter((step) => !state.cache.has(step));
  const worker = async () => {
    while (queue.length && generation === state.generation) {
      await grid(queue.shift()).catch(() => {});
    }
  };
  await Promise.all(Array.from({length: FETCH_CONCURRENCY}, worker));
}

/**
 * Make `steps[index]` current: slider, label, right panel, filmstrip, plot.
 * `started` is when the person asked for it (a timing is recorded), or null.
 */
function setIndex(index, force = false, started = performance.now()) {
  if (!state.steps.length) return;
  index = Math.max(0, Math.min(state.steps.length - 1, index));
  if (index === state.index && !force) return;
  state.index = index;
  showTimeline();
  showPanel($.gridB, index, started);
}

/** Slider, step label, filmstrip mark and plot cursor for `state.index`. */
function showTimeline() {
  const step = state.steps[state.index];
  $.slider.max = Math.max(state.steps.length - 1, 0);
  $.slider.value = String(state.index);
  $.stepLabel.textContent = `${stepWord()} ${step}  (${state.index + 1} of ${state.steps.length})`;
  $.captionB.textContent = `${stepWord()} ${step} (current)`;
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
  syncFilmstrip(new Set());
}

/**
 * One frame per step, in order: frames already drawn are kept, frames of new
 * or `stale` (rewritten) steps are made, frames of dropped steps removed.
 */
function syncFilmstrip(stale) {
  const tile = state.layer.channels.indexOf(state.channel);
  if (tile < 0) {
    $.filmstrip.textContent = 'This channel is not among the tiles shown in the grid.';
    return;
  }
  const g = state.layer.grid;
  const scale = Math.max(1, Math.round(FILM_TILE_HEIGHT / g.tile_height));
  const frames = new Map();
  for (const frame of $.filmstrip.querySelectorAll('figure.frame')) frames.set(frame.dataset.step, frame);
  state.steps.forEach((step, index) => {
    let frame = frames.get(String(step));
    if (frame && !stale.has(step)) {
      frames.delete(String(step));
    } else {
      const canvas = el('canvas', {width: g.tile_width, height: g.tile_height});
      canvas.style.width = `${g.tile_width * scale}px`;
      canvas.style.height = `${g.tile_height * scale}px`;
      frame = el('figure', {className: 'frame'}, {'data-step': String(step)}, [
        canvas, el('figcaption', {textContent: String(step)}),
      ]);
      frame.title = `${stepWord()} ${step}`;
      // Looked up on click: new steps can shift where this one is.
      frame.addEventListener('click', () => setIndex(state.steps.indexOf(step)));
      const entry = state.cache.get(step);
      if (entry) entry.then((e) => drawFrame(frame, e.image), () => {});
    }
    // Frames before `index` are in place; what is left after them is removed below.
    if ($.filmstrip.children[index] !== frame) $.filmstrip.insertBefore(frame, $.filmstrip.children[index] || null);
  });
  for (const frame of frames.values()) frame.remove();
  markCurrentFrame();
}

/** New filmstrip frames and statistics for the channel followed, after new steps. */
async function refreshChannel(generation, stale) {
  const channel = state.channel;
  syncFilmstrip(stale);
  let body;
  try {
    body = await getJson('channel', {run: state.run.run, layer: state.layer.name, channel});
  } catch (err) {
    return; // the statistics shown stay; the next new step tries again
  }
  if (generation !== state.generation || state.channel !== channel) return;
  state.stats = body.stats;
  drawPlot();
}

/** Crop the followed channel's tile out of a decoded grid into its frame. */
function drawFrame(frame, image) {
  if (state.channel === null) return;
  const tile = state.layer.channels.indexOf(state.channel);
  if (tile < 0 || !frame || !frame.isConnected) return;
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
  if ($.channelView.hidden) return;
  drawFrame($.filmstrip.querySelector(`figure[data-step="${CSS.escape(String(step))}"]`), image);
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
