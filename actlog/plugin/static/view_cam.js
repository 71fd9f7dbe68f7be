// "Class map": under the probe image in the layer view, the probe's Grad-CAM map
// (ActivationLogger(cam=...)) at the slider's step, or the last one logged before it,
// with the class it was computed for. Hidden for a run without class maps.

import {getJson, isAbort} from './api.js';
import {el} from './dom.js';
import {atStepOrBefore, images} from './state.js';

export class ClassMapPanel {
  /** `onError(err)`: a failure the status line reports. */
  constructor(onError) {
    this.onError = onError;
    this.image = el('img', {id: 'actlog-cam-image', alt: 'class activation map'});
    this.caption = el('p', {id: 'actlog-cam-caption', className: 'cam-caption'});
    this.root = el('div', {id: 'actlog-cam', className: 'cam', hidden: true}, {}, [
      el('h4', {textContent: 'Class map (Grad-CAM)'}), this.image, this.caption,
    ]);
    this.body = null; // /class_maps of (run, probe)
    this.asked = null; // the request on its way: {run, probe, promise}
    this.controller = null;
  }

  /** The class map of `probe` in `run` at `step`; `word` names the step axis ("epoch"). */
  async show(run, probe, step, word) {
    let body = this.body;
    const stale = !body || body.run !== run || body.probe !== probe ||
        (body.steps.length && step > body.steps[body.steps.length - 1].step);
    try {
      if (stale) body = await this.load(run, probe);
      if (!body) return;
      const entry = atStepOrBefore(body.steps, step);
      this.root.hidden = !body.layer;
      if (!entry) {
        this.image.removeAttribute('src');
        delete this.root.dataset.step;
        this.caption.textContent = body.layer ? `no class map at or before ${word} ${step}` : '';
        return;
      }
      const {url} = await images.get(entry.key, this.controller.signal);
      if (this.body !== body) return; // another probe or run meanwhile
      this.image.src = url;
      this.root.dataset.step = String(entry.step);
      const how = body.classes === 'label' || body.classes === 'predicted' ? ` (${body.classes})` : '';
      this.caption.textContent = `class ${entry.class}${how}, layer ${body.layer}, ${word} ${entry.step}`;
    } catch (err) {
      if (!isAbort(err)) this.onError(err);
    }
  }

  /** /class_maps for (run, probe); one request at a time, the last asked wins. */
  async load(run, probe) {
    if (this.asked && this.asked.run === run && this.asked.probe === probe) return this.asked.promise;
    if (this.controller) this.controller.abort();
    this.controller = new AbortController();
    const promise = getJson('class_maps', {run, probe}, {signal: this.controller.signal}).then((body) => {
      if (this.asked && this.asked.promise === promise) {
        this.body = body;
        this.asked = null;
      }
      return this.body === body ? body : null;
    }, (err) => {
      if (this.asked && this.asked.promise === promise) this.asked = null;
      throw err;
    });
    this.asked = {run, probe, promise};
    return promise;
  }
}
