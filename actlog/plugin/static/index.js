// actlog's Activations dashboard: plain ES modules that TensorBoard loads in
// an iframe (no build step, nothing fetched from outside this TensorBoard).
// TensorBoard imports this module and calls `render()`.
//
//   api.js            the plugin's routes; images by opaque key; cancelling
//   state.js          what the page knows; bounded image cache and timings
//   live.js           polling for new steps; errors on the status line
//   view_controls.js  toolbar: pickers, step slider, status line
//   view_overview.js  every layer at one step, with sparklines
//   view_layer.js     one layer at two steps; tiles placed by the backend's boxes
//   view_channel.js   one channel through every step: filmstrip and charts
//   view_atlas.js     the channel's top-k atlas crops at the slider's step
//   view_compare.js   compare mode: two runs side by side on one layer, one slider
//   view_cam.js       the probe's class activation map at the slider's step
//   view_similarity.js linear CKA: a layer's step x step heat map; every layer against its last step
//   charts.js, dom.js drawing helpers
//
// This module wires them: it turns what the person does and what the poll
// finds into requests and view updates.

import {ApiError, Latest, getJson, isAbort} from './api.js';
import {el} from './dom.js';
import {Poller, report, reportUncaught} from './live.js';
import {atStepOrBefore, imageUnlessAborted, images, nearest, preload, state, stepWord, timings} from './state.js';
import {ClassMapPanel} from './view_cam.js';
import {ChannelView} from './view_channel.js';
import {CompareView} from './view_compare.js';
import {Controls} from './view_controls.js';
import {LayerView} from './view_layer.js';
import {OverviewView} from './view_overview.js';
import {SettlingChart, SimilarityPanel} from './view_similarity.js';

const RUNS_EVERY = 3; // polls between two looks at the run list

let controls;
let overview;
let layerView;
let channelView;
let compareView;
let classMaps;
let message;
let similarity; // the layer's CKA heat map
let settling; // the overview's CKA-to-last-step chart
const requests = {
  overview: new Latest(), // /overview and its images
  series: new Latest(), // /steps of the layer on screen and its images
  poll: new Latest(), // the poll's /steps
  channel: new Latest(), // /channel
  atlas: new Latest(), // /atlas and its pictures
  compare: new Latest(), // the comparison's pictures
  comparePoll: new Latest(), // /compare
  similarity: new Latest(), // /similarity or /similarity_overview
};
let ticks = 0;

export async function render() {
  document.head.appendChild(el('link', {rel: 'stylesheet', href: './style.css'}));
  controls = new Controls({run: selectRun, probe: selectProbe, layer: openLayer, view: setView, step: moveTo});
  overview = new OverviewView(
      (name) => openLayer(state.run.layers.findIndex((layer) => layer.name === name)),
      (err) => report(controls, err));
  layerView = new LayerView({tile: openChannel, compare: setCompare});
  classMaps = new ClassMapPanel((err) => report(controls, err));
  layerView.probeCard.append(classMaps.root);
  channelView = new ChannelView({
    close: closeChannel,
    pick: (step) => moveTo(nearest(state.series.steps, step), performance.now()),
  });
  compareView = new CompareView({select: compareWith});
  controls.run.closest('.field').after(compareView.field);
  message = el('div', {id: 'actlog-message', className: 'message', hidden: true}, {role: 'alert'});
  // Beside the layers, not below them: the page keeps its height (and its width, with no scroll bar).
  similarity = new SimilarityPanel();
  layerView.root.querySelector('aside').appendChild(similarity.root);
  settling = new SettlingChart();
  overview.root.appendChild(settling.root);
  document.body.appendChild(el('div', {id: 'actlog-root'}, {}, [
    controls.root,
    el('main', {}, {}, [message, overview.root, layerView.root, compareView.root, channelView.root]),
  ]));
  images.onLoad = (key, {image}) => {
    if (state.channel !== null) channelView.drawKey(key, image);
  };
  reportUncaught(controls);
  window.actlogDashboard = {state, timings, images, loaded};
  controls.set('info', 'Loading\u2026');
  const poller = new Poller(tick, controls);
  poller.start();
  try {
    await loadRuns();
    poller.ok(shownSteps());
  } catch (err) {
    report(controls, err);
  }
}

