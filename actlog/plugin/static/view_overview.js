// The overview: every watched layer of the run at one step, each with its
// drift and dead channels over every step as sparklines. A card opens its layer.
// Each grid is scaled to fill its card's width (and no taller than the page
// leaves room for); the drift sparklines of every layer share one scale, the
// dead channels run from 0 to all of the layer's channels, and each says its top.

import {formatNumber, formatTick, niceTop, sparkline} from './charts.js';
import {el, onResize} from './dom.js';
import {isAbort} from './api.js';
import {describeShape, images} from './state.js';

const DRIFT_COLOR = '#9334e6';
const DEAD_COLOR = '#d93025';

export class OverviewView {
  /** `onOpen(layerName)` when a card is chosen; `onError(err)` when an image fails. */
  constructor(onOpen, onError) {
    this.onOpen = onOpen;
    this.onError = onError;
    this.cards = new Map(); // layer name -> card parts
    this.root = el('section', {id: 'actlog-overview', className: 'overview'});
    window.addEventListener('resize', () => this.fit());
  }

  /** Scale every card's grid to its card. */
  fit() {
    for (const card of this.cards.values()) fitGrid(card);
  }

  /** Show `body` (from /overview); images fetched until `signal` aborts. */
  show(body, word, signal) {
    const steps = body.steps;
    const domain = [steps[0] ?? 0, steps[steps.length - 1] ?? 0];
    const names = new Set(body.layers.map((layer) => layer.name));
    const drifts = body.layers.flatMap((layer) => layer.drift.values).filter((v) => v !== null && Number.isFinite(v));
    const driftTop = niceTop(Math.max(0, ...drifts));
    for (const [name, card] of this.cards) {
      if (!names.has(name)) {
        card.node.remove();
        this.cards.delete(name);
      }
    }
    body.layers.forEach((layer, i) => {
      const card = this.cards.get(layer.name) || this.makeCard(layer.name);
      if (this.root.children[i] !== card.node) this.root.insertBefore(card.node, this.root.children[i] || null);
      this.fill(card, layer, body.step, domain, word, signal, driftTop);
    });
  }

  makeCard(name) {
    const card = {
      title: el('h3', {textContent: name, title: name}),
      meta: el('span', {className: 'meta'}),
      image: el('img', {className: 'grid', alt: `grid of ${name}`, draggable: false}),
      missing: el('span', {className: 'missing', hidden: true}),
      thumb: null,
      drift: el('div', {className: 'spark'}),
      dead: el('div', {className: 'spark'}),
    };
    card.node = el('article', {className: 'card layer-card', tabIndex: 0, title: `open ${name}`}, {'data-layer': name}, [
      el('header', {}, {}, [card.title, card.meta]),
      card.thumb = el('div', {className: 'thumb'}, {}, [card.image, card.missing]),
      card.drift,
      card.dead,
    ]);
    card.image.addEventListener('load', () => fitGrid(card));
    onResize(card.node, () => fitGrid(card));
    card.node.addEventListener('click', () => this.onOpen(name));
    card.node.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        this.onOpen(name);
      }
    });
    this.cards.set(name, card);
    return card;
  }

  fill(card, layer, step, domain, word, signal, driftTop) {
    card.meta.textContent = [layer.class, describeShape(layer.output_shape)].filter(Boolean).join(' \u00b7 ');
    const grid = layer.grid;
    card.missing.hidden = Boolean(grid);
    card.missing.textContent = grid ? '' : `not logged at ${word} ${step}`;
    card.image.hidden = !grid;
    if (grid && card.image.dataset.key !== grid.key) {
      card.image.dataset.key = grid.key;
      images.get(grid.key, signal).then(({url}) => {
        if (card.image.dataset.key !== grid.key) return; // another step was asked for meanwhile
        card.image.src = url;
        card.image.dataset.step = String(grid.step);
      }, (err) => {
        if (card.image.dataset.key === grid.key) delete card.image.dataset.key;
        if (!isAbort(err)) this.onError(err);
      });
    }
    const driftAt = valueAt(layer.drift, step);
    sparkRow(card.drift, 'drift', layer.drift, domain, step, DRIFT_COLOR,
        driftAt === undefined ? '\u2013' : formatNumber(driftAt), [0, driftTop]);
    const deadAt = valueAt(layer.dead, step);
    const channels = layer.dead.channels[layer.dead.steps.indexOf(step)] ?? layer.channels;
    sparkRow(card.dead, 'dead channels', layer.dead, domain, step, DEAD_COLOR,
        deadAt === undefined ? '\u2013' : `${formatNumber(deadAt)} / ${channels}`, [0, Math.max(channels, 1)]);
  }
}

function valueAt(series, step) {
  const i = series.steps.indexOf(step);
  return i < 0 ? undefined : series.values[i];
}

/** Label, scale (its top over 0), sparkline on `range`, value at the step. */
function sparkRow(node, label, series, domain, step, color, value, range) {
  node.textContent = '';
  node.dataset.stat = label;
  node.dataset.top = String(range[1]);
  node.append(
      el('span', {className: 'spark-label', textContent: label}),
      el('span', {className: 'spark-scale', title: `scale: 0 to ${formatTick(range[1])}`}, {}, [
        el('span', {textContent: formatTick(range[1])}), el('span', {textContent: '0'}),
      ]),
      sparkline({series, domain, current: step, color, range, height: 32}),
      el('span', {className: 'spark-value', textContent: value}),
  );
}

/** The grid as large as its card is wide, within the height the page leaves it; pixels stay square. */
function fitGrid(card) {
  const image = card.image;
  const width = image.naturalWidth;
  const height = image.naturalHeight;
  const available = card.thumb.clientWidth;
  if (!width || !height || !available) return;
  const tall = Math.max(window.innerHeight - 280, 200);
  const scale = Math.min(available / width, tall / height);
  image.style.width = `${Math.floor(width * scale)}px`;
  image.style.height = `${Math.floor(height * scale)}px`;
}
