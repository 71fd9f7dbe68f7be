// Compare mode: two runs side by side on one layer and probe, at the step of the
// one slider. The slider runs over every step either run logged; a run that did
// not log that step shows its nearest earlier one, captioned with the step it
// really is (the backend's /compare says which, per step). Each column has the
// run's grid, the layer's statistics at that step and its atlas picture at or
// before it, so the two columns line up row by row.

import {formatNumber, sparkline} from './charts.js';
import {el, field, fillOptions} from './dom.js';
import {atStepOrBefore, imageUnlessAborted, images} from './state.js';

const STATS = ['mean', 'std', 'sparsity', 'dead_fraction', 'drift'];

class Column {
  constructor(which) {
    this.title = el('h4', {className: 'compare-run', id: `actlog-compare-run-${which}`});
    this.image = el('img', {id: `actlog-compare-${which}`, alt: `grid of run ${which}`, draggable: false});
    this.caption = el('span', {className: 'caption', id: `actlog-compare-caption-${which}`});
    this.stats = el('dl', {className: 'compare-stats', id: `actlog-compare-stats-${which}`});
    this.atlas = el('img', {id: `actlog-compare-atlas-${which}`, alt: `atlas of run ${which}`, hidden: true});
    this.atlasCaption = el('p', {className: 'atlas-step'});
    this.node = el('figure', {className: 'compare-column panel card'}, {'data-side': which}, [
      this.title,
      el('figcaption', {}, {}, [this.caption]),
      el('div', {className: 'gridwrap'}, {}, [this.image]),
      el('h4', {textContent: 'Statistics at this step'}), this.stats,
      el('h4', {textContent: 'Feature atlas'}), this.atlasCaption,
      el('div', {className: 'gridwrap'}, {}, [this.atlas]),
    ]);
  }
}

/** [lo, hi] over every finite value of both runs, 0 included (null: no values). */
function sharedRange(lists) {
  const values = lists.flat().filter((v) => v !== null && Number.isFinite(v));
  if (!values.length) return null;
  const lo = Math.min(0, ...values);
  const hi = Math.max(...values);
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

export class CompareView {
  /** `on` = {select(name or null)}. */
  constructor(on) {
    this.select = el('select', {id: 'actlog-compare-with'}, {'aria-label': 'compare with run'});
    this.field = field('Compare with', this.select);
    this.names = [];
    this.columns = [new Column('a'), new Column('b')];
    this.note = el('p', {id: 'actlog-compare-note', className: 'compare-note', hidden: true});
    this.root = el('section', {id: 'actlog-compare-view', className: 'compare-view', hidden: true}, {}, [
      this.note, el('div', {className: 'compare-columns'}, {}, this.columns.map((c) => c.node)),
    ]);
    this.select.addEventListener('change', () => {
      const i = this.select.selectedIndex;
      on.select(i > 0 ? this.names[i - 1] : null);
    });
  }

  /** The runs one may compare with (every run but the one shown); `chosen` or none selected. */
  setRuns(names, chosen) {
    this.names = names;
    const i = names.indexOf(chosen);
    fillOptions(this.select, ['none', ...names], i + 1);
  }

  /** A problem instead of the comparison (an answer of 400: another layer set, other probes). */
  setProblem(text) {
    this.note.textContent = text || '';
    this.note.hidden = !text;
    for (const column of this.columns) column.node.hidden = Boolean(text);
  }

  /**
   * Show slider step number `index` of `body` (/compare). Resolves once both grids are on
   * screen; `isCurrent()` false means the person moved on meanwhile and nothing is drawn.
   */
  async show(body, index, signal, isCurrent) {
    this.setProblem(null);
    const step = body.steps[index];
    const decoded = await Promise.all(body.sides.map((side) => {
      const at = side.at[index];
      return at === null ? {none: true} : imageUnlessAborted(side.grids[at].key, signal);
    }));
    if (decoded.includes(null) || !isCurrent()) return;
    await Promise.all(body.sides.map((side, i) => this.showSide(this.columns[i], side, body, index, step,
        decoded[i], signal, isCurrent)));
  }

  async showSide(column, side, body, index, step, decoded, signal, isCurrent) {
    const word = side.step_axis === 'global_step' ? 'step' : 'epoch';
    column.title.textContent = side.run;
    column.title.title = side.run;
    const at = side.at[index];
    if (at === null) {
      column.image.removeAttribute('src');
      delete column.image.dataset.step;
      column.caption.textContent = side.grids.length ?
        `no grid at or before ${word} ${step}: the first is at ${side.grids[0].step}` :
        `no grid of this layer for probe ${body.probe}`;
    } else {
      const shown = side.grids[at].step;
      column.image.src = decoded.url;
      column.image.style.width = `${decoded.image.naturalWidth * this.scale(body, index)}px`;
      await column.image.decode().catch(() => {});
      Object.assign(column.image.dataset, {step: String(shown), run: side.run, layer: body.layer,
        probe: String(body.probe)});
      column.caption.textContent = shown === step ? `${word} ${shown}` :
        `${word} ${shown} (its last at or before ${step})`;
    }
    column.image.dataset.at = String(step); // the slider's step this column was drawn for
    column.stats.textContent = '';
    const shownStep = at === null ? null : side.grids[at].step;
    const domain = [body.steps[0], body.steps[body.steps.length - 1]];
    for (const stat of STATS) {
      const values = side.scalars[stat];
      if (!values) continue;
      const value = shownStep !== null && shownStep in values ? formatNumber(values[shownStep]) : '\u2013';
      // Both columns' sparklines of a statistic share one scale: the heights compare.
      const range = sharedRange(body.sides.map((s) => Object.values(s.scalars[stat] || {})));
      const series = {steps: Object.keys(values).map(Number), values: Object.values(values)};
      column.stats.append(el('dt', {textContent: stat.replace('_', ' ')}),
          el('dd', {textContent: value}, {'data-stat': stat}),
          el('dd', {className: 'compare-spark'}, {}, [
            sparkline({series, domain, current: shownStep, color: '#f57c00', range}),
          ]));
    }
    await this.showAtlas(column, side, step, word, signal, isCurrent);
  }

  async showAtlas(column, side, step, word, signal, isCurrent) {
    const entry = atStepOrBefore(side.atlas, step);
    if (!entry) {
      column.atlas.hidden = true;
      column.atlasCaption.textContent = side.atlas.length ?
        `none at or before ${word} ${step}` : 'no feature atlas logged for this layer';
      return;
    }
    const decoded = await imageUnlessAborted(entry.key, signal);
    if (!decoded || !isCurrent()) return;
    column.atlas.src = decoded.url;
    column.atlas.hidden = false;
    column.atlas.dataset.step = String(entry.step);
    column.atlasCaption.textContent = `top ${entry.k} of ${entry.pool} at ${word} ${entry.step}`;
  }

  /** One whole upscaling factor for both grids, so equal tiles look equal in both columns. */
  scale(body, index) {
    const widths = this.columns.map((c) => c.node.clientWidth - 24).filter((w) => w > 0);
    const natural = body.sides.map((side) => {
      const at = side.at[index];
      const image = at === null ? null : images.peek(side.grids[at].key);
      return image ? image.image.naturalWidth : 1;
    });
    if (!widths.length) return 1;
    return Math.max(1, Math.floor(Math.min(...widths) / Math.max(...natural)));
  }
}