/** Grids of the layer view's series decoded so far (benchmarks and tests wait on it). */
function loaded() {
  return state.series ? state.series.steps.filter((s) => images.peek(s.key)).length : 0;
}

function guard(promise) {
  promise.catch((err) => report(controls, err));
}

// -- runs -------------------------------------------------------------------

/** What of a run the pickers depend on (not its steps, which grow). */
function outline(run) {
  return JSON.stringify([run.run, run.step_axis, run.probes, run.probe_images, run.layers]);
}

/** Ask for the run list; keep the run, layer and probe shown when they still exist. */
async function loadRuns() {
  const body = await getJson('runs');
  showMessage(body);
  const before = state.run;
  const unchanged = body.runs.length === state.runs.length &&
      body.runs.every((run, i) => outline(run) === outline(state.runs[i]));
  state.runs = body.runs;
  if (!body.runs.length) {
    state.run = null;
    return;
  }
  const i = before ? body.runs.findIndex((run) => run.run === before.run) : -1;
  if (i < 0) {
    await selectRun(0);
    return;
  }
  state.run = body.runs[i];
  if (unchanged) return;
  showCompareRuns();
  // Another `fit` logged more layers or probes, or another run appeared.
  controls.setRuns(body.runs.map((run) => run.run), i);
  const probe = state.probe < state.run.probes ? state.probe : 0;
  const layerName = state.layer && state.layer.name;
  const j = state.run.layers.findIndex((layer) => layer.name === layerName);
  controls.setProbes(state.run.probes, probe);
  controls.setLayers(state.run.layers.map((layer) => layer.name), Math.max(j, 0));
  showProbeImage();
  if (probe === state.probe && j >= 0) {
    state.layer = state.run.layers[j];
    layerView.setLayer(state.layer, stepWord());
    return;
  }
  state.probe = probe;
  state.layer = state.run.layers[Math.max(j, 0)];
  await showView();
}

function showMessage(body) {
  let text = body.problem || '';
  if (!body.runs.length) {
    const where = body.logdirs.length ? body.logdirs.join(', ') : 'no log directory';
    text = `No actlog runs to show (read: ${where}). ${text}`.trim();
  }
  message.textContent = text;
  message.hidden = !text;
  message.dataset.kind = body.runs.length ? 'warning' : 'empty';
}

async function selectRun(i) {
  state.run = state.runs[i];
  controls.setRuns(state.runs.map((run) => run.run), i);
  if (state.compareWith === state.run.run) state.compareWith = null;
  showCompareRuns();
  controls.setProbes(state.run.probes, 0);
  controls.setLayers(state.run.layers.map((layer) => layer.name), 0);
  state.probe = 0;
  state.layer = state.run.layers[0] || null;
  state.step = null;
  state.following = true;
  closeChannel();
  await showView();
}

async function selectProbe(i) {
  state.probe = i;
  await showView();
}

async function openLayer(i) {
  state.layer = state.run.layers[i];
  controls.selectLayer(i);
  closeChannel();
  state.view = 'layer';
  await showView();
}

async function setView(view) {
  if (view === state.view) return;
  state.view = view;
  await showView();
}

/** Show `state.view` for the run, probe and layer chosen; loads what it needs. */
async function showView() {
  const layer = state.view === 'layer';
  controls.setView(state.view);
  overview.root.hidden = layer;
  layerView.root.hidden = !layer;
  channelView.root.hidden = !layer || state.channel === null;
  compareView.root.hidden = true;
  showProbeImage();
  if (layer && state.compareWith !== null) {
    layerView.root.hidden = true;
    channelView.root.hidden = true;
    requests.overview.abort();
    requests.series.abort();
    requests.poll.abort();
    state.series = null;
    compareView.root.hidden = false;
    await loadComparison();
    return;
  }
  requests.compare.abort();
  requests.comparePoll.abort();
  state.comparison = null;
  if (layer) {
    requests.overview.abort();
    await loadSeries();
  } else {
    requests.series.abort();
    requests.poll.abort();
    state.series = null;
    await loadOverview();
  }
}

function showProbeImage() {
  const key = state.run && state.run.probe_images[state.probe];
  if (!key) {
    controls.setProbeImage(null);
    layerView.setProbeImage(null);
    return;
  }
  images.get(key).then(({url}) => {
    if (state.run.probe_images[state.probe] !== key) return;
    controls.setProbeImage(url);
    layerView.setProbeImage(url);
  }, (err) => report(controls, err));
}

