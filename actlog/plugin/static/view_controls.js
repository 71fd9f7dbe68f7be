// The toolbar: run, probe, view and layer pickers, the step slider, and the
// status line. It shows what it is told and reports what the person does;
// it holds no state of its own.

import {el, field, fillOptions} from './dom.js';

export class Controls {
  /** `on` = {run(i), probe(i), layer(i), view(name), step(index, started)}. */
  constructor(on) {
    this.run = el('select', {id: 'actlog-run'}, {'aria-label': 'run'});
    this.probe = el('select', {id: 'actlog-probe'}, {'aria-label': 'probe'});
    this.probeThumb = el('img', {id: 'actlog-probe-thumb', className: 'probe-thumb', alt: '', hidden: true});
    this.layer = el('select', {id: 'actlog-layer'}, {'aria-label': 'layer'});
    this.overviewButton = el('button', {id: 'actlog-view-overview', type: 'button', textContent: 'Overview'});
    this.layerButton = el('button', {id: 'actlog-view-layer', type: 'button', textContent: 'Layer'});
    this.slider = el('input', {id: 'actlog-step-slider', type: 'range', min: 0, max: 0, value: 0},
        {'aria-label': 'step'});
    this.prev = el('button', {id: 'actlog-prev', type: 'button', className: 'icon', textContent: '\u2039',
      title: 'previous step (\u2190)'}, {'aria-label': 'previous step'});
    this.next = el('button', {id: 'actlog-next', type: 'button', className: 'icon', textContent: '\u203a',
      title: 'next step (\u2192)'}, {'aria-label': 'next step'});
    this.stepLabel = el('span', {id: 'actlog-step-label', className: 'step-label'});
    this.status = el('div', {id: 'actlog-status', className: 'status'}, {role: 'status'});

    this.root = el('header', {className: 'toolbar'}, {}, [
      el('div', {className: 'pickers'}, {}, [
        field('Run', this.run),
        el('div', {className: 'probe-field'}, {}, [field('Probe', this.probe), this.probeThumb]),
        el('div', {className: 'toggle'}, {role: 'group', 'aria-label': 'view'},
            [this.overviewButton, this.layerButton]),
        field('Layer', this.layer),
        this.status,
      ]),
      el('div', {className: 'timeline'}, {}, [this.prev, this.slider, this.next, this.stepLabel]),
    ]);

    this.run.addEventListener('change', () => on.run(this.run.selectedIndex));
    this.probe.addEventListener('change', () => on.probe(this.probe.selectedIndex));
    this.layer.addEventListener('change', () => on.layer(this.layer.selectedIndex));
    this.overviewButton.addEventListener('click', () => on.view('overview'));
    this.layerButton.addEventListener('click', () => on.view('layer'));
    this.slider.addEventListener('input', () => on.step(Number(this.slider.value), performance.now()));
    this.prev.addEventListener('click', () => on.step(Number(this.slider.value) - 1, performance.now()));
    this.next.addEventListener('click', () => on.step(Number(this.slider.value) + 1, performance.now()));
    document.addEventListener('keydown', (event) => {
      const tag = event.target && event.target.tagName;
      // The slider moves itself on arrow keys and selects use them for options.
      if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
      const move = {ArrowLeft: -1, ArrowRight: 1}[event.key];
      if (!move) return;
      event.preventDefault();
      on.step(Number(this.slider.value) + move, performance.now());
    });
  }

  setRuns(names, selected) {
    fillOptions(this.run, names, selected);
  }

  setProbes(count, selected) {
    fillOptions(this.probe, Array.from({length: count}, (_, p) => `probe ${p}`), selected);
  }

  /** The probe image beside its picker (null: the probes are not image-like). */
  setProbeImage(url) {
    this.probeThumb.hidden = !url;
    if (url) this.probeThumb.src = url;
  }

  setLayers(names, selected) {
    fillOptions(this.layer, names, selected);
  }

  selectLayer(i) {
    this.layer.selectedIndex = i;
  }

  setView(view) {
    this.overviewButton.setAttribute('aria-pressed', String(view === 'overview'));
    this.layerButton.setAttribute('aria-pressed', String(view === 'layer'));
  }

  /** The slider over `steps` (numbers), at `index`; `word` is "epoch" or "step". */
  setSteps(steps, index, word) {
    const last = Math.max(steps.length - 1, 0);
    this.slider.max = String(last);
    this.slider.value = String(index);
    this.slider.disabled = steps.length < 2;
    this.slider.style.setProperty('--fill', `${last ? index / last * 100 : 100}%`);
    this.prev.disabled = index <= 0;
    this.next.disabled = index >= last;
    this.stepLabel.textContent = steps.length ?
      `${word} ${steps[index]}  (${index + 1} of ${steps.length})` : `no ${word}s logged yet`;
  }

  /** One line of news: kind 'live' | 'info' | 'reconnecting' | 'error'. */
  set(kind, text) {
    this.status.dataset.kind = kind;
    this.status.textContent = text;
    this.status.title = text;
  }
}
