/*
 * Building and updating elements: every element is made with createElement and every string
 * goes in as textContent (the Content-Security-Policy allows no inline script or style); the
 * setters touch the DOM only when a value changed, and syncRows keeps a table's rows across
 * refreshes.
 */

const SVG_NS = 'http://www.w3.org/2000/svg';

export const $ = (id) => document.getElementById(id);

/** An element: el('td', {className: 'num', text: '3', dataset: {col: 'calls'}}, child...). */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === 'text') node.textContent = value;
      else if (key === 'className') node.className = value;
      else if (key === 'dataset') Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  return node;
}

/** Sets the text of `node` only when it changed (keeps a user's text selection). */
export function setText(node, text) {
  text = text === null || text === undefined ? '' : String(text);
  if (node.textContent !== text) node.textContent = text;
}

export function setAttr(node, name, value) {
  if (value === null || value === undefined) {
    if (node.hasAttribute(name)) node.removeAttribute(name);
  } else if (node.getAttribute(name) !== String(value)) {
    node.setAttribute(name, String(value));
  }
}

export function setClass(node, className) {
  if (node.className !== className) node.className = className;
}

/** Puts `children` into `node` when `key` differs from what it holds now. */
export function fill(node, key, build) {
  if (node._key === key) return;
  node._key = key;
  node.replaceChildren(...build());
}

/**
 * Keeps `tbody` showing one row per item, in order, reusing rows by key (a refresh does not
 * rebuild the table, so a selection or a hovered row stays). `columns` are
 * {key, className, render(td, item)}.
 */
export function syncRows(tbody, items, keyOf, columns, onRow) {
  if (!tbody._rows) tbody._rows = new Map();
  const rows = tbody._rows;
  const seen = new Set();
  let index = 0;
  for (const item of items) {
    const key = String(keyOf(item));
    seen.add(key);
    let row = rows.get(key);
    if (!row) {
      row = el('tr');
      for (const column of columns) {
        row.append(el('td', { className: column.className || null, dataset: { col: column.key } }));
      }
      rows.set(key, row);
    }
    columns.forEach((column, i) => column.render(row.children[i], item));
    if (onRow) onRow(row, item);
    if (tbody.children[index] !== row) tbody.insertBefore(row, tbody.children[index] || null);
    index++;
  }
  for (const [key, row] of rows) {
    if (!seen.has(key)) {
      row.remove();
      rows.delete(key);
    }
  }
}

export const textCol = (key, get, className) => ({
  key,
  className,
  render: (td, item) => setText(td, get(item)),
});
