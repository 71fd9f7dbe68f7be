// "Top k in the atlas pool": the followed channel's k best examples from the
// feature atlas, at the atlas step at or before the slider's. Each crop is cut
// out of the step's atlas picture with the box the backend gave for it (no
// geometry is worked out here) and drawn pixel for pixel, upscaled by a whole
// factor with no smoothing; under it, its index in the pool and its activation.

import {formatNumber} from './charts.js';
import {el} from './dom.js';

const CROP_SIZE = 84; // about this many CSS pixels on a crop's long side

export class AtlasPanel {
  constructor() {
    this.heading = el('h4', {id: 'actlog-atlas-title', textContent: 'Top k in the atlas pool'});
    this.caption = el('span', {id: 'actlog-atlas-step', className: 'atlas-step'});
    this.crops = el('div', {id: 'actlog-atlas-crops', className: 'atlas-crops'});
    this.legend = el('p', {className: 'atlas-legend'});
    this.change = el('p', {id: 'actlog-atlas-change', className: 'atlas-change'});
    this.note = el('p', {id: 'actlog-atlas-note', className: 'atlas-note'});
    this.root = el('section', {id: 'actlog-atlas', className: 'atlas-panel'}, {}, [
      el('div', {className: 'atlas-head'}, {}, [this.heading, this.caption]),
      this.crops, this.legend, this.change, this.note,
    ]);
    this.clear('loading the atlas\u2026');
  }

  /** Nothing drawn; `text` says why. */
  clear(text) {
    this.key = null;
    this.root.classList.remove('empty', 'problem');
    delete this.root.dataset.step;
    delete this.root.dataset.key;
    this.heading.textContent = 'Top k in the atlas pool';
    this.caption.textContent = '';
    this.crops.textContent = '';
    this.legend.textContent = '';
    this.change.textContent = '';
    this.setNote(text);
  }

  setNote(text) {
    this.note.textContent = text || '';
    this.note.hidden = !text;
  }

  /** The layer has no atlas: one line under the charts says so. */
  absent(text) {
    this.clear(text);
    this.root.classList.add('empty');
  }

  /** A failure to show (the status line has it too). */
  setProblem(text) {
    this.clear(text);
    this.root.classList.add('problem');
  }

  /**
   * The crops of one atlas step (`entry` of /atlas) from its decoded picture;
   * `step` is the slider's. A step already drawn is only captioned again.
   */
  show(entry, picture, word, step, channel, note) {
    this.root.classList.remove('empty', 'problem');
    const at = entry.step === step ? `${word} ${entry.step}` : `${word} ${entry.step}, the last at or before ${step}`;
    this.caption.textContent = `atlas at ${at}`;
    this.setNote(note);
    if (this.key === entry.key) return;
    this.key = entry.key;
    this.root.dataset.step = String(entry.step);
    this.root.dataset.key = entry.key;
    this.heading.textContent = `Top ${entry.k} in the atlas pool (${entry.pool} inputs)`;
    this.crops.textContent = '';
    if (!entry.crops) {
      this.legend.textContent = '';
      this.change.textContent = '';
      this.crops.append(el('p', {className: 'absent', textContent: `channel ${channel} is not in this atlas`}));
      return;
    }
    const longest = Math.max(...entry.crops.map(({box}) => Math.max(box[2], box[3])));
    const scale = Math.max(1, Math.round(CROP_SIZE / longest));
    this.crops.style.setProperty('--columns', String(entry.k <= 4 ? entry.k : Math.ceil(entry.k / 2)));
    entry.crops.forEach((crop, rank) => this.crops.append(this.makeCrop(crop, rank, picture, scale)));
    this.legend.textContent = 'Best first; under each, its input\'s index in the pool and its activation.';
    this.change.textContent = entry.change === null
      ? 'The first atlas of this layer: nothing to compare with yet.'
      : `Change since ${word} ${entry.since}: ${formatNumber(entry.change)} ` +
        `(Jaccard distance of the top-${entry.k} sets: 0 = the same inputs, 1 = all new).`;
  }

  makeCrop({box, index, value}, rank, picture, scale) {
    const [y, x, h, w] = box;
    const canvas = el('canvas', {width: w, height: h});
    canvas.style.width = `${w * scale}px`;
    canvas.style.height = `${h * scale}px`;
    const context = canvas.getContext('2d');
    context.imageSmoothingEnabled = false;
    context.drawImage(picture, x, y, w, h, 0, 0, w, h);
    const empty = index === null;
    const figure = el('figure', {
      className: 'atlas-crop',
      title: empty ? `rank ${rank + 1}: empty` : `rank ${rank + 1} \u00b7 pool input ${index} \u00b7 activation ${value}`,
    }, {'data-rank': rank, 'data-index': empty ? '' : index});
    figure.append(canvas, el('figcaption', {}, {}, [
      el('span', {className: 'pool-index', textContent: empty ? 'empty' : `#${index}`}),
      el('span', {className: 'value', textContent: empty ? '' : formatNumber(value)}),
    ]));
    return figure;
  }
}