// -- steps --------------------------------------------------------------------

/** Move to step number `index` of the view on screen; `started` is when it was asked for. */
function moveTo(index, started = null) {
  if (state.view === 'overview') {
    const steps = state.overview ? state.overview.steps : [];
    index = Math.max(0, Math.min(steps.length - 1, index));
    if (!steps.length || steps[index] === state.step) return;
    state.step = steps[index];
    state.following = index === steps.length - 1;
    controls.setSteps(steps, index, stepWord());
    guard(loadOverview());
    return;
  }
  if (state.comparison) {
    moveComparison(index, started);
    return;
  }
  const steps = state.series ? state.series.steps : [];
  index = Math.max(0, Math.min(steps.length - 1, index));
  if (!steps.length || index === state.index) return;
  state.index = index;
  state.step = steps[index].step;
  state.following = index === steps.length - 1;
  showTimeline();
  guard(showPanel('b', index, started));
}

function setCompare(index) {
  state.compareIndex = index;
  guard(showPanel('a', index, null));
}

/** Slider, caption, filmstrip mark and chart cursor for `state.index`. */
function showTimeline() {
  const series = state.series;
  const word = stepWord();
  controls.setSteps(series.steps.map((s) => s.step), state.index, word);
  const step = series.steps[state.index].step;
  layerView.setCaption(`${word} ${step} (current)`);
  guard(classMaps.show(state.run.run, state.probe, step, word));
  if (state.channel !== null) {
    channelView.setCurrent(step);
    guard(showAtlas());
  }
}

// -- overview -------------------------------------------------------------------

async function loadOverview() {
  const signal = requests.overview.next();
  const params = {run: state.run.run, probe: state.probe};
  if (!state.following && state.step !== null) params.step = state.step;
  let body;
  try {
    body = await getJson('overview', params, {signal});
  } catch (err) {
    // The step asked for is gone (the run was written again): go to the last one.
    if (!(err instanceof ApiError) || err.status !== 400 || params.step === undefined) throw err;
    state.following = true;
    delete params.step;
    body = await getJson('overview', params, {signal});
  }
  state.overview = body;
  state.step = body.step;
  const index = Math.max(body.steps.indexOf(body.step), 0);
  controls.setSteps(body.steps, index, stepWord());
  overview.show(body, stepWord(), signal);
  guard(loadSimilarity('similarity_overview', {run: state.run.run}, (answer) => settling.show(answer, stepWord())));
}

/** A similarity route; `show(body)` unless the person moved on meanwhile. */
async function loadSimilarity(route, params, show) {
  const view = state.view;
  let body;
  try {
    body = await getJson(route, params, {signal: requests.similarity.next()});
  } catch (err) {
    if (isAbort(err)) return;
    if (route === 'similarity') similarity.absent(`No similarity: ${err.message}`);
    throw err;
  }
  if (state.view === view && state.run && body.run === state.run.run &&
      (body.layer === undefined || (state.layer && body.layer === state.layer.name))) show(body);
}

// -- one layer ------------------------------------------------------------------

async function loadSeries() {
  const signal = requests.series.next();
  requests.poll.abort();
  const word = stepWord();
  layerView.setLayer(state.layer, word);
  const body = await getJson('steps', {run: state.run.run, layer: state.layer.name, probe: state.probe}, {signal});
  state.series = body;
  guard(loadLayerSimilarity());
  const last = body.steps.length - 1;
  state.index = state.following || state.step === null ? last : nearest(body.steps, state.step);
  state.compareIndex = 0;
  layerView.setCompareOptions(body.steps.map((s) => `${word} ${s.step}`), 0);
  if (!body.steps.length) {
    controls.setSteps([], 0, word);
    layerView.setCaption(`no grids of this layer for probe ${state.probe} yet`);
    return;
  }
  state.step = body.steps[state.index].step;
  showTimeline();
  if (state.channel !== null) openChannel(state.channel);
  await Promise.all([showPanel('b', state.index, null), showPanel('a', state.compareIndex, null)]);
  preloadSeries(signal);
}

