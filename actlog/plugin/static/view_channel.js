// One channel followed through every step: a filmstrip of its tile (cut out
// of each step's grid with the box the backend gave for that step's layout),
// its statistics as charts with axes and a hover readout, and beside them its
// top-k examples from the feature atlas (view_atlas.js).

import {lineChart} from './charts.js';
import {el, onResize} from './dom.js';
import {boxOf} from './state.js';
import {AtlasPanel} from './view_atlas.js';

const FRAME_HEIGHT = 64;
const STATS = [
  ['channel_mean', 'mean', '#1a73e8'],
  ['channel_max', 'max', '#e8710a'],
  ['channel_drift', 'drift (1 - cosine to the previous step)', '#188038'],
];

export class ChannelView {
  /** `on` = {close(), pick(step)}. */
  constructor(on) {
    this.on = on;
    this.title = el('h3', {id: 'actlog-channel-title'});
    this.close = el('button', {id: 'actlog-channel-close', type: 'button', className: 'text-button', textContent: 'Close'});
    this.filmstrip = el('div', {id: 'actlog-filmstrip', className: 'filmstrip'});
    this.plot = el('div', {id: 'actlog-stats-plot', className: 'plot'});
    this.atlas = new AtlasPanel();
    this.root = el('section', {id: 'actlog-channel-view', className: 'channel-view card', hidden: true}, {}, [
      el('div', {className: 'channel-head'}, {}, [this.title, this.close]),
      el('div', {className: 'channel-body'}, {}, [
        el('div', {className: 'channel-time'}, {}, [this.filmstrip, this.plot]),
        this.atlas.root,
      ]),
    ]);
    this.close.addEventListener('click', () => on.close());
    this.stats = null;
    onResize(this.plot, () => this.drawCharts()); // its column narrows while the atlas panel is beside it
  }

  open(layerName, channel) {
    this.channel = channel;
    this.root.hidden = false;
    this.root.dataset.channel = String(channel);
    this.title.textContent = `${layerName} \u00b7 channel ${channel}`;
    this.filmstrip.textContent = '';
    this.stats = null;
    this.plot.textContent = 'loading statistics\u2026';
    this.atlas.clear('loading the atlas\u2026');
  }

  hide() {
    this.root.hidden = true;
    this.channel = null;
  }

  /**
   * One frame per step of `series`, in order: frames already drawn are kept,
   * those of new or rewritten steps (a new key) are made, those of dropped
   * steps removed. `image(key)` gives a decoded grid or null (not loaded yet).
   */
  syncFrames(series, word, image) {
    const frames = new Map();
    for (const frame of this.filmstrip.querySelectorAll('figure.frame')) frames.set(frame.dataset.key, frame);
    series.steps.forEach((entry, position) => {
      let frame = frames.get(entry.key);
      if (frame) {
        frames.delete(entry.key);
      } else {
        frame = this.makeFrame(entry, series.layouts[entry.layout], word);
        const loaded = image(entry.key);
        if (loaded) this.draw(frame, loaded);
      }
      if (this.filmstrip.children[position] !== frame) {
        this.filmstrip.insertBefore(frame, this.filmstrip.children[position] || null);
      }
    });
    for (const frame of frames.values()) frame.remove();
  }

  makeFrame(entry, layout, word) {
    const box = boxOf(layout, this.channel);
    const frame = el('figure', {className: 'frame', title: `${word} ${entry.step}`},
        {'data-step': entry.step, 'data-key': entry.key});
    if (!box) {
      frame.append(el('div', {className: 'absent', textContent: 'not shown'}));
    } else {
      const [, , h, w] = box;
      const canvas = el('canvas', {width: w, height: h});
      const scale = FRAME_HEIGHT / h;
      canvas.style.width = `${Math.round(w * scale)}px`;
      canvas.style.height = `${FRAME_HEIGHT}px`;
      frame.append(canvas);
      frame.box = box;
    }
    frame.append(el('figcaption', {textContent: String(entry.step)}));
    frame.addEventListener('click', () => this.on.pick(entry.step));
    return frame;
  }

  /** Draw the channel's tile of a decoded grid into the frame of `key`, if there is one. */
  drawKey(key, image) {
    const frame = [...this.filmstrip.children].find((f) => f.dataset.key === key);
    if (frame) this.draw(frame, image);
  }

  draw(frame, image) {
    const canvas = frame.querySelector('canvas');
    if (!canvas || !frame.box) return;
    const [y, x, h, w] = frame.box;
    const context = canvas.getContext('2d');
    context.imageSmoothingEnabled = false;
    context.drawImage(image, x, y, w, h, 0, 0, w, h);
    frame.dataset.drawn = 'true';
  }

  setCurrent(step) {
    this.current = step;
    for (const frame of this.filmstrip.querySelectorAll('figure.frame')) {
      const here = frame.dataset.step === String(step);
      frame.classList.toggle('current', here);
      if (here && !this.root.hidden) frame.scrollIntoView({block: 'nearest', inline: 'nearest'});
    }
    this.drawCharts();
  }

  setStats(stats, steps, word) {
    this.stats = stats;
    this.steps = steps;
    this.word = word;
    this.drawCharts();
  }

  setProblem(message) {
    this.stats = null;
    this.plot.textContent = message;
  }

  drawCharts() {
    if (!this.stats || this.root.hidden) return;
    const width = Math.max(240, Math.floor((this.plot.clientWidth - 2 * 16) / 3));
    const domain = [this.steps[0] ?? 0, this.steps[this.steps.length - 1] ?? 0];
    this.plot.textContent = '';
    for (const [name, title, color] of STATS) {
      const series = this.stats[name] || {steps: [], values: []};
      const chart = lineChart({
        title, series, domain, color, width, current: this.current, stepWord: this.word,
        onPick: (step) => this.on.pick(step),
      });
      chart.dataset.stat = name;
      this.plot.appendChild(chart);
    }
  }
}
