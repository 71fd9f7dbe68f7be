// What the page knows, and its bounded caches.

import {getImage, isAbort} from './api.js';

const IMAGE_LIMIT = 600; // decoded grids kept (a long series of one layer, plus an overview)
const PIXEL_LIMIT = 48e6; // and at most this many decoded pixels (about 200 MB)
const TIMING_LIMIT = 1000;

export const state = {
  runs: [], // /runs: every run with its layers
  run: null, // entry of `runs`
  probe: 0,
  view: 'overview', // 'overview' | 'layer'
  layer: null, // entry of run.layers (layer view)
  step: null, // the step the person is on, kept across views
  following: true, // on the last step: stay on the last one as new steps come
  overview: null, // /overview body on screen
  series: null, // /steps body of the layer view: steps with keys, layouts
  index: 0, // position of the current step in series.steps
  compareIndex: 0, // position of the compared step
  channel: null, // channel followed in the channel view
  atlas: null, // /atlas body of that channel: its crops at every atlas step
  compareWith: null, // name of the run shown beside this one (view_compare.js), or null
  comparison: null, // /compare body on screen
  compareStep: null, // index into comparison.steps
};

/** A bounded ring of numbers: the newest `limit` values pushed. */
export class Ring {
  constructor(limit) {
    this.limit = limit;
    this.items = [];
    this.start = 0;
  }

  push(value) {
    if (this.items.length < this.limit) {
      this.items.push(value);
    } else {
      this.items[this.start] = value;
      this.start = (this.start + 1) % this.limit;
    }
  }

  values() {
    return this.items.slice(this.start).concat(this.items.slice(0, this.start));
  }

  clear() {
    this.items = [];
    this.start = 0;
  }

  get length() {
    return this.items.length;
  }
}

/** Milliseconds from a step change asked for to its grid on screen (read by the benchmark). */
export const timings = new Ring(TIMING_LIMIT);

/**
 * Decoded images by key, least recently used dropped first. An image's object
 * URL is revoked when it leaves the cache; a fetch that failed or was aborted
 * leaves nothing behind, so asking again tries again.
 */
export class ImageCache {
  constructor(limit = IMAGE_LIMIT, pixelLimit = PIXEL_LIMIT) {
    this.limit = limit;
    this.pixelLimit = pixelLimit;
    this.pixels = 0; // decoded pixels held
    this.entries = new Map(); // key -> {promise, value}
    this.onLoad = null; // (key, {url, image}) after each image arrives
  }

  /** Promise of {url, image}; fetched once per key. */
  get(key, signal) {
    let entry = this.entries.get(key);
    if (entry) {
      this.entries.delete(key); // most recently used goes last
      this.entries.set(key, entry);
      return entry.promise;
    }
    entry = {value: null};
    entry.promise = getImage(key, {signal}).then((value) => {
      if (this.entries.get(key) !== entry) {
        URL.revokeObjectURL(value.url); // dropped while on its way
        throw new DOMException('dropped from the cache', 'AbortError');
      }
      entry.value = value;
      this.pixels += value.image.naturalWidth * value.image.naturalHeight;
      this.trim(key);
      if (this.onLoad) this.onLoad(key, value);
      return value;
    }, (err) => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
      throw err;
    });
    this.entries.set(key, entry);
    this.trim(key);
    return entry.promise;
  }

  /** The decoded image if it is here already, else null. */
  peek(key) {
    const entry = this.entries.get(key);
    return entry ? entry.value : null;
  }

  has(key) {
    return this.entries.has(key);
  }

  /** Whether more images fit without pushing out others (preloading stops short of that). */
  room() {
    return this.entries.size < this.limit * 0.8 && this.pixels < this.pixelLimit * 0.8;
  }

  drop(key) {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    if (entry.value) {
      URL.revokeObjectURL(entry.value.url);
      this.pixels -= entry.value.image.naturalWidth * entry.value.image.naturalHeight;
    }
  }

  /** Drop the least recently used images until within the limits; never `keep`. */
  trim(keep = null) {
    for (const key of [...this.entries.keys()]) {
      if (this.entries.size <= this.limit && this.pixels <= this.pixelLimit) break;
      if (key !== keep) this.drop(key);
    }
  }
}

export const images = new ImageCache();

/** The decoded image of `key` (see ImageCache.get), or null when `signal` cancelled its fetch. */
export async function imageUnlessAborted(key, signal) {
  try {
    return await images.get(key, signal);
  } catch (err) {
    if (isAbort(err)) return null;
    throw err;
  }
}

/** Fetch `keys` a few at a time, in order, until `signal` aborts or the cache is nearly full. */
export async function preload(keys, signal, concurrency = 4) {
  const queue = keys.filter((key) => !images.has(key));
  const worker = async () => {
    while (queue.length && !signal.aborted && images.room()) {
      try {
        await images.get(queue.shift(), signal);
      } catch (err) {
        if (!isAbort(err)) throw err;
      }
    }
  };
  await Promise.all(Array.from({length: concurrency}, worker));
}

/** Index of `step` in `steps` (objects with .step or numbers), else the last before it, else 0. */
export function nearest(steps, step) {
  const value = (i) => (typeof steps[i] === 'number' ? steps[i] : steps[i].step);
  let i = steps.length - 1;
  while (i > 0 && value(i) > step) i -= 1;
  return Math.max(i, 0);
}

/** The entry of `steps` (from /atlas) at or before `step`, else null. */
export function atStepOrBefore(steps, step) {
  let found = null;
  for (const entry of steps) if (entry.step <= step) found = entry;
  return found;
}

/** The box [y, x, height, width] of `channel` in a layout from /steps, or null when it shows none. */
export function boxOf(layout, channel) {
  const i = layout ? layout.channels.indexOf(channel) : -1;
  return i < 0 ? null : layout.boxes[i];
}

/** [26, 26, 32] -> "26×26×32". */
export function describeShape(shape) {
  return Array.isArray(shape) ? shape.map((d) => (d === null ? '?' : d)).join('\u00d7') : '';
}

/** "epoch" or "step", after the run's step axis. */
export function stepWord(run = state.run) {
  return run && run.step_axis === 'global_step' ? 'step' : 'epoch';
}
