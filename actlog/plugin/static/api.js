// Data access: the plugin's JSON routes and its images, by opaque key.
//
// Failures come back as one of two kinds, because the page answers them
// differently: a NetworkError (TensorBoard could not be reached: restarting,
// the connection dropped) is transient and retried; an ApiError is the server
// saying no (a run that was removed, a step written again) and is shown.
// Anything else thrown near these calls is a bug in the page and is shown too.

export class NetworkError extends Error {
  constructor(message) {
    super(message);
    this.name = 'NetworkError';
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

/** True for the rejection of a request that was cancelled on purpose. */
export function isAbort(err) {
  return err && err.name === 'AbortError';
}

// Gateways answer these while TensorBoard behind them is down or restarting.
const TRANSIENT_STATUS = new Set([502, 503, 504]);

async function send(url, signal) {
  let response;
  try {
    response = await fetch(url, {signal});
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new NetworkError(`TensorBoard did not answer (${err.message})`);
  }
  if (TRANSIENT_STATUS.has(response.status)) {
    throw new NetworkError(`TensorBoard is unavailable (HTTP ${response.status})`);
  }
  return response;
}

/** GET a JSON route of this plugin (relative to the module's URL). */
export async function getJson(route, params = {}, {signal} = {}) {
  const response = await send(`${route}?${new URLSearchParams(params)}`, signal);
  let body;
  try {
    body = await response.json();
  } catch (err) {
    if (isAbort(err)) throw err;
    if (err instanceof TypeError) throw new NetworkError(`the answer to ${route} was cut short`);
    throw new ApiError(response.status, `${route} answered HTTP ${response.status}, not JSON`);
  }
  if (!response.ok) throw new ApiError(response.status, body.error || `HTTP ${response.status}`);
  return body;
}

/** The image a route handed out `key` for: {url (an object URL), image (decoded)}. */
export async function getImage(key, {signal} = {}) {
  const response = await send(`image?${new URLSearchParams({key})}`, signal);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new ApiError(response.status, body.error || `image: HTTP ${response.status}`);
  }
  const url = URL.createObjectURL(await response.blob());
  const image = new Image();
  image.src = url;
  try {
    await image.decode();
  } catch (err) {
    URL.revokeObjectURL(url);
    throw new ApiError(response.status, 'an image from the log could not be decoded');
  }
  return {url, image};
}

/**
 * One AbortController per purpose: `next()` cancels what the previous call
 * started (a superseded /steps, the image fetches of a layer left behind).
 */
export class Latest {
  constructor() {
    this.controller = null;
  }

  next() {
    this.abort();
    this.controller = new AbortController();
    return this.controller.signal;
  }

  abort() {
    if (this.controller) this.controller.abort();
  }
}
