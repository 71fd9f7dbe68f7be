// Building DOM nodes. The one rule of this dashboard: a string that comes from
// a log (run and layer names are chosen by users, and may look like HTML)
// enters the page as `textContent`, `value` or `title`, never through
// `innerHTML` or any other HTML parser. These helpers only ever do that.

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An element; `props` are DOM properties (textContent, className, ...), `attrs` attributes. */
export function el(tag, props = {}, attrs = {}, children = []) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) if (child) node.appendChild(child);
  return node;
}

/** An SVG element; `text`, when given, becomes its textContent. */
export function svg(tag, attrs = {}, text = undefined) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

/** A labelled form field, the way TensorBoard's settings show one. */
export function field(label, control) {
  return el('label', {className: 'field'}, {}, [el('span', {textContent: label}), control]);
}

/** Replace a <select>'s options with `labels` (values are the indexes). */
export function fillOptions(select, labels, selected = 0) {
  select.textContent = '';
  labels.forEach((label, i) => {
    select.appendChild(el('option', {value: String(i), textContent: String(label)}));
  });
  select.selectedIndex = Math.min(selected, labels.length - 1);
}

/** Watch an element's width; `callback()` after it changed (coalesced per frame). */
export function onResize(node, callback) {
  let width = -1;
  let pending = false;
  new ResizeObserver((entries) => {
    const now = Math.round(entries[entries.length - 1].contentRect.width);
    if (now === width || pending) return;
    width = now;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      callback();
    });
  }).observe(node);
}
