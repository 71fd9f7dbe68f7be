// One layer: its probe image, and its grid at two steps side by side, as large
// as the page allows. Tile positions are the backend's (`layout.boxes`, one
// [y, x, height, width] per tile, per layout); nothing here works them out.

import {el, field, fillOptions, onResize} from './dom.js';
import {boxOf, describeShape} from './state.js';

/** The tile under a point of `image` (client coordinates): {channel, box} or null. */
export function tileAt(image, layout, clientX, clientY) {
  if (!layout || !image.naturalWidth) return null;
  const rect = image.getBoundingClientRect();
  const x = (clientX - rect.left) * image.naturalWidth / rect.width;
  const y = (clientY - rect.top) * image.naturalHeight / rect.height;
  const i = layout.boxes.findIndex(([by, bx, h, w]) => y >= by && y < by + h && x >= bx && x < bx + w);
  return i < 0 ? null : {channel: layout.channels[i], box: layout.boxes[i]};
}

class Panel {
  constructor(id, caption, alt) {
    this.image = el('img', {id, alt, draggable: false});
    this.mark = el('div', {className: 'tile-mark', hidden: true});
    this.caption = caption;
    this.layout = null;
    this.node = el('figure', {className: 'panel card'}, {}, [
      el('figcaption', {}, {}, [caption]),
      el('div', {className: 'gridwrap'}, {}, [
        el('div', {className: 'gridbox'}, {}, [this.image, this.mark]),
      ]),
    ]);
  }
}

export class LayerView {
  /** `on` = {tile(channel), compare(index)}. */
  constructor(on) {
    this.on = on;
    this.compare = el('select', {id: 'actlog-compare-step'}, {'aria-label': 'compared step'});
    this.current = el('span', {id: 'actlog-current-caption', className: 'caption'});
    this.a = new Panel('actlog-grid-a', field('Compare with', this.compare), 'grid at the compared step');
    this.b = new Panel('actlog-grid-b', this.current, 'grid at the current step');
    this.probeImage = el('img', {id: 'actlog-probe-image', alt: 'probe image', hidden: true});
    this.info = el('dl', {className: 'layer-info'});
    this.hover = el('div', {id: 'actlog-hover', className: 'hover', hidden: true});
    this.channelOpen = false;
    this.hovered = null; // {panel, clientX, clientY} under the pointer
    this.probeCard = el('aside', {className: 'probe card'}, {}, [
      el('h4', {textContent: 'Probe'}), this.probeImage, this.info,
    ]);
    this.root = el('section', {id: 'actlog-layer-view', className: 'layer-view', hidden: true}, {}, [
      this.probeCard,
      this.a.node,
      this.b.node,
      this.hover,
    ]);
    this.compare.addEventListener('change', () => on.compare(this.compare.selectedIndex));
    for (const panel of [this.a, this.b]) {
      panel.image.addEventListener('mousemove', (event) => this.showHover(panel, event));
      panel.image.addEventListener('mouseleave', () => {
        this.hover.hidden = true;
        this.hovered = null;
      });
      panel.image.addEventListener('click', (event) => {
        const hit = tileAt(panel.image, panel.layout, event.clientX, event.clientY);
        if (hit) on.tile(hit.channel);
      });
    }
    onResize(this.root, () => this.fit());
    window.addEventListener('resize', () => this.fit());
  }

  /** The layer's description beside its probe image. */
  setLayer(layer, word) {
    this.layerName = layer.name;
    this.word = word;
    this.unit = layer.view === 'attention' ? 'head' : 'channel';  // an attention layer's tiles are heads
    this.info.textContent = '';
    const rows = [
      ['layer', layer.name], ['path', layer.path], ['class', layer.class],
      ['output', describeShape(layer.output_shape)],
      ['tiles', `${layer.shown} of ${layer.channels} ${this.unit}s`],
      ['norm', Array.isArray(layer.norm) ? layer.norm.join(' to ') : layer.norm], ['colours', layer.cmap],
      ['atlas', layer.atlas ? `top ${layer.atlas.k} of ${layer.atlas.pool}` : null],
    ];
    for (const [term, value] of rows) {
      if (value === null || value === undefined || value === '') continue;
      this.info.append(el('dt', {textContent: term}), el('dd', {textContent: String(value), title: String(value)}));
    }
  }

  setProbeImage(url) {
    this.probeImage.hidden = !url;
    if (url) this.probeImage.src = url;
    else this.probeImage.removeAttribute('src');
  }

  setCompareOptions(labels, index) {
    fillOptions(this.compare, labels, index);
  }

  setCaption(text) {
    this.current.textContent = text;
  }

  /** Put a decoded grid on panel 'a' or 'b'; resolves once it is on screen. */
  async show(which, {url, image}, entry, layout, probe) {
    const panel = which === 'a' ? this.a : this.b;
    panel.layout = layout;
    panel.natural = [image.naturalWidth, image.naturalHeight];
    this.size(panel);
    panel.image.src = url;
    await panel.image.decode().catch(() => {});
    Object.assign(panel.image.dataset, {step: String(entry.step), layer: this.layerName, probe: String(probe)});
    this.placeMark(panel);
    // A new step under a still pointer (the arrow keys, a poll): the tooltip names it.
    if (this.hovered && this.hovered.panel === panel) this.showHover(panel, this.hovered);
  }

  /** Outline `channel`'s tile on both panels (null: none). */
  follow(channel) {
    this.channel = channel;
    for (const panel of [this.a, this.b]) this.placeMark(panel);
  }

  /** With the channel view open, grids leave it room on screen. */
  setChannelOpen(open) {
    this.channelOpen = open;
    this.fit();
  }

  fit() {
    for (const panel of [this.a, this.b]) this.size(panel);
  }

  size(panel) {
    if (!panel.natural) return;
    const [width, height] = panel.natural;
    const available = panel.image.closest('.gridwrap').clientWidth;
    const tall = window.innerHeight * (this.channelOpen ? 0.4 : 0.68);
    if (!available) return;
    const scale = Math.min(available / width, Math.max(tall, 160) / height);
    panel.image.style.width = `${Math.floor(width * scale)}px`;
    panel.image.style.height = `${Math.floor(height * scale)}px`;
    this.placeMark(panel);
  }

  placeMark(panel) {
    const box = this.channel === null || this.channel === undefined ? null : boxOf(panel.layout, this.channel);
    const image = panel.image;
    if (!box || !image.naturalWidth) {
      panel.mark.hidden = true;
      return;
    }
    const sx = image.clientWidth / image.naturalWidth;
    const sy = image.clientHeight / image.naturalHeight;
    const [y, x, h, w] = box;
    Object.assign(panel.mark.style, {
      left: `${x * sx}px`, top: `${y * sy}px`, width: `${w * sx}px`, height: `${h * sy}px`,
    });
    panel.mark.hidden = false;
  }

  showHover(panel, event) {
    this.hovered = {panel, clientX: event.clientX, clientY: event.clientY};
    const hit = tileAt(panel.image, panel.layout, event.clientX, event.clientY);
    if (!hit) {
      this.hover.hidden = true;
      return;
    }
    this.hover.textContent =
      `${this.layerName} \u00b7 ${this.unit} ${hit.channel} \u00b7 ${this.word} ${panel.image.dataset.step}`;
    this.hover.style.left = `${event.clientX + 14}px`;
    this.hover.style.top = `${event.clientY + 14}px`;
    this.hover.hidden = false;
  }
}
