// Live updates: poll while the page is visible, and never swallow an error.
//
// actlog logs while a model trains, and TensorBoard's reload button does not
// reach this iframe, so the page asks for new steps itself. What went wrong is
// always on the status line: a transient network failure is retried with a
// growing pause ("reconnecting"), an error the server answered is shown, and
// an exception of the page's own (a bug) is shown as such, with the console
// holding its stack.

import {ApiError, NetworkError, isAbort} from './api.js';

export const POLL_MS = 5000;
const RETRY_MS = [1000, 2000, 4000, 8000, 15000];

/** What kind of failure `err` is, and how to say it. */
export function describe(err) {
  if (err instanceof NetworkError) return {kind: 'network', message: err.message};
  if (err instanceof ApiError) return {kind: 'api', message: err.message};
  const name = err && err.name ? err.name : 'Error';
  return {kind: 'bug', message: `Dashboard error (${name}): ${err && err.message ? err.message : err}`};
}

/**
 * Show an error on the status line; a network failure outside the poll loop
 * (the poll retries those) is only noted. Aborted requests are not errors.
 */
export function report(status, err) {
  if (isAbort(err)) return;
  const {kind, message} = describe(err);
  if (kind === 'bug') console.error(err);
  status.set(kind === 'network' ? 'reconnecting' : 'error', message);
}

/** Errors nobody caught (an event handler's, a forgotten promise's) reach the status line. */
export function reportUncaught(status) {
  window.addEventListener('error', (event) => report(status, event.error || new Error(event.message)));
  window.addEventListener('unhandledrejection', (event) => report(status, event.reason));
}

export class Poller {
  /**
   * `tick()` asks for what is new and resolves to a line for the status
   * (e.g. "12 steps"); `status.set(kind, text)` shows it.
   */
  constructor(tick, status, interval = POLL_MS) {
    this.tick = tick;
    this.status = status;
    this.interval = interval;
    this.timer = null;
    this.busy = false;
    this.failures = 0;
  }

  start() {
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) this.now();
    });
    this.schedule(this.interval);
  }

  /** Poll at once (unless a poll is on its way). */
  now() {
    if (this.busy) return;
    clearTimeout(this.timer);
    this.poll();
  }

  schedule(ms) {
    clearTimeout(this.timer);
    // A hidden page schedules nothing; becoming visible polls again.
    if (!document.hidden) this.timer = setTimeout(() => this.poll(), ms);
  }

  /** All is well: say so, with `line` and the time of this look. */
  ok(line) {
    const time = new Date().toLocaleTimeString([], {hour12: false});
    this.status.set('live', `Live \u00b7 ${line ? `${line} \u00b7 ` : ''}checked ${time}`);
  }

  async poll() {
    if (document.hidden || this.busy) return;
    this.busy = true;
    let next = this.interval;
    try {
      this.ok(await this.tick());
      this.failures = 0;
    } catch (err) {
      if (!isAbort(err)) {
        const {kind, message} = describe(err);
        if (kind === 'network') {
          next = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
          this.failures += 1;
          this.status.set('reconnecting',
              `${message}: reconnecting in ${Math.round(next / 1000)} s (attempt ${this.failures})\u2026`);
        } else {
          if (kind === 'bug') console.error(err);
          this.status.set('error', message);
        }
      }
    } finally {
      this.busy = false;
      this.schedule(next);
    }
  }
}
