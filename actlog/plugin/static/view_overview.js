// The overview: every watched layer of the run at one step, each with its
// drift and dead channels over every step as sparklines. A card opens its layer.

import {formatNumber, sparkline} from './charts.js';
import {el} from './dom.js';
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
  }

  /** Show `body` (from /overview); images fetched until `signal` aborts. */
  show(body, word, signal) {
    const steps = body.steps;
    const domain = [steps[0] ?? 0, steps[steps.length - 1] ?? 0];
    const names = new Set(body.layers.map((layer) => layer.name));
    for (const [name, card] of this.cards) {
      if (!names.has(name)) {
        card.node.remove();
        this.cards.delete(name);
      }
    }
    body.layers.forEach((layer, i) => {
      const card = this.cards.get(layer.name) || this.makeCard(layer.name);
      if (this.root.children[i] !== card.node) this.root.insertBefore(card.node, this.root.children[i] || null);
      this.fill(card, layer, body.step, domain, word, signal);
    });
  }

  makeCard(name) {
    const card = {
      title: el('h3', {textContent: name, title: name}),
      meta: el('span', {className: 'meta'}),
      image: el('img', {className: 'grid', alt: `grid of ${name}`}),
      missing: el('span', {className: 'missing', hidden: true}),
      drift: el('div', {className: 'spark'}),
      dead: el('div', {className: 'spark'}),
    };
    card.node = el('article', {className: 'card layer-card', tabIndex: 0, title: `open ${name}`}, {'data-layer': name}, [
      el('header', {}, {}, [card.title, card.meta]),
      el('div', {className: 'thumb'}, {}, [card.image, card.missing]),
      card.drift,
      card.dead,
    ]);
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

  fill(card, layer, step, domain, word, signal) {
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
        driftAt === undefined ? '\u2013' : formatNumber(driftAt));
    const deadAt = valueAt(layer.dead, step);
    const channels = layer.dead.channels[layer.dead.steps.indexOf(step)] ?? layer.channels;
    sparkRow(card.dead, 'dead channels', layer.dead, domain, step, DEAD_COLOR,
        deadAt === undefined ? '\u2013' : `${formatNumber(deadAt)} / ${channels}`);
  }
}

function valueAt(series, step) {
  const i = series.steps.indexOf(step);
  return i < 0 ? undefined : series.values[i];
}

function sparkRow(node, label, series, domain, step, color, value) {
  node.textContent = '';
  node.dataset.stat = label;
  node.append(
      el('span', {className: 'spark-label', textContent: label}),
      sparkline({series, domain, current: step, color}),
      el('span', {className: 'spark-value', textContent: value}),
  );
}