/** Put the grid of `series.steps[index]` on panel 'a' or 'b', unless the person moved on meanwhile. */
async function showPanel(which, index, started) {
  const series = state.series;
  const entry = series.steps[index];
  const picked = () => (which === 'b' ? state.index : state.compareIndex);
  const decoded = await imageUnlessAborted(entry.key, requests.series.controller.signal);
  if (!decoded) return;
  if (state.series !== series || picked() !== index) return;
  await layerView.show(which, decoded, entry, series.layouts[entry.layout], series.probe);
  if (started !== null) timings.push(performance.now() - started);
}

/** Fetch the series' grids nearest the current step first, as many as the cache keeps. */
function preloadSeries(signal) {
  const steps = state.series.steps;
  const order = steps.map((_, i) => i).sort((i, j) => Math.abs(i - state.index) - Math.abs(j - state.index));
  const keys = [...new Set([state.compareIndex, ...order].map((i) => steps[i].key))];
  guard(preload(keys, signal));
}

/** The poll in the layer view: take in steps logged (or written again) since the last look. */
async function refreshSeries() {
  const series = state.series;
  if (!series) return loadSeries();
  const body = await getJson('steps', {run: series.run, layer: series.layer, probe: series.probe},
      {signal: requests.poll.next()});
  if (state.series !== series || body.version === series.version) return;
  if (!body.steps.length) return; // a log being removed or rewritten: keep what is on screen
  guard(loadLayerSimilarity());
  const current = series.steps[state.index];
  const compared = series.steps[state.compareIndex];
  const kept = new Set(body.steps.map((s) => s.key));
  for (const s of series.steps) if (!kept.has(s.key)) images.drop(s.key);
  state.series = body;
  state.index = state.following ? body.steps.length - 1 : nearest(body.steps, current.step);
  state.compareIndex = nearest(body.steps, compared.step);
  state.step = body.steps[state.index].step;
  layerView.setCompareOptions(body.steps.map((s) => `${stepWord()} ${s.step}`), state.compareIndex);
  showTimeline();
  const shows = [];
  if (body.steps[state.index].key !== current.key) shows.push(showPanel('b', state.index, null));
  if (body.steps[state.compareIndex].key !== compared.key) shows.push(showPanel('a', state.compareIndex, null));
  if (state.channel !== null) {
    channelView.syncFrames(body, stepWord(), (key) => images.peek(key)?.image);
    channelView.setCurrent(state.step);
    guard(loadStats());
    guard(loadAtlas());
  }
  await Promise.all(shows);
  preloadSeries(requests.series.controller.signal);
}

function loadLayerSimilarity() {
  return loadSimilarity('similarity', {run: state.run.run, layer: state.layer.name},
      (body) => similarity.show(body, stepWord()));
}

// -- one channel ------------------------------------------------------------------

function openChannel(channel) {
  state.channel = channel;
  channelView.open(state.layer.name, channel);
  layerView.follow(channel);
  layerView.setChannelOpen(true);
  channelView.syncFrames(state.series, stepWord(), (key) => images.peek(key)?.image);
  channelView.setCurrent(state.step);
  state.atlas = null;
  guard(loadStats());
  guard(loadAtlas());
}

/**
 * A route of the followed channel (/channel, /atlas); null when the person moved
 * on while it came. `problem(err)` shows a failure where the answer would have gone.
 */
async function channelJson(route, request, problem) {
  const channel = state.channel;
  const series = state.series;
  let body;
  try {
    body = await getJson(route, {run: series.run, layer: series.layer, channel}, {signal: request.next()});
  } catch (err) {
    if (isAbort(err)) return null;
    problem(err);
    throw err;
  }
  return state.channel === channel && state.series?.layer === series.layer ? body : null;
}

async function loadStats() {
  const body = await channelJson('channel', requests.channel,
      (err) => channelView.setProblem(`No statistics: ${err.message}`));
  if (body) channelView.setStats(body.stats, state.series.steps.map((s) => s.step), stepWord());
}

/** The channel's atlas at every atlas step; then its crops at the slider's step. */
async function loadAtlas() {
  const body = await channelJson('atlas', requests.atlas,
      (err) => channelView.atlas.setProblem(`No atlas: ${err.message}`));
  if (!body) return;
  state.atlas = body;
  await showAtlas();
}

/** Crops of the atlas step at or before the slider's step, once its picture is here. */
async function showAtlas() {
  const body = state.atlas;
  if (!body) return; // on its way
  const panel = channelView.atlas;
  if (!body.steps.length) {
    panel.absent(body.note || 'No feature atlas for this layer.');
    return;
  }
  const entry = atStepOrBefore(body.steps, state.step);
  if (!entry) {
    panel.clear(`No atlas at or before ${stepWord()} ${state.step}: the first is at ${body.steps[0].step}.`);
    return;
  }
  let decoded;
  try {
    decoded = await images.get(entry.key, requests.atlas.controller.signal);
  } catch (err) {
    if (isAbort(err)) return;
    panel.setProblem(`The atlas picture of ${stepWord()} ${entry.step} could not be shown: ${err.message}`);
    throw err;
  }
  // The person (or a poll) may have moved on while the picture came.
  if (state.atlas !== body || atStepOrBefore(body.steps, state.step) !== entry) return;
  panel.show(entry, decoded.image, stepWord(), state.step, body.channel, body.note);
}

function closeChannel() {
  state.channel = null;
  state.atlas = null;
  requests.atlas.abort();
  requests.channel.abort();
  channelView.hide();
  layerView.follow(null);
  layerView.setChannelOpen(false);
}

// -- two runs side by side (view_compare.js) --------------------------------------

function showCompareRuns() {
  const others = state.runs.map((run) => run.run).filter((name) => name !== state.run.run);
  if (!others.includes(state.compareWith)) state.compareWith = null;
  compareView.setRuns(others, state.compareWith);
}

async function compareWith(name) {
  state.compareWith = name;
  if (name !== null) state.view = 'layer';
  await showView();
}

/** Ask /compare for the layer and probe chosen; stay on the step shown (or the last one). */
async function loadComparison() {
  const signal = requests.comparePoll.next();
  const before = state.comparison;
  let body;
  try {
    body = await getJson('compare', {run: state.run.run, other: state.compareWith, layer: state.layer.name,
      probe: state.probe}, {signal});
  } catch (err) {
    if (isAbort(err)) return;
    if (!(err instanceof ApiError) || err.status !== 400) throw err;
    state.comparison = null;
    compareView.setProblem(`These runs cannot be compared: ${err.message}`);
    return;
  }
  if (before && JSON.stringify(before) === JSON.stringify(body)) return; // a poll with nothing new
  requests.compare.next(); // the pictures of what was on screen are not wanted any more
  state.comparison = body;
  const last = body.steps.length - 1;
  const index = state.following || state.step === null ? last : nearest(body.steps, state.step);
  state.compareStep = null;
  moveComparison(index, null);
}

function moveComparison(index, started) {
  const body = state.comparison;
  index = Math.max(0, Math.min(body.steps.length - 1, index));
  if (!body.steps.length || index === state.compareStep) return;
  state.compareStep = index;
  state.step = body.steps[index];
  state.following = index === body.steps.length - 1;
  controls.setSteps(body.steps, index, stepWord());
  const current = () => state.comparison === body && state.compareStep === index;
  guard(compareView.show(body, index, requests.compare.controller.signal, current).then(() => {
    if (started !== null && current()) timings.push(performance.now() - started);
  }));
}

// -- live -----------------------------------------------------------------------

/** One poll: new runs now and then, new steps of what is on screen always. */
async function tick() {
  ticks += 1;
  if (!state.run || ticks % RUNS_EVERY === 0) await loadRuns();
  if (state.run && state.view === 'layer' && state.compareWith !== null) await loadComparison();
  else if (state.run) await (state.view === 'overview' ? loadOverview() : refreshSeries());
  return shownSteps();
}

/** "epochs 0–5": the steps the view on screen has, by their numbers (step 0 is before
 * training, so a count would say 6 after 5 epochs); "(4 logged)" when some are missing. */
function shownSteps() {
  if (!state.run) return 'no actlog runs yet';
  let shown = state.view === 'overview' ? state.overview && state.overview.steps : state.series && state.series.steps;
  if (state.comparison) shown = state.comparison.steps;
  const steps = (shown || []).map((s) => (typeof s === 'number' ? s : s.step));
  const word = stepWord();
  if (!steps.length) return `no ${word}s yet`;
  const first = steps[0];
  const last = steps[steps.length - 1];
  if (steps.length === 1) return `${word} ${first}`;
  const gaps = steps.length === last - first + 1 ? '' : ` (${steps.length} logged)`;
  return `${word}s ${first}\u2013${last}${gaps}`;
}
