/*
 * Switchboard admin: operations views (Stats, Broadcasts, Webhooks, API keys).
 *
 * A classic script, loaded with `defer` after admin.js, using only the core
 * API on window.SB (api, can, el, view, onEvent, navigate, toast, fmtTime,
 * fmtMoney). Styles: admin-ops.css (every view's root is `div.ops`).
 * No server data is ever put into innerHTML: text goes in as text nodes.
 *
 * Views (hash route → permission):
 *   #/stats[/24h|7d|30d]  stats:read       figures and charts
 *   #/broadcasts          telegram:send    list, "New broadcast" composer
 *   #/broadcasts/new      telegram:send    the list with the composer open
 *   #/broadcasts/<id>     telegram:send    one broadcast, live progress
 *   #/webhooks            webhooks:manage  endpoints, "New endpoint" form
 *   #/webhooks/<id>       webhooks:manage  one endpoint
 *   #/api-keys            api_keys:manage  keys, create, revoke
 *
 * Hooks tests may rely on (labels are <label for> of their control, so
 * Playwright's getByLabel finds them; button texts are exact):
 *
 * Every list row: <tr data-id="<entity id>"> (webhook endpoints: endpoint
 * id; deliveries: event id; broadcasts: broadcast id; recipients: user id;
 * API keys: key id). Messages: elements with role="status".
 * A one-time secret: [data-secret] holding a read-only input (label
 * "Signing secret" or "API key") and a button "Copy".
 *
 * Stats (the landing view with stats:read): select "Period" (options
 *   "24 h", "7 d", "30 d"); button "Refresh". One GET /admin/stats per
 *   load: 24 h → bucket=hour (24 UTC hours, the last one partial), 7 d and
 *   30 d → bucket=day (7 or 30 UTC days, the last one partial).
 *   Figures [data-stat="users_total|users_new|users_blocked|
 *   subscriptions_active|tickets_open|tickets_opened|payments_completed|
 *   payments_failed|events|revenue.<CUR>"] ([data-stat="revenue"] when there
 *   was none; the value in .ops-figure-value);
 *   charts <figure data-chart="events|revenue-<CUR>|tickets-opened|
 *   tickets-status|users-new|payments-completed"> (per hour or per day of
 *   the series, one revenue chart per currency; tickets-status: by status
 *   now; [data-chart="revenue-none"] is a paragraph when there was no
 *   revenue) holding <svg role="img" aria-label> with <title>/<desc>, and a
 *   "Data" <details> table.
 *
 * Webhooks list: button "New endpoint" opens a form with labels "URL",
 *   "Name" (optional: the URL's host), "Event types" (comma-separated),
 *   "Description"; button "Create endpoint" (and "Cancel"). The answer's
 *   secret is shown once in [data-secret] ("Signing secret"), button "Done".
 *   Rows link to #/webhooks/<id>.
 * Webhook detail: buttons "Enable" / "Disable", "Send test event" (result
 *   in [data-test-result]), "Show secret", "Delete endpoint" (confirm());
 *   label "Grace seconds" + button "Rotate secret" (new secret in
 *   [data-secret]); deliveries: select "Delivery status", button "Refresh",
 *   rows data-id=<event id> with a nested attempts table (rows
 *   [data-attempt="<n>"]: time, result, response code, duration, error) and
 *   a button "Resend"; recover: labels "Since", "Until", button "Recover
 *   failed"; backfill: labels "From time", "After cursor", "Rate (per
 *   second)", button "Backfill"; its state in [data-backfill] with
 *   [data-backfill-status], a <progress> and [data-backfill-percent]
 *   ("42 %"), polled every 2 s while running, button "Cancel backfill".
 *
 * Broadcasts list: button "New broadcast" opens the composer; rows have
 *   [data-broadcast-status="<id>"], <progress data-broadcast-id="<id>"> and
 *   [data-percent-for="<id>"] ("37 %"), all updated live.
 * Composer: labels "Text", "Parse mode" (None / HTML / MarkdownV2),
 *   "Media type", "Media URL", "Buttons", "Audience" (options "All users",
 *   "User ids", "Telegram ids", "Filter"), "User ids", "Telegram ids",
 *   "Subscription", "Language", "Registered after", "Send at",
 *   "Paid broadcast" (checkbox); preview in [data-preview] (text in
 *   [data-preview-text], each button a [data-preview-button]); button
 *   "Count audience" (answer in [data-audience-count]: total in
 *   [data-audience-total], reasons [data-left-out="no_chat|bot_blocked|
 *   blocked|not_found"]); button "Send broadcast" (confirm(), then goes to
 *   #/broadcasts/<id>).
 * Broadcast detail: [data-broadcast-status="<id>"], <progress
 *   data-broadcast-id="<id>"> with [data-percent-for="<id>"] ("100 %"),
 *   counts [data-count="total|queued|sent|failed|blocked|unknown|
 *   cancelled"], live from broadcast.started/progress/completed/cancelled;
 *   button "Cancel broadcast" while scheduled or running; recipients:
 *   select "Recipient status", button "Refresh", pages "Previous"/"Next".
 *
 * API keys: label "Name", checkboxes labelled by their scope
 *   ("events:read — …"; only scopes an API key may carry and the caller
 *   has), button "Create API key"; secret once in [data-secret] ("API
 *   key"); rows with a button "Revoke" (confirm()).
 */
(function () {
  'use strict';

  const SB = window.SB;
  if (!SB || typeof SB.view !== 'function' || typeof SB.el !== 'function') return;

  const API = '/api/v1/admin';
  const DASH = '—';
  const SVGNS = 'http://www.w3.org/2000/svg';

  // ------------------------------------------------------------ helpers

  let uidCount = 0;
  const uid = (prefix) => `ops-${prefix || 'f'}-${++uidCount}`;

  const PROPS = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'readOnly', 'open']);

  function flat(list, out) {
    for (const kid of list) {
      if (kid === null || kid === undefined || kid === false || kid === true) continue;
      if (Array.isArray(kid)) flat(kid, out);
      else out.push(typeof kid === 'number' ? String(kid) : kid);
    }
    return out;
  }

  /** SB.el for the element, its class and handlers; the other attributes and
   *  the boolean/value properties are set here, so `false` never becomes
   *  the string "false". */
  function h(tag, attrs, ...kids) {
    const pass = {};
    const attrsLater = [];
    const propsLater = [];
    if (attrs) {
      for (const [key, value] of Object.entries(attrs)) {
        if (value === undefined || value === null || value === false) continue;
        if (key === 'class' || (key.startsWith('on') && typeof value === 'function')) pass[key] = value;
        else if (PROPS.has(key)) propsLater.push([key, value]);
        else attrsLater.push([key, value]);
      }
    }
    const el = SB.el(tag, pass, ...flat(kids, []));
    for (const [key, value] of attrsLater) el.setAttribute(key, value === true ? '' : String(value));
    for (const [key, value] of propsLater) el[key] = value;
    return el;
  }

  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) el.setAttribute(key, String(value));
    }
    for (const kid of flat(kids, [])) el.appendChild(typeof kid === 'string' ? document.createTextNode(kid) : kid);
    return el;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function time(iso) {
    if (!iso) return DASH;
    try {
      return SB.fmtTime(iso);
    } catch (_) {
      return String(iso);
    }
  }

  function num(value) {
    return typeof value === 'number' && Number.isFinite(value) ? value.toLocaleString() : DASH;
  }

  function money(amount, currency) {
    try {
      return SB.fmtMoney(amount, currency);
    } catch (_) {
      return `${amount} ${currency}`;
    }
  }

  function cap(text) {
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
  }

  function plural(count, one, many) {
    return `${num(count)} ${count === 1 ? one : many}`;
  }

  function qs(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== '') search.set(key, String(value));
    }
    return search.toString();
  }

  function splitList(text) {
    return text.split(',').map((s) => s.trim()).filter(Boolean);
  }

  function splitIds(text) {
    return text.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
  }

  /** An error found before asking the server, shaped like SB.ApiError. */
  class LocalError extends Error {
    constructor(detail, field) {
      super(detail);
      this.detail = detail;
      this.field = field;
    }
  }

  function errText(error) {
    if (!error) return 'Something went wrong.';
    if (typeof error === 'string') return error;
    if (error.detail) return String(error.detail);
    if (error.message) return String(error.message);
    return String(error);
  }

  /** [[field, message]] from an ApiError's per-field errors (an object or a
   *  list) or a single `field`. */
  function fieldErrors(error) {
    const out = [];
    const errs = error && error.errors;
    if (Array.isArray(errs)) {
      for (const item of errs) {
        if (item && typeof item === 'object') out.push([String(item.field || item.name || ''), String(item.detail || item.message || '')]);
      }
    } else if (errs && typeof errs === 'object') {
      for (const [key, value] of Object.entries(errs)) out.push([key, Array.isArray(value) ? value.join('; ') : String(value)]);
    }
    if (!out.length && error && typeof error.field === 'string') out.push([error.field, '']);
    return out;
  }

  function msgBox() {
    return h('p', { class: 'ops-msg', role: 'status', 'aria-live': 'polite' });
  }

  function say(box, text, kind) {
    box.textContent = text || '';
    box.classList.toggle('error', kind === 'error');
    box.classList.toggle('ok', kind === 'ok');
  }

  /** Shows an error's detail in `box`; marks the inputs of `fields`
   *  ({apiField: element}) it names. */
  function fail(box, error, fields) {
    let text = errText(error);
    if (fields) {
      let first = null;
      for (const [field, message] of fieldErrors(error)) {
        const key = Object.keys(fields).find((k) => field === k || field.startsWith(`${k}.`) || field.startsWith(`${k}[`));
        const el = key && fields[key];
        if (el) {
          el.setAttribute('aria-invalid', 'true');
          if (!first) first = el;
        }
        if (message && !text.includes(message)) text += ` (${field}: ${message})`;
      }
      if (first && typeof first.focus === 'function') first.focus();
    }
    if (box) say(box, text, 'error');
    else SB.toast(text, 'error');
  }

  function unmark(fields) {
    if (!fields) return;
    for (const el of Object.values(fields)) if (el) el.removeAttribute('aria-invalid');
  }

  /** An event handler that runs `fn` with `button` disabled, shows any
   *  error in `box` (never rethrows), and prevents a form's submission. */
  function act(button, box, fn, fields) {
    return async (event) => {
      if (event && event.type === 'submit') event.preventDefault();
      if (button && button.disabled) return;
      if (button) button.disabled = true;
      unmark(fields);
      if (box) say(box, '');
      try {
        await fn(event);
      } catch (error) {
        fail(box, error, fields);
      } finally {
        if (button) button.disabled = false;
      }
    };
  }

  /** A datetime-local value as RFC 3339 (null when empty). */
  function isoFromLocal(value, label, field) {
    if (!value) return null;
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) throw new LocalError(`${label}: not a valid date and time.`, field);
    return date.toISOString();
  }

  /** GET that answers null for a 404 (an expected absence). */
  async function getOrNull(path) {
    try {
      return await SB.api('GET', path, undefined, { quiet404: true });
    } catch (error) {
      if (error && error.status === 404) return null;
      throw error;
    }
  }

  /** A labelled control: <label for> + control + optional hint. */
  function field(label, control, hint) {
    if (!control.id) control.id = uid('f');
    const kids = [h('label', { for: control.id }, label), control];
    if (hint) {
      const hintId = uid('hint');
      control.setAttribute('aria-describedby', hintId);
      kids.push(h('small', { class: 'ops-hint', id: hintId }, hint));
    }
    return h('div', { class: 'ops-field' }, kids);
  }

  /** A table; a top-level one is also `stack` (admin.css shows its rows as
   *  cards on a phone, each cell labelled by its column's data-label). */
  function table(caption, heads, rows, extraClass) {
    const nested = extraClass === 'ops-nested';
    for (const row of flat([rows], [])) {
      if (!(row instanceof Element)) continue;
      Array.from(row.children).forEach((cell, i) => {
        if (heads[i] && !cell.hasAttribute('data-label')) cell.setAttribute('data-label', heads[i]);
      });
    }
    return h('div', { class: 'ops-scroll' },
      h('table', { class: ['ops-table', nested ? 'ops-nested' : 'stack', !nested && extraClass].filter(Boolean).join(' ') },
        caption && h('caption', { class: 'visually-hidden' }, caption),
        h('thead', {}, h('tr', {}, heads.map((head) => h('th', { scope: 'col' }, head)))),
        h('tbody', {}, rows)));
  }

  function pager(offset, limit, total, go) {
    if (!total) return null;
    const from = offset + 1;
    const to = Math.min(offset + limit, total);
    if (offset === 0 && total <= limit) return h('p', { class: 'muted ops-small' }, `${num(total)} in all`);
    return h('nav', { class: 'ops-pager', 'aria-label': 'Pages' },
      h('button', { type: 'button', disabled: offset <= 0, onclick: () => go(Math.max(0, offset - limit)) }, 'Previous'),
      h('span', {}, `${num(from)}–${num(to)} of ${num(total)}`),
      h('button', { type: 'button', disabled: to >= total, onclick: () => go(offset + limit) }, 'Next'));
  }

  const STATUS_KIND = {
    delivered: 'ok', sent: 'ok', completed: 'ok', enabled: 'ok',
    failed: 'bad', blocked: 'bad', cancelled: 'bad', disabled: 'bad',
    pending: 'warn', queued: 'warn', scheduled: 'warn', unknown: 'warn',
    running: 'run',
  };

  function badge(status) {
    return h('span', { class: `ops-badge ops-st-${STATUS_KIND[status] || 'none'}` }, String(status));
  }

  function dl(pairs, extraClass) {
    const list = h('dl', { class: `ops-dl ${extraClass || ''}`.trim() });
    for (const pair of pairs) {
      if (!pair) continue;
      const [term, value, attrs] = pair;
      list.append(h('div', Object.assign({ class: 'ops-dl-item' }, attrs || {}), h('dt', {}, term), h('dd', {}, value)));
    }
    return list;
  }

  function errorP(error) {
    return h('p', { class: 'error', role: 'alert' }, errText(error));
  }

  function backLink(href, text) {
    return h('p', { class: 'ops-back' }, h('a', { href }, `← ${text}`));
  }

  function hostOf(url) {
    try {
      return new URL(url).host || url.slice(0, 200);
    } catch (_) {
      return url.slice(0, 200);
    }
  }

  /** A secret shown once: a read-only input, a "Copy" button (the
   *  clipboard, or the text selected for Ctrl+C when it is not allowed). */
  function secretBox(label, secret, note) {
    const input = h('input', { type: 'text', class: 'ops-secret-input', readOnly: true, value: secret, spellcheck: 'false', autocomplete: 'off' });
    const status = h('span', { class: 'muted ops-small', role: 'status', 'aria-live': 'polite' });
    const selectIt = () => {
      input.focus();
      input.select();
      input.setSelectionRange(0, input.value.length);
    };
    const copy = h('button', {
      type: 'button',
      onclick: async () => {
        try {
          if (navigator.clipboard && window.isSecureContext) {
            await navigator.clipboard.writeText(secret);
            status.textContent = 'Copied to the clipboard.';
            return;
          }
        } catch (_) {
          // Not allowed here: fall back to selecting the text.
        }
        selectIt();
        let copied = false;
        try {
          copied = document.execCommand('copy');
        } catch (_) {
          copied = false;
        }
        status.textContent = copied ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C (⌘C) to copy.';
      },
    }, 'Copy');
    input.addEventListener('focus', () => input.select());
    return h('div', { class: 'ops-secret', 'data-secret': '' },
      field(label, input),
      h('div', { class: 'ops-toolbar' }, copy, status),
      note && h('p', { class: 'muted ops-small' }, note));
  }

  /** Cleanups of a view's current render (timers, subscriptions). */
  function lifecycle() {
    const fns = [];
    return {
      add(fn) {
        if (typeof fn === 'function') fns.push(fn);
      },
      reset() {
        while (fns.length) {
          const fn = fns.pop();
          try {
            fn();
          } catch (_) {
            // nothing to do
          }
        }
      },
    };
  }

  /** A fresh root for a render; its isConnected says whether the view is
   *  still showing (async work stops writing once it is not). */
  function mount(main, life) {
    life.reset();
    clear(main);
    const root = h('div', { class: 'ops' });
    main.appendChild(root);
    return root;
  }

  function register(name, title, permission, body) {
    const life = lifecycle();
    SB.view(name, {
      title,
      permission,
      render: async (main, params) => {
        const root = mount(main, life);
        try {
          await body(root, Array.isArray(params) ? params : [], life);
        } catch (error) {
          if (root.isConnected) root.append(errorP(error));
        }
      },
      dispose: () => life.reset(),
    });
  }

  function subscribe(life, handler) {
    if (typeof SB.onEvent !== 'function') return;
    const off = SB.onEvent((envelope) => {
      try {
        handler(envelope);
      } catch (_) {
        // A bad event must not break the core's feed.
      }
    });
    life.add(off);
  }

  // ------------------------------------------------------------ charts

  let chartCount = 0;

  function niceStep(raw) {
    if (!(raw > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(raw));
    const f = raw / power;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
  }

  /** A bar chart as inline SVG with a <title>, a <desc>, axes, axis labels
   *  and the figures as a table in a "Data" <details>. */
  function barChart({ key, title, xLabel, yLabel, labels, values, fmt }) {
    const format = fmt || ((v) => num(v));
    // Drawn at about the size it is shown, so its text stays legible.
    const narrow = typeof window.matchMedia === 'function' && window.matchMedia('(max-width: 40rem)').matches;
    const W = narrow ? 360 : 640;
    const H = narrow ? 230 : 250;
    const m = { l: 74, r: 10, t: 28, b: 54 };
    const iw = W - m.l - m.r;
    const ih = H - m.t - m.b;
    const count = values.length;
    const max = Math.max(0, ...values);
    const step = Math.max(1, niceStep(max / 4));
    const top = step * 4;
    const id = ++chartCount;
    const titleId = `ops-chart-${id}-t`;
    const descId = `ops-chart-${id}-d`;
    const total = values.reduce((a, b) => a + b, 0);
    let peak = 0;
    values.forEach((v, i) => { if (v > values[peak]) peak = i; });
    const summary = count
      ? `${labels[0]} to ${labels[count - 1]}: total ${format(total)}; highest ${format(values[peak] || 0)} (${labels[peak]}).`
      : 'No data.';

    const root = svg('svg', {
      class: 'ops-chart-svg',
      viewBox: `0 0 ${W} ${H}`,
      role: 'img',
      'aria-label': title,
      'aria-describedby': descId,
      preserveAspectRatio: 'xMidYMid meet',
    }, svg('title', { id: titleId }, title), svg('desc', { id: descId }, summary));

    for (let i = 0; i <= 4; i++) {
      const y = m.t + ih - (ih * i) / 4;
      root.append(
        svg('line', { class: i === 0 ? 'ops-axis' : 'ops-gridline', x1: m.l, x2: W - m.r, y1: y, y2: y }),
        svg('text', { class: 'ops-tick', x: m.l - 6, y: y + 4, 'text-anchor': 'end' }, format(step * i)));
    }
    root.append(svg('line', { class: 'ops-axis', x1: m.l, x2: m.l, y1: m.t, y2: m.t + ih }));

    const slot = count ? iw / count : iw;
    const gap = Math.min(4, slot * 0.2);
    const every = Math.max(1, Math.ceil(count / (narrow ? 5 : 8)));
    values.forEach((value, i) => {
      const height = top ? (ih * value) / top : 0;
      const x = m.l + i * slot + gap / 2;
      root.append(svg('rect', {
        class: 'ops-bar',
        x: x.toFixed(2),
        y: (m.t + ih - height).toFixed(2),
        width: Math.max(1, slot - gap).toFixed(2),
        height: height.toFixed(2),
      }, svg('title', {}, `${labels[i]}: ${format(value)}`)));
      if (i % every === 0) {
        root.append(svg('text', { class: 'ops-tick', x: (m.l + i * slot + slot / 2).toFixed(2), y: m.t + ih + 16, 'text-anchor': 'middle' }, labels[i]));
      }
    });
    root.append(
      svg('text', { class: 'ops-axis-label', x: m.l + iw / 2, y: H - 8, 'text-anchor': 'middle' }, xLabel),
      svg('text', { class: 'ops-axis-label', x: 4, y: 14, 'text-anchor': 'start' }, `↑ ${yLabel}`));

    const data = h('details', { class: 'ops-chart-data' },
      h('summary', {}, 'Data'),
      table(title, [xLabel, yLabel], labels.map((label, i) => h('tr', {}, h('td', {}, label), h('td', { class: 'ops-num' }, format(values[i]))))));

    return h('figure', { class: 'ops-chart', 'data-chart': key },
      h('figcaption', {}, title), root, data);
  }

  // ------------------------------------------------------------ stats

  // One GET /admin/stats per refresh, with `bucket`: its `series` has one
  // row per UTC hour or day of the period, oldest first.
  const PERIODS = {
    '24h': { label: '24 h', bucket: 'hour', count: 24 },
    '7d': { label: '7 d', bucket: 'day', count: 7 },
    '30d': { label: '30 d', bucket: 'day', count: 30 },
  };

  /** The start of the period: `count` whole UTC hours (or days), the last
   *  one the current (partial) one. */
  function periodStart(spec, now) {
    const start = new Date(now.getTime());
    if (spec.bucket === 'hour') {
      start.setUTCMinutes(0, 0, 0);
      start.setUTCHours(start.getUTCHours() - (spec.count - 1));
    } else {
      start.setUTCHours(0, 0, 0, 0);
      start.setUTCDate(start.getUTCDate() - (spec.count - 1));
    }
    return start;
  }

  /** A bucket's label: the local hour, or the UTC day (days are UTC). */
  function bucketLabel(spec, iso) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return spec.bucket === 'hour'
      ? date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : date.toLocaleDateString([], { month: 'short', day: 'numeric', timeZone: 'UTC' });
  }

  function figure(key, label, value) {
    return h('div', { class: 'ops-figure', 'data-stat': key },
      h('div', { class: 'ops-figure-label' }, label),
      h('div', { class: 'ops-figure-value' }, value));
  }

  const asCount = (value) => (typeof value === 'number' && Number.isFinite(value) ? value : 0);

  async function statsView(root, params) {
    let period = PERIODS[params[0]] ? params[0] : '7d';
    const select = h('select', { id: uid('period') },
      Object.entries(PERIODS).map(([key, spec]) => h('option', { value: key }, spec.label)));
    select.value = period;
    const refresh = h('button', { type: 'button' }, 'Refresh');
    const msg = msgBox();
    const range = h('p', { class: 'muted' });
    const figures = h('div', { class: 'ops-figures' });
    const charts = h('div', { class: 'ops-charts' });
    root.append(
      h('h1', {}, 'Stats'),
      h('div', { class: 'ops-toolbar' }, h('label', { for: select.id, class: 'ops-inline-label' }, 'Period'), select, refresh),
      msg, range, figures,
      h('h2', {}, 'Charts'), charts);

    let generation = 0;

    async function load() {
      const mine = ++generation;
      const alive = () => mine === generation && root.isConnected;
      const spec = PERIODS[period];
      const now = new Date();
      say(msg, 'Loading…');
      clear(figures);
      clear(charts);
      range.textContent = '';
      refresh.disabled = true;
      let stats;
      try {
        stats = await SB.api('GET', `${API}/stats?${qs({ from: periodStart(spec, now).toISOString(), to: now.toISOString(), bucket: spec.bucket })}`);
      } catch (error) {
        if (alive()) {
          refresh.disabled = false;
          fail(msg, error);
        }
        return;
      }
      if (!alive()) return;
      refresh.disabled = false;
      say(msg, '');
      range.textContent = `From ${time(stats.from)} to ${time(stats.to)}`;

      const series = Array.isArray(stats.series) ? stats.series : [];
      const tickets = stats.tickets || {};
      const eventsTotal = series.reduce((sum, row) => sum + asCount(row && row.events), 0);
      figures.append(
        figure('users_total', 'Users', num(stats.users_total)),
        figure('users_new', 'New users', num(stats.users_new)),
        figure('users_blocked', 'Blocked users', num(stats.users_blocked)),
        figure('subscriptions_active', 'Active subscriptions', num(stats.subscriptions_active)),
        figure('tickets_open', 'Open tickets (now)', num(asCount(tickets.open))),
        figure('tickets_opened', 'Tickets opened', num(stats.tickets_opened)),
        figure('payments_completed', 'Payments completed', num(stats.payments_completed)),
        figure('payments_failed', 'Payments failed', num(stats.payments_failed)),
        figure('events', 'Events', num(eventsTotal)));
      const revenue = Object.entries(stats.revenue || {});
      if (!revenue.length) figures.append(figure('revenue', 'Revenue', num(0)));
      for (const [currency, amount] of revenue) figures.append(figure(`revenue.${currency}`, `Revenue (${currency})`, money(amount, currency)));

      const per = spec.bucket === 'hour' ? 'per hour' : 'per day';
      const xLabel = spec.bucket === 'hour' ? 'Hour' : 'Day (UTC)';
      const labels = series.map((row) => bucketLabel(spec, row && row.start));
      const values = (prop) => series.map((row) => asCount(row && row[prop]));

      charts.append(barChart({ key: 'events', title: `Events ${per}`, xLabel, yLabel: 'Events', labels, values: values('events') }));

      // Revenue: one chart per currency.
      const currencies = [...new Set([
        ...Object.keys(stats.revenue || {}),
        ...series.flatMap((row) => Object.keys((row && row.revenue) || {})),
      ])].sort();
      for (const currency of currencies) {
        charts.append(barChart({
          key: `revenue-${currency}`,
          title: `Revenue ${per} (${currency})`,
          xLabel,
          yLabel: `Revenue (${currency})`,
          labels,
          values: series.map((row) => asCount(((row && row.revenue) || {})[currency])),
          fmt: (v) => money(Math.round(v), currency),
        }));
      }
      if (!currencies.length) charts.append(h('p', { class: 'muted', 'data-chart': 'revenue-none' }, 'No revenue in this period.'));

      charts.append(barChart({ key: 'tickets-opened', title: `Tickets opened ${per}`, xLabel, yLabel: 'Tickets', labels, values: values('tickets_opened') }));

      const order = ['open', 'answered', 'pending', 'closed'];
      const statuses = [...order.filter((s) => s in tickets), ...Object.keys(tickets).filter((s) => !order.includes(s))];
      charts.append(barChart({
        key: 'tickets-status',
        title: 'Tickets by status (now)',
        xLabel: 'Status',
        yLabel: 'Tickets',
        labels: statuses,
        values: statuses.map((s) => asCount(tickets[s])),
      }));

      charts.append(
        barChart({ key: 'users-new', title: `New users ${per}`, xLabel, yLabel: 'Users', labels, values: values('users_new') }),
        barChart({ key: 'payments-completed', title: `Payments completed ${per}`, xLabel, yLabel: 'Payments', labels, values: values('payments_completed') }));
    }

    select.addEventListener('change', () => {
      period = select.value;
      load();
    });
    refresh.addEventListener('click', () => load());
    await load();
  }

  // ------------------------------------------------------------ webhooks

  function enabledText(ep) {
    return h('span', {},
      badge(ep.enabled ? 'enabled' : 'disabled'),
      !ep.enabled && ep.disabled_reason && h('span', { class: 'muted ops-small' }, ` ${ep.disabled_reason}`),
      ep.enabled && ep.failing_since && h('span', { class: 'ops-warn ops-small' }, ` failing since ${time(ep.failing_since)}`));
  }

  function rateText(rate) {
    return typeof rate === 'number' ? `${(rate * 100).toFixed(1)} %` : DASH;
  }

  function latencyText(latency) {
    return latency ? `${num(latency.p50)} / ${num(latency.p95)} ms` : DASH;
  }

  async function webhookList(root) {
    const alive = () => root.isConnected;
    const msg = msgBox();
    const created = h('div', { 'aria-live': 'polite' });
    const overall = h('div', { class: 'ops-figures' });
    const listBox = h('div');

    const f = {
      url: h('input', { type: 'text', inputmode: 'url', autocomplete: 'off', spellcheck: 'false', 'aria-required': 'true', placeholder: 'https://crm.example.com/hooks/switchboard' }),
      name: h('input', { type: 'text', maxlength: 200, autocomplete: 'off' }),
      event_types: h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'ticket.*, payment.completed' }),
      description: h('textarea', { rows: 2, maxlength: 1000 }),
    };
    const formMsg = msgBox();
    const submit = h('button', { type: 'submit' }, 'Create endpoint');
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const form = h('form', { class: 'ops-form', novalidate: true },
      field('URL', f.url, 'https:// (or http://) address the events are POSTed to.'),
      field('Name', f.name, 'Optional: the URL’s host when left empty.'),
      field('Event types', f.event_types, 'Comma-separated, with * suffix wildcards (ticket.*); empty for every event.'),
      field('Description', f.description),
      h('div', { class: 'ops-toolbar' }, submit, cancel),
      formMsg);
    const panelTitle = h('h2', { id: uid('h') }, 'New endpoint');
    const panel = h('section', { class: 'ops-panel', hidden: true, 'aria-labelledby': panelTitle.id }, panelTitle, form);
    const newButton = h('button', { type: 'button', class: 'primary', 'aria-expanded': 'false' }, 'New endpoint');

    function openForm(open) {
      panel.hidden = !open;
      newButton.setAttribute('aria-expanded', String(open));
      if (open) f.url.focus();
    }
    newButton.addEventListener('click', () => openForm(panel.hidden));
    cancel.addEventListener('click', () => {
      openForm(false);
      newButton.focus();
    });
    form.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        openForm(false);
        newButton.focus();
      }
    });

    root.append(h('h1', {}, 'Webhooks'), h('div', { class: 'ops-toolbar' }, newButton), panel, created, msg, overall, listBox);

    let offset = 0;
    const LIMIT = 50;

    async function load() {
      let page;
      let stats = null;
      let statsError = null;
      try {
        [page, stats] = await Promise.all([
          SB.api('GET', `${API}/webhooks?${qs({ limit: LIMIT, offset })}`),
          SB.api('GET', `${API}/webhooks/stats`).catch((error) => {
            statsError = error;
            return null;
          }),
        ]);
      } catch (error) {
        if (alive()) fail(msg, error);
        return;
      }
      if (!alive()) return;
      if (statsError) say(msg, `The delivery figures could not be loaded: ${errText(statsError)}`, 'error');
      else say(msg, '');

      clear(overall);
      if (stats && stats.overall) {
        const o = stats.overall;
        overall.append(
          figure('delivered', 'Delivered', num(o.delivered)),
          figure('failed', 'Failed', num(o.failed)),
          figure('pending', 'Pending', num(o.pending)),
          figure('success_rate', 'Success rate', rateText(o.success_rate)),
          figure('attempts_24h', 'Attempts (24 h)', `${num(o.successful_attempts_24h)} of ${num(o.attempts_24h)} OK`),
          figure('latency', 'Latency p50 / p95 (24 h)', latencyText(o.latency_ms)));
      }

      clear(listBox);
      const items = (page && page.items) || [];
      if (!items.length) {
        listBox.append(h('p', { class: 'muted' }, 'No endpoints yet.'));
        return;
      }
      const byId = new Map(((stats && stats.endpoints) || []).map((s) => [s.id, s]));
      const rows = items.map((ep) => {
        const s = byId.get(ep.id);
        return h('tr', { 'data-id': ep.id },
          h('td', {}, h('a', { href: `#/webhooks/${encodeURIComponent(ep.id)}` }, ep.name || ep.url), h('div', { class: 'muted ops-small ops-break' }, ep.url)),
          h('td', {}, (ep.event_types || []).join(', ')),
          h('td', {}, enabledText(ep)),
          h('td', { class: 'ops-num' }, s ? num(s.delivered) : DASH),
          h('td', { class: 'ops-num' }, s ? num(s.failed) : DASH),
          h('td', { class: 'ops-num' }, s ? num(s.pending) : DASH),
          h('td', { class: 'ops-num' }, s ? rateText(s.success_rate) : DASH),
          h('td', { class: 'ops-num' }, s ? latencyText(s.latency_ms) : DASH));
      });
      listBox.append(
        table('Webhook endpoints', ['Endpoint', 'Event types', 'State', 'Delivered', 'Failed', 'Pending', 'Success', 'p50 / p95'], rows),
        pager(offset, LIMIT, page.total, (next) => {
          offset = next;
          load();
        }));
    }

    form.addEventListener('submit', act(submit, formMsg, async () => {
      const url = f.url.value.trim();
      if (!url) throw new LocalError('URL: give the address the events are sent to.', 'url');
      const body = { name: f.name.value.trim() || hostOf(url), url };
      const types = splitList(f.event_types.value);
      if (types.length) body.event_types = types;
      const description = f.description.value.trim();
      if (description) body.description = description;
      const ep = await SB.api('POST', `${API}/webhooks`, body);
      form.reset();
      openForm(false);
      clear(created);
      created.append(h('section', { class: 'ops-panel ops-once' },
        h('h2', {}, 'Endpoint created'),
        h('p', {}, 'Copy the signing secret of ', h('a', { href: `#/webhooks/${encodeURIComponent(ep.id)}` }, ep.name || ep.url),
          ' now and keep it with the receiver: it verifies the webhook-signature header.'),
        secretBox('Signing secret', ep.secret || ''),
        h('button', { type: 'button', onclick: () => clear(created) }, 'Done')));
      SB.toast('Endpoint created', 'ok');
      offset = 0;
      await load();
    }, f));

    await load();
  }

  async function webhookDetail(root, id, life) {
    const alive = () => root.isConnected;
    const base = `${API}/webhooks/${encodeURIComponent(id)}`;
    root.append(backLink('#/webhooks', 'Webhooks'));
    let ep;
    try {
      ep = await SB.api('GET', base);
    } catch (error) {
      if (alive()) root.append(errorP(error));
      return;
    }
    if (!alive()) return;

    const title = h('h1', {});
    const msg = msgBox();
    const info = h('div');
    const toggle = h('button', { type: 'button' });
    const testButton = h('button', { type: 'button' }, 'Send test event');
    const showButton = h('button', { type: 'button' }, 'Show secret');
    const deleteButton = h('button', { type: 'button', class: 'danger' }, 'Delete endpoint');
    const secretArea = h('div', { 'aria-live': 'polite' });
    const testArea = h('div', { 'aria-live': 'polite' });

    const grace = h('input', { type: 'number', min: 0, max: 604800, step: 1, inputmode: 'numeric', placeholder: 'default: 24 h' });
    const rotateButton = h('button', { type: 'submit' }, 'Rotate secret');
    const rotateMsg = msgBox();
    const rotateForm = h('form', { class: 'ops-form ops-row-form', novalidate: true },
      field('Grace seconds', grace, 'How long the old secret keeps signing too: 0 retires it at once, at most 7 days (604800).'),
      h('div', { class: 'ops-toolbar' }, rotateButton), rotateMsg);

    function renderInfo() {
      title.textContent = ep.name || ep.url;
      clear(info);
      const headers = Object.keys(ep.headers || {});
      info.append(dl([
        ['URL', h('code', { class: 'ops-break' }, ep.url)],
        ['State', enabledText(ep)],
        ['Event types', (ep.event_types || []).join(', ') || '*'],
        ['Description', ep.description || DASH],
        ['Order', ep.ordered ? 'Strictly in log order' : 'Not ordered'],
        ['Body', ep.body === 'payload' ? 'The bare payload' : 'The event envelope'],
        ['Extra headers', headers.length ? headers.join(', ') : 'none'],
        ep.custom_legacy_secret && ['X-Webhook-Signature', 'signed with a secret the receiver chose'],
        ep.disabled_at && ['Disabled at', time(ep.disabled_at)],
        ep.failing_since && ['Failing since', time(ep.failing_since)],
        ep.previous_secret_valid_until && ['Previous secret signs until', time(ep.previous_secret_valid_until)],
        ['Created', time(ep.created_at)],
        ['Updated', time(ep.updated_at)],
        ['Id', h('code', {}, ep.id)],
      ]));
      toggle.textContent = ep.enabled ? 'Disable' : 'Enable';
      toggle.className = ep.enabled ? 'danger' : 'primary';
    }

    toggle.addEventListener('click', act(toggle, msg, async () => {
      ep = await SB.api('POST', `${base}/${ep.enabled ? 'disable' : 'enable'}`);
      if (!alive()) return;
      renderInfo();
      say(msg, ep.enabled ? 'The endpoint is enabled.' : 'The endpoint is disabled.', 'ok');
    }));

    testButton.addEventListener('click', act(testButton, msg, async () => {
      clear(testArea);
      testArea.append(h('p', { class: 'muted' }, 'Sending a webhook.test event…'));
      let r;
      try {
        r = await SB.api('POST', `${base}/test`);
      } finally {
        clear(testArea);
      }
      if (!alive()) return;
      testArea.append(h('section', { class: 'ops-panel', 'data-test-result': r.success ? 'ok' : 'failed' },
        h('h2', {}, 'Test event'),
        h('p', { class: r.success ? 'ok' : 'error' },
          r.success ? 'Delivered' : 'Failed',
          r.response_status !== null && r.response_status !== undefined ? `: HTTP ${r.response_status}` : '',
          ` in ${num(r.duration_ms)} ms`),
        r.error && h('p', { class: 'error' }, r.error),
        r.response_body && h('details', {}, h('summary', {}, 'Response body'), h('pre', {}, r.response_body)),
        h('p', { class: 'muted ops-small' }, `Event ${r.event_id} (not retried, not recorded as a delivery).`)));
    }));

    function showSecret(s, heading) {
      clear(secretArea);
      secretArea.append(h('section', { class: 'ops-panel' },
        h('h2', {}, heading),
        secretBox('Signing secret', s.secret || '',
          s.previous_secret_valid_until ? `The previous secret also signs until ${time(s.previous_secret_valid_until)}.` : null),
        h('button', { type: 'button', onclick: () => clear(secretArea) }, 'Hide secret')));
    }

    showButton.addEventListener('click', act(showButton, msg, async () => {
      const s = await SB.api('GET', `${base}/secret`);
      if (alive()) showSecret(s, 'Signing secret');
    }));

    rotateForm.addEventListener('submit', act(rotateButton, rotateMsg, async () => {
      const raw = grace.value.trim();
      const body = {};
      if (raw) {
        const seconds = Number(raw);
        if (!Number.isInteger(seconds) || seconds < 0) throw new LocalError('Grace seconds: a whole number of seconds, 0 or more.', 'grace_seconds');
        body.grace_seconds = seconds;
      }
      const s = await SB.api('POST', `${base}/rotate-secret`, body);
      if (!alive()) return;
      showSecret(s, 'New signing secret');
      say(rotateMsg, 'The secret was rotated.', 'ok');
      grace.value = '';
      try {
        ep = await SB.api('GET', base);
        if (alive()) renderInfo();
      } catch (_) {
        // The details only miss the previous secret's end; the rotation worked.
      }
    }, { grace_seconds: grace }));

    deleteButton.addEventListener('click', act(deleteButton, msg, async () => {
      if (!window.confirm(`Delete the endpoint “${ep.name || ep.url}” with all its deliveries?`)) return;
      await SB.api('DELETE', base);
      SB.toast('Endpoint deleted', 'ok');
      SB.navigate('#/webhooks');
    }));

    // Deliveries
    const dStatus = h('select', {}, ['', 'pending', 'delivered', 'failed'].map((v) => h('option', { value: v }, v ? cap(v) : 'All')));
    const dRefresh = h('button', { type: 'button' }, 'Refresh');
    const dMsg = msgBox();
    const dBox = h('div');
    let dOffset = 0;
    const D_LIMIT = 20;

    function attempts(d) {
      const log = d.attempt_log || [];
      if (!log.length) return h('span', { class: 'muted' }, d.attempts ? plural(d.attempts, 'attempt', 'attempts') : 'none yet');
      return table(`Attempts of ${d.event_id}`, ['#', 'At', 'Result', 'Code', 'Duration', 'Error'], log.map((a) => {
        const ok = typeof a.response_status === 'number' && a.response_status >= 200 && a.response_status < 300 && !a.error;
        return h('tr', { 'data-attempt': a.attempt },
          h('td', { class: 'ops-num' }, num(a.attempt)),
          h('td', {}, time(a.at)),
          h('td', {}, badge(ok ? 'delivered' : 'failed')),
          h('td', { class: 'ops-num' }, a.response_status === null || a.response_status === undefined ? DASH : String(a.response_status)),
          h('td', { class: 'ops-num' }, `${num(a.duration_ms)} ms`),
          h('td', { class: 'ops-break' }, a.error || '',
            a.response_body && h('details', {}, h('summary', {}, 'Response body'), h('pre', {}, a.response_body))));
      }), 'ops-nested');
    }

    async function loadDeliveries() {
      let page;
      try {
        page = await SB.api('GET', `${base}/deliveries?${qs({ limit: D_LIMIT, offset: dOffset, status: dStatus.value })}`);
      } catch (error) {
        if (alive()) fail(dMsg, error);
        return;
      }
      if (!alive()) return;
      clear(dBox);
      const items = (page && page.items) || [];
      if (!items.length) {
        dBox.append(h('p', { class: 'muted' }, dStatus.value ? `No ${dStatus.value} deliveries.` : 'No deliveries yet.'));
        return;
      }
      const rows = items.map((d) => {
        const resend = h('button', { type: 'button' }, 'Resend');
        resend.addEventListener('click', act(resend, dMsg, async () => {
          await SB.api('POST', `${base}/deliveries/${encodeURIComponent(d.event_id)}/resend`);
          SB.toast('Delivery queued again', 'ok');
          await loadDeliveries();
          if (alive()) say(dMsg, `The delivery of ${d.event_type} (${d.event_id}) was queued again.`, 'ok');
        }));
        return h('tr', { 'data-id': d.event_id },
          h('td', {}, h('div', {}, d.event_type), h('code', { class: 'muted ops-small' }, d.event_id)),
          h('td', {}, badge(d.status),
            d.last_response_status !== null && d.last_response_status !== undefined && h('div', { class: 'ops-small' }, `last HTTP ${d.last_response_status}`),
            d.last_error && h('div', { class: 'ops-small error ops-break' }, d.last_error)),
          h('td', {}, attempts(d)),
          h('td', {}, time(d.created_at)),
          h('td', {}, d.completed_at ? time(d.completed_at) : d.next_attempt_at ? `next ${time(d.next_attempt_at)}` : DASH),
          h('td', {}, resend));
      });
      dBox.append(
        table('Deliveries', ['Event', 'Status', 'Attempts', 'Created', 'Completed / next', 'Action'], rows),
        pager(dOffset, D_LIMIT, page.total, (next) => {
          dOffset = next;
          loadDeliveries();
        }));
    }
    dStatus.addEventListener('change', () => {
      dOffset = 0;
      say(dMsg, '');
      loadDeliveries();
    });
    dRefresh.addEventListener('click', act(dRefresh, dMsg, loadDeliveries));

    // Recover failed deliveries
    const rcSince = h('input', { type: 'datetime-local', step: 1 });
    const rcUntil = h('input', { type: 'datetime-local', step: 1 });
    const rcButton = h('button', { type: 'submit' }, 'Recover failed');
    const rcMsg = msgBox();
    const rcForm = h('form', { class: 'ops-form', novalidate: true },
      h('p', { class: 'muted' }, 'Re-queue every failed delivery of the events created in a time range.'),
      field('Since', rcSince),
      field('Until', rcUntil, 'Optional: now when left empty.'),
      h('div', { class: 'ops-toolbar' }, rcButton), rcMsg);
    rcForm.addEventListener('submit', act(rcButton, rcMsg, async () => {
      const since = isoFromLocal(rcSince.value, 'Since', 'since');
      if (!since) throw new LocalError('Since: give the time from which failed deliveries are re-queued.', 'since');
      const body = { since };
      const until = isoFromLocal(rcUntil.value, 'Until', 'until');
      if (until) body.until = until;
      const r = await SB.api('POST', `${base}/recover`, body);
      if (!alive()) return;
      say(rcMsg, `Re-queued ${plural(r.requeued, 'failed delivery', 'failed deliveries')}.`, 'ok');
      dOffset = 0;
      await loadDeliveries();
    }, { since: rcSince, until: rcUntil }));

    // Backfill
    const bfState = h('div', { class: 'ops-panel', 'data-backfill': '', 'aria-live': 'polite' });
    const bfSince = h('input', { type: 'datetime-local', step: 1 });
    const bfAfter = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: '4810-4812-1912098701' });
    const bfRate = h('input', { type: 'number', min: 1, max: 1000, step: 1, inputmode: 'numeric', placeholder: '50' });
    const bfButton = h('button', { type: 'submit' }, 'Backfill');
    const bfMsg = msgBox();
    const bfForm = h('form', { class: 'ops-form', novalidate: true },
      h('p', { class: 'muted' }, 'Queue events already in the log for this endpoint (through its filter), from a time, after a cursor, or both, up to the log’s head.'),
      field('From time', bfSince),
      field('After cursor', bfAfter, 'A cursor from the live feed, the event browser or an envelope, exactly as given.'),
      field('Rate (per second)', bfRate, '1 to 1000 deliveries queued a second; 50 when left empty.'),
      h('div', { class: 'ops-toolbar' }, bfButton), bfMsg);
    let bfTimer = null;
    life.add(() => clearTimeout(bfTimer));

    function renderBackfill(b) {
      clearTimeout(bfTimer);
      bfTimer = null;
      clear(bfState);
      if (!b) {
        bfState.append(h('p', { class: 'muted', 'data-backfill-status': 'none' }, 'No backfill has run for this endpoint.'));
        return;
      }
      const progress = Math.max(0, Math.min(1, Number(b.progress) || 0));
      const running = b.status === 'running';
      bfState.append(
        h('p', {}, 'Latest backfill: ', h('span', { 'data-backfill-status': b.status }, badge(b.status)),
          ` started ${time(b.started_at)}`, b.finished_at ? `, ended ${time(b.finished_at)}` : ''),
        h('div', { class: 'ops-progress' },
          h('progress', { max: 1, value: progress, 'aria-label': 'Backfill progress' }),
          h('span', { class: 'ops-pct', 'data-backfill-percent': '' }, `${Math.floor(progress * 100)} %`)),
        dl([
          ['Events read', num(b.scanned)],
          ['Queued', num(b.enqueued)],
          ['Withdrawn', num(b.withdrawn)],
          ['Pending', num(b.pending)],
          ['Delivered', num(b.delivered)],
          ['Failed', num(b.failed)],
          ['Rate', `${num(b.rate)} a second`],
          b.since && ['Since', time(b.since)],
          ['Start', h('code', {}, b.start)],
          ['Cursor', h('code', {}, b.cursor)],
          ['Until', h('code', {}, b.until)],
        ], 'ops-dl-compact'));
      if (running) {
        const cancelButton = h('button', { type: 'button', class: 'danger' }, 'Cancel backfill');
        cancelButton.addEventListener('click', act(cancelButton, bfMsg, async () => {
          try {
            const r = await SB.api('POST', `${base}/backfill/cancel`);
            if (alive()) {
              renderBackfill(r);
              say(bfMsg, 'The backfill was cancelled.', 'ok');
            }
          } catch (error) {
            if (error && error.code === 'backfill_ended') pollBackfill();
            throw error;
          }
        }));
        bfState.append(h('div', { class: 'ops-toolbar' }, cancelButton));
        bfTimer = setTimeout(pollBackfill, 2000);
      }
    }

    async function pollBackfill() {
      clearTimeout(bfTimer);
      bfTimer = null;
      if (!alive()) return;
      let b;
      try {
        b = await getOrNull(`${base}/backfill`);
      } catch (error) {
        if (alive()) fail(bfMsg, error);
        return;
      }
      if (alive()) renderBackfill(b);
    }

    bfForm.addEventListener('submit', act(bfButton, bfMsg, async () => {
      const body = {};
      const since = isoFromLocal(bfSince.value, 'From time', 'since');
      if (since) body.since = since;
      const after = bfAfter.value.trim();
      if (after) body.after = after;
      const rate = bfRate.value.trim();
      if (rate) {
        const perSecond = Number(rate);
        if (!Number.isInteger(perSecond)) throw new LocalError('Rate (per second): a whole number from 1 to 1000.', 'rate');
        body.rate = perSecond;
      }
      try {
        const b = await SB.api('POST', `${base}/backfill`, body);
        if (!alive()) return;
        renderBackfill(b);
        say(bfMsg, 'The backfill started.', 'ok');
      } catch (error) {
        if (error && error.code === 'backfill_running') pollBackfill();
        throw error;
      }
    }, { since: bfSince, after: bfAfter, rate: bfRate }));

    const h2 = (text) => h('h2', { id: uid('h') }, text);
    const sec = (heading, ...kids) => h('section', { class: 'ops-section', 'aria-labelledby': heading.id }, heading, kids);

    root.append(
      title, msg, info,
      h('div', { class: 'ops-toolbar' }, toggle, testButton, showButton, deleteButton),
      testArea, secretArea,
      sec(h2('Rotate the secret'), rotateForm),
      sec(h2('Deliveries'),
        h('div', { class: 'ops-toolbar' }, field('Delivery status', dStatus), dRefresh),
        dMsg, dBox),
      sec(h2('Recover failed deliveries'), rcForm),
      sec(h2('Backfill'), bfState, bfForm));
    renderInfo();
    await Promise.all([loadDeliveries(), pollBackfill()]);
  }

  // ------------------------------------------------------------ broadcasts

  const COUNT_KEYS = ['total', 'queued', 'sent', 'failed', 'blocked', 'unknown', 'cancelled'];
  const ACTIVE = new Set(['scheduled', 'running']);
  const ENDED = new Set(['completed', 'cancelled', 'failed']);
  const MEDIA = ['photo', 'video', 'document', 'audio', 'voice', 'animation'];
  const METHOD_MEDIA = {
    sendPhoto: 'photo', sendVideo: 'video', sendDocument: 'document',
    sendAudio: 'audio', sendVoice: 'voice', sendAnimation: 'animation',
  };
  const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

  function emptyCounts() {
    return { total: 0, queued: 0, sent: 0, failed: 0, blocked: 0, unknown: 0, cancelled: 0 };
  }

  /** Recipients whose message ended (as the server counts progress). */
  function ended(c) {
    return (c.sent || 0) + (c.failed || 0) + (c.blocked || 0) + (c.unknown || 0);
  }

  function percent(status, c) {
    const total = c.total || 0;
    if (!total) return status === 'completed' || status === 'failed' ? 100 : 0;
    return Math.min(100, Math.floor((ended(c) * 100) / total));
  }

  function barValues(status, c) {
    const total = c.total || 0;
    if (!total) return { max: 1, value: status === 'completed' || status === 'failed' ? 1 : 0 };
    return { max: total, value: Math.min(total, ended(c)) };
  }

  function progressBar(id, status, c) {
    const { max, value } = barValues(status, c);
    return h('span', { class: 'ops-progress' },
      h('progress', { 'data-broadcast-id': id, max, value, 'aria-label': 'Broadcast progress' }),
      h('span', { class: 'ops-pct', 'data-percent-for': id }, `${percent(status, c)} %`));
  }

  function setProgress(scope, id, status, c) {
    const key = CSS.escape(id);
    const { max, value } = barValues(status, c);
    for (const bar of scope.querySelectorAll(`progress[data-broadcast-id="${key}"]`)) {
      bar.max = max;
      bar.value = value;
    }
    for (const label of scope.querySelectorAll(`[data-percent-for="${key}"]`)) label.textContent = `${percent(status, c)} %`;
    for (const el of scope.querySelectorAll(`[data-broadcast-status="${key}"]`)) {
      clear(el);
      el.append(badge(status));
    }
  }

  function copyCounts(target, source) {
    for (const key of COUNT_KEYS) if (typeof source[key] === 'number') target[key] = source[key];
  }

  /** Applies a live broadcast event to a BroadcastOut-shaped object. */
  function applyEvent(b, env) {
    const p = env.payload || {};
    if (!b.counts) b.counts = emptyCounts();
    const c = b.counts;
    switch (env.type) {
      case 'broadcast.started':
        if (b.status === 'scheduled') b.status = 'running';
        if (!c.total && typeof p.total === 'number') {
          c.total = p.total;
          c.queued = p.total;
        }
        if (p.left_out) b.left_out = p.left_out;
        if (!b.started_at && env.timestamp) b.started_at = env.timestamp;
        return true;
      case 'broadcast.progress':
        if (b.status === 'scheduled') b.status = 'running';
        if (ENDED.has(b.status)) return false;
        if (ended(p) >= ended(c)) copyCounts(c, p);
        if (typeof p.rate === 'number') b.rate = p.rate;
        return true;
      case 'broadcast.completed':
        b.status = p.status || 'completed';
        copyCounts(c, p);
        if (!b.finished_at && env.timestamp) b.finished_at = env.timestamp;
        return true;
      case 'broadcast.cancelled':
        b.status = 'cancelled';
        if (!b.finished_at && env.timestamp) b.finished_at = env.timestamp;
        return true;
      default:
        return false;
    }
  }

  function broadcastEnvelope(env) {
    return env && typeof env.type === 'string' && env.type.startsWith('broadcast.') && env.payload && typeof env.payload.broadcast_id === 'string';
  }

  function audienceText(a) {
    if (!a || typeof a !== 'object') return DASH;
    if (a.all) return 'All users';
    if (Array.isArray(a.user_ids)) return plural(a.user_ids.length, 'user id', 'user ids');
    if (Array.isArray(a.telegram_ids)) return plural(a.telegram_ids.length, 'Telegram id', 'Telegram ids');
    const parts = [];
    if (a.subscription) parts.push(`subscription ${a.subscription}`);
    if (a.language) parts.push(`language ${a.language}`);
    if (a.registered_after) parts.push(`registered after ${time(a.registered_after)}`);
    return parts.length ? `Users with ${parts.join(', ')}` : DASH;
  }

  function audiencePhrase(a) {
    if (a.all) return 'all users the bot can write to';
    if (a.user_ids) return `the ${plural(a.user_ids.length, 'listed user', 'listed users')} the bot can write to`;
    if (a.telegram_ids) return `the ${plural(a.telegram_ids.length, 'listed Telegram user', 'listed Telegram users')} the bot can write to`;
    return `the users matching the filter (${audienceText(a)}) the bot can write to`;
  }

  function excerpt(b) {
    const params = b.params || {};
    const text = params.text || params.caption || '';
    const kind = METHOD_MEDIA[b.method];
    const short = text.length > 80 ? `${text.slice(0, 79)}…` : text;
    return [kind && h('span', { class: 'muted' }, `[${cap(kind)}] `), short || (kind ? '' : b.method)];
  }

  /** Lines of `text | target` (several in a row split by `||`). */
  function parseButtons(source) {
    const rows = [];
    const problems = [];
    source.split('\n').forEach((line, index) => {
      if (!line.trim()) return;
      const row = [];
      for (const part of line.split('||')) {
        if (!part.trim()) continue;
        const bar = part.indexOf('|');
        const text = bar < 0 ? '' : part.slice(0, bar).trim();
        const target = bar < 0 ? '' : part.slice(bar + 1).trim();
        if (!text || !target) {
          problems.push(`Buttons, line ${index + 1}: write “text | https://url” or “text | callback:data”.`);
        } else if (/^callback:/i.test(target)) {
          const data = target.slice('callback:'.length).trim();
          if (data) row.push({ text, callback_data: data });
          else problems.push(`Buttons, line ${index + 1}: the callback data after “callback:” is empty.`);
        } else if (/^(https?|tg):\/\/\S+$/i.test(target)) {
          row.push({ text, url: target });
        } else {
          problems.push(`Buttons, line ${index + 1}: “${target}” is neither a link (https://…) nor callback:data.`);
        }
      }
      if (row.length) rows.push(row);
    });
    return { rows, problems };
  }

  function appendLines(el, text) {
    text.split('\n').forEach((line, i) => {
      if (i) el.append(h('br', {}));
      el.append(document.createTextNode(line));
    });
  }

  /** The message as Telegram would lay it out, everything as plain text. */
  function messagePreview(target, { kind, file, text, rows, parseMode, problems }) {
    clear(target);
    const bubble = h('div', { class: 'ops-bubble' });
    if (kind) bubble.append(h('div', { class: 'ops-media' }, `[${cap(kind)}] `, file || '(no media URL yet)'));
    const body = h('div', { class: 'ops-bubble-text', 'data-preview-text': '' });
    if (text) appendLines(body, text);
    else if (!kind) body.append(h('span', { class: 'muted' }, 'The message is empty.'));
    bubble.append(body);
    target.append(bubble);
    if (rows && rows.length) {
      target.append(h('div', { class: 'ops-kb' }, rows.map((row) => h('div', { class: 'ops-kb-row' },
        row.map((b) => h('span', {
          class: 'ops-kb-btn',
          'data-preview-button': '',
          title: b.url ? b.url : `callback: ${b.callback_data || ''}`,
        }, b.text, b.url ? ' ↗' : ''))))));
    }
    for (const problem of problems || []) target.append(h('p', { class: 'error ops-small' }, problem));
    if (parseMode) target.append(h('p', { class: 'muted ops-small' }, `${parseMode} markup is shown as typed; Telegram formats it.`));
  }

  function composer() {
    const text = h('textarea', { rows: 6, maxlength: 4096 });
    const parseMode = h('select', {}, h('option', { value: '' }, 'None'), h('option', { value: 'HTML' }, 'HTML'), h('option', { value: 'MarkdownV2' }, 'MarkdownV2'));
    const mediaType = h('select', {}, h('option', { value: '' }, 'None'), MEDIA.map((m) => h('option', { value: m }, cap(m))));
    const mediaUrl = h('input', { type: 'text', inputmode: 'url', autocomplete: 'off', spellcheck: 'false', placeholder: 'https://files.example.com/picture.jpg' });
    const buttons = h('textarea', { rows: 3, spellcheck: 'false', placeholder: 'Open the shop | https://shop.example.com\nHelp | callback:help' });
    const audience = h('select', {},
      h('option', { value: 'all' }, 'All users'),
      h('option', { value: 'user_ids' }, 'User ids'),
      h('option', { value: 'telegram_ids' }, 'Telegram ids'),
      h('option', { value: 'filter' }, 'Filter'));
    const userIds = h('textarea', { rows: 3, spellcheck: 'false' });
    const telegramIds = h('textarea', { rows: 3, spellcheck: 'false', inputmode: 'numeric' });
    const subscription = h('select', {},
      h('option', { value: '' }, 'Any'),
      h('option', { value: 'active' }, 'Active'),
      h('option', { value: 'expired' }, 'Expired'),
      h('option', { value: 'none' }, 'No subscription'));
    const language = h('input', { type: 'text', maxlength: 35, autocomplete: 'off', spellcheck: 'false', placeholder: 'ru' });
    const registeredAfter = h('input', { type: 'datetime-local' });
    const sendAt = h('input', { type: 'datetime-local' });
    const paidHint = uid('hint');
    const paid = h('input', { type: 'checkbox', 'aria-describedby': paidHint });
    const fields = {
      text, parse_mode: parseMode, media: mediaUrl, buttons, audience,
      user_ids: userIds, telegram_ids: telegramIds, subscription, language,
      registered_after: registeredAfter, send_at: sendAt, paid,
    };

    const userIdsField = field('User ids', userIds, 'Switchboard user ids (UUIDs), separated by commas, spaces or new lines.');
    const telegramIdsField = field('Telegram ids', telegramIds, 'Numeric Telegram user ids, separated by commas, spaces or new lines.');
    const filterSet = h('fieldset', { class: 'ops-fieldset' },
      h('legend', {}, 'Filter: users matching every condition given'),
      field('Subscription', subscription),
      field('Language', language, 'A language code such as ru or pt-BR (ru also takes ru-RU).'),
      field('Registered after', registeredAfter));
    function syncAudience() {
      userIdsField.hidden = audience.value !== 'user_ids';
      telegramIdsField.hidden = audience.value !== 'telegram_ids';
      filterSet.hidden = audience.value !== 'filter';
    }
    syncAudience();

    const preview = h('div', { class: 'ops-preview', 'data-preview': '' });
    function renderPreview() {
      const { rows, problems } = parseButtons(buttons.value);
      messagePreview(preview, {
        kind: mediaType.value,
        file: mediaUrl.value.trim(),
        text: text.value,
        rows,
        parseMode: parseMode.value,
        problems,
      });
    }

    function buildAudience() {
      switch (audience.value) {
        case 'user_ids': {
          const ids = splitIds(userIds.value);
          if (!ids.length) throw new LocalError('User ids: list at least one user id.', 'user_ids');
          const bad = ids.find((x) => !UUID.test(x));
          if (bad) throw new LocalError(`User ids: “${bad}” is not a user id (a UUID).`, 'user_ids');
          return { user_ids: ids };
        }
        case 'telegram_ids': {
          const ids = splitIds(telegramIds.value);
          if (!ids.length) throw new LocalError('Telegram ids: list at least one Telegram id.', 'telegram_ids');
          const bad = ids.find((x) => !/^-?\d{1,19}$/.test(x) || !Number.isSafeInteger(Number(x)));
          if (bad) throw new LocalError(`Telegram ids: “${bad}” is not a Telegram id (a number).`, 'telegram_ids');
          return { telegram_ids: ids.map(Number) };
        }
        case 'filter': {
          const a = {};
          if (subscription.value) a.subscription = subscription.value;
          const lang = language.value.trim();
          if (lang) a.language = lang;
          const after = isoFromLocal(registeredAfter.value, 'Registered after', 'registered_after');
          if (after) a.registered_after = after;
          if (!Object.keys(a).length) throw new LocalError('Filter: choose a subscription, a language or a registration date.', 'subscription');
          return a;
        }
        default:
          return { all: true };
      }
    }

    function build() {
      const body = {};
      if (text.value.trim()) body.text = text.value;
      if (parseMode.value) body.parse_mode = parseMode.value;
      const file = mediaUrl.value.trim();
      if (mediaType.value) {
        if (!file) throw new LocalError('Media URL: give the file’s http(s) URL (or its Telegram file_id).', 'media');
        body.media = file.includes('://') ? { type: mediaType.value, url: file } : { type: mediaType.value, file_id: file };
      } else if (file) {
        throw new LocalError('Media type: choose what kind of file the media URL is.', 'media');
      }
      if (!body.text && !body.media) throw new LocalError('Text: write a message, or give a media, or both.', 'text');
      const { rows, problems } = parseButtons(buttons.value);
      if (problems.length) throw new LocalError(problems[0], 'buttons');
      if (rows.length) body.buttons = rows;
      body.audience = buildAudience();
      const at = isoFromLocal(sendAt.value, 'Send at', 'send_at');
      if (at) body.send_at = at;
      if (paid.checked) body.paid = true;
      return body;
    }

    const msg = msgBox();
    const countBox = h('div', { class: 'ops-count-box', role: 'status', 'aria-live': 'polite', 'data-audience-count': '' });
    const countButton = h('button', { type: 'button' }, 'Count audience');
    const sendButton = h('button', { type: 'submit' }, 'Send broadcast');

    const LEFT_OUT = [
      ['no_chat', 'never wrote to the bot, so it cannot write to them'],
      ['bot_blocked', 'blocked the bot'],
      ['blocked', 'are blocked by an admin'],
      ['not_found', 'listed ids match no user'],
    ];
    function renderCount(r, scheduled) {
      clear(countBox);
      const leftOut = r.left_out || {};
      countBox.append(
        h('p', {}, h('strong', { 'data-audience-total': '' }, num(r.total)), r.total === 1 ? ' recipient' : ' recipients',
          scheduled && r.send_at ? `, starting ${time(r.send_at)}` : ', starting at once'),
        h('p', { class: 'ops-small' }, 'Left out:'),
        h('ul', { class: 'ops-list ops-small' }, LEFT_OUT.map(([key, why]) =>
          h('li', { 'data-left-out': key }, h('strong', {}, num(leftOut[key] || 0)), ` ${why}`))));
    }

    countButton.addEventListener('click', act(countButton, msg, async () => {
      const body = build();
      clear(countBox);
      countBox.append(h('p', { class: 'muted' }, 'Counting…'));
      try {
        const r = await SB.api('POST', `${API}/broadcasts?dry_run=true`, body);
        renderCount(r, Boolean(body.send_at));
      } catch (error) {
        clear(countBox);
        throw error;
      }
    }, fields));

    const form = h('form', { class: 'ops-form', novalidate: true },
      field('Text', text, 'The message, or the caption of the media (at most 1024 characters then).'),
      field('Parse mode', parseMode),
      h('div', { class: 'ops-pair' }, field('Media type', mediaType), field('Media URL', mediaUrl, 'An http(s) URL, or a Telegram file_id.')),
      field('Buttons', buttons, [
        'One row of buttons per line: ', h('code', {}, 'text | https://url'), ' opens a link, ',
        h('code', {}, 'text | callback:data'), ' sends the data to the bot. Several buttons in one row: separate them with ',
        h('code', {}, '||'), '.']),
      field('Audience', audience, 'Always narrowed to users the bot can write to.'),
      userIdsField, telegramIdsField, filterSet,
      field('Send at', sendAt, 'Optional: at once when left empty.'),
      h('div', { class: 'ops-field' }, h('label', { class: 'ops-check' }, paid, ' Paid broadcast'),
        h('small', { class: 'ops-hint', id: paidHint }, 'Telegram’s paid broadcast: up to 1000 messages a second, billed in Stars.')),
      h('div', { class: 'ops-toolbar' }, countButton, sendButton),
      msg, countBox);

    form.addEventListener('input', renderPreview);
    form.addEventListener('change', () => {
      syncAudience();
      renderPreview();
    });
    form.addEventListener('submit', act(sendButton, msg, async () => {
      const body = build();
      const when = body.send_at ? `at ${time(body.send_at)}` : 'now';
      if (!window.confirm(`Send this broadcast ${when} to ${audiencePhrase(body.audience)}?`)) return;
      const r = await SB.api('POST', `${API}/broadcasts`, body);
      SB.toast(`Broadcast created: ${plural(r.total, 'recipient', 'recipients')}`, 'ok');
      if (r.id) SB.navigate(`#/broadcasts/${encodeURIComponent(r.id)}`);
    }, fields));

    renderPreview();
    const previewTitle = h('h3', { id: uid('h') }, 'Preview');
    const el = h('div', { class: 'ops-composer' },
      form,
      h('section', { class: 'ops-preview-wrap', 'aria-labelledby': previewTitle.id }, previewTitle, preview));
    return { el, form, focus: () => text.focus() };
  }

  async function broadcastList(root, life, openComposer) {
    const alive = () => root.isConnected;
    const msg = msgBox();
    const listBox = h('div');
    const newButton = h('button', { type: 'button', class: 'primary', 'aria-expanded': 'false' }, 'New broadcast');
    const compose = composer();
    const panelTitle = h('h2', { id: uid('h') }, 'New broadcast');
    const panel = h('section', { class: 'ops-panel', hidden: true, 'aria-labelledby': panelTitle.id }, panelTitle, compose.el);
    function openPanel(open) {
      panel.hidden = !open;
      newButton.setAttribute('aria-expanded', String(open));
      if (open) compose.focus();
    }
    newButton.addEventListener('click', () => openPanel(panel.hidden));
    compose.form.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        openPanel(false);
        newButton.focus();
      }
    });
    root.append(h('h1', {}, 'Broadcasts'), h('div', { class: 'ops-toolbar' }, newButton), panel, msg, listBox);

    let offset = 0;
    const LIMIT = 50;
    const shown = new Map();

    async function load() {
      let page;
      try {
        page = await SB.api('GET', `${API}/broadcasts?${qs({ limit: LIMIT, offset })}`);
      } catch (error) {
        if (alive()) fail(msg, error);
        return;
      }
      if (!alive()) return;
      say(msg, '');
      clear(listBox);
      shown.clear();
      const items = (page && page.items) || [];
      if (!items.length) {
        listBox.append(h('p', { class: 'muted' }, 'No broadcasts yet.'));
        return;
      }
      const rows = items.map((b) => {
        if (!b.counts) b.counts = emptyCounts();
        shown.set(b.id, b);
        return h('tr', { 'data-id': b.id },
          h('td', {}, h('a', { href: `#/broadcasts/${encodeURIComponent(b.id)}` }, time(b.created_at))),
          h('td', {}, h('span', { 'data-broadcast-status': b.id }, badge(b.status))),
          h('td', { class: 'ops-break' }, excerpt(b)),
          h('td', {}, audienceText(b.audience)),
          h('td', {}, progressBar(b.id, b.status, b.counts)),
          h('td', { class: 'ops-num', 'data-sent-for': b.id }, `${num(b.counts.sent)} / ${num(b.counts.total)}`));
      });
      listBox.append(
        table('Broadcasts', ['Created', 'Status', 'Message', 'Audience', 'Progress', 'Sent / total'], rows),
        pager(offset, LIMIT, page.total, (next) => {
          offset = next;
          load();
        }));
    }

    let reloadTimer = null;
    life.add(() => clearTimeout(reloadTimer));
    subscribe(life, (env) => {
      if (!broadcastEnvelope(env) || !alive()) return;
      const id = env.payload.broadcast_id;
      const b = shown.get(id);
      if (b) {
        if (applyEvent(b, env)) {
          setProgress(listBox, id, b.status, b.counts);
          for (const cell of listBox.querySelectorAll(`[data-sent-for="${CSS.escape(id)}"]`)) {
            cell.textContent = `${num(b.counts.sent)} / ${num(b.counts.total)}`;
          }
        }
      } else if (env.type === 'broadcast.created' && offset === 0) {
        clearTimeout(reloadTimer);
        reloadTimer = setTimeout(() => {
          if (alive()) load();
        }, 400);
      }
    });

    if (openComposer) openPanel(true);
    await load();
  }

  async function broadcastDetail(root, id, life) {
    const alive = () => root.isConnected;
    const base = `${API}/broadcasts/${encodeURIComponent(id)}`;
    root.append(backLink('#/broadcasts', 'Broadcasts'));
    let b;
    try {
      b = await SB.api('GET', base);
    } catch (error) {
      if (alive()) root.append(errorP(error));
      return;
    }
    if (!alive()) return;
    if (!b.counts) b.counts = emptyCounts();

    const msg = msgBox();
    const status = h('span', { 'data-broadcast-status': id }, badge(b.status));
    const bar = progressBar(id, b.status, b.counts);
    const counts = h('div');
    const facts = h('div');
    const leftOut = h('div');
    const cancelButton = h('button', { type: 'button', class: 'danger' }, 'Cancel broadcast');
    const preview = h('div', { class: 'ops-preview', 'data-preview': '' });
    const params = b.params || {};
    const kind = METHOD_MEDIA[b.method];
    messagePreview(preview, {
      kind,
      file: kind ? params[kind] : '',
      text: params.text || params.caption || '',
      rows: (params.reply_markup && params.reply_markup.inline_keyboard) || [],
      parseMode: params.parse_mode,
    });

    function render() {
      setProgress(root, id, b.status, b.counts);
      clear(counts);
      counts.append(dl(COUNT_KEYS.map((key) => [cap(key), num(b.counts[key] || 0), { 'data-count': key }]), 'ops-dl-compact ops-counts'));
      clear(facts);
      facts.append(dl([
        ['Created', time(b.created_at)],
        ['Send at', time(b.send_at)],
        ['Started', time(b.started_at)],
        ['Finished', time(b.finished_at)],
        ['Rate', typeof b.rate === 'number' ? `${b.rate.toFixed(1)} messages a second` : DASH],
        ['Audience', audienceText(b.audience)],
        ['Paid broadcast', b.paid ? 'Yes' : 'No'],
        ['Method', h('code', {}, b.method)],
        ['Id', h('code', {}, b.id)],
      ]));
      clear(leftOut);
      if (b.left_out) {
        const lo = b.left_out;
        leftOut.append(h('p', { class: 'muted ops-small' },
          `Left out: ${num(lo.no_chat || 0)} never wrote to the bot, ${num(lo.bot_blocked || 0)} blocked the bot, `,
          `${num(lo.blocked || 0)} blocked by an admin, ${num(lo.not_found || 0)} ids matched no user.`));
      }
      cancelButton.hidden = !ACTIVE.has(b.status);
      schedule();
    }

    // Live events carry the progress; a slow refresh covers a quiet feed.
    let timer = null;
    life.add(() => clearTimeout(timer));
    function schedule() {
      clearTimeout(timer);
      timer = null;
      if (ACTIVE.has(b.status) && alive()) timer = setTimeout(refresh, 10000);
    }

    function merge(fresh) {
      if (!fresh || !fresh.id) return;
      if (!fresh.counts) fresh.counts = emptyCounts();
      if (!ENDED.has(fresh.status) && ENDED.has(b.status)) return;
      if (!ENDED.has(fresh.status) && ended(fresh.counts) < ended(b.counts)) fresh.counts = b.counts;
      b = fresh;
    }

    async function refresh() {
      try {
        const fresh = await SB.api('GET', base);
        if (!alive()) return;
        merge(fresh);
        render();
      } catch (error) {
        if (alive()) fail(msg, error);
      }
    }

    cancelButton.addEventListener('click', act(cancelButton, msg, async () => {
      let r;
      try {
        r = await SB.api('POST', `${base}/cancel`);
      } catch (error) {
        if (error && error.code === 'broadcast_ended') refresh();
        throw error;
      }
      if (!alive()) return;
      merge(r);
      render();
      say(msg, 'The broadcast was cancelled.', 'ok');
      loadRecipients();
    }));

    // Recipients
    const rStatus = h('select', {}, ['', 'queued', 'sent', 'failed', 'blocked', 'unknown', 'cancelled'].map((v) => h('option', { value: v }, v ? cap(v) : 'All')));
    const rRefresh = h('button', { type: 'button' }, 'Refresh');
    const rMsg = msgBox();
    const rBox = h('div');
    let rOffset = 0;
    const R_LIMIT = 50;

    async function loadRecipients() {
      let page;
      try {
        page = await SB.api('GET', `${base}/recipients?${qs({ limit: R_LIMIT, offset: rOffset, status: rStatus.value })}`);
      } catch (error) {
        if (alive()) fail(rMsg, error);
        return;
      }
      if (!alive()) return;
      say(rMsg, '');
      clear(rBox);
      const items = (page && page.items) || [];
      if (!items.length) {
        rBox.append(h('p', { class: 'muted' }, rStatus.value ? `No ${rStatus.value} recipients.` : 'No recipients yet.'));
        return;
      }
      rBox.append(
        table('Recipients', ['User', 'Chat', 'Status', 'Error', 'Updated'], items.map((r) => h('tr', { 'data-id': r.user_id },
          h('td', {}, h('code', { class: 'ops-small' }, r.user_id)),
          h('td', { class: 'ops-num' }, String(r.chat_id)),
          h('td', {}, badge(r.status)),
          h('td', { class: 'ops-break' }, r.error || ''),
          h('td', {}, time(r.updated_at))))),
        pager(rOffset, R_LIMIT, page.total, (next) => {
          rOffset = next;
          loadRecipients();
        }));
    }
    rStatus.addEventListener('change', () => {
      rOffset = 0;
      loadRecipients();
    });
    rRefresh.addEventListener('click', act(rRefresh, rMsg, loadRecipients));

    subscribe(life, (env) => {
      if (!broadcastEnvelope(env) || env.payload.broadcast_id !== id || !alive()) return;
      if (!applyEvent(b, env)) return;
      render();
      if (env.type === 'broadcast.completed' || env.type === 'broadcast.cancelled' || env.type === 'broadcast.started') {
        refresh();
        loadRecipients();
      }
    });

    const h2 = (text) => h('h2', { id: uid('h') }, text);
    const sec = (heading, ...kids) => h('section', { class: 'ops-section', 'aria-labelledby': heading.id }, heading, kids);
    root.append(
      h('h1', {}, 'Broadcast'),
      h('p', { class: 'ops-status-line' }, 'Status: ', status),
      bar, counts, leftOut,
      h('div', { class: 'ops-toolbar' }, cancelButton),
      msg, facts,
      sec(h2('Message'), preview),
      sec(h2('Recipients'), h('div', { class: 'ops-toolbar' }, field('Recipient status', rStatus), rRefresh), rMsg, rBox));
    render();
    await loadRecipients();
  }

  // ------------------------------------------------------------ API keys

  /** Scopes an API key may carry (src/auth/permissions.rs: all but
   *  api_keys:manage, admins:manage and settings:manage). */
  const SCOPES = [
    ['events:read', 'read the event log and the live feed'],
    ['users:read', 'read users'],
    ['users:manage', 'edit, block and unblock users'],
    ['tickets:read', 'read tickets'],
    ['tickets:reply', 'answer and change tickets'],
    ['ledger:read', 'read payments, balances and subscriptions'],
    ['ledger:manage', 'record payments, refunds, top-ups and withdrawals'],
    ['stats:read', 'read the dashboard figures'],
    ['webhooks:manage', 'manage webhook endpoints'],
    ['telegram:send', 'send Telegram messages and broadcasts'],
    ['helpdesk:reply', 'send the helpdesk operators’ answers to users'],
  ];

  async function apiKeysView(root) {
    const alive = () => root.isConnected;
    const msg = msgBox();
    const listBox = h('div');
    const secretArea = h('div', { 'aria-live': 'polite' });
    const name = h('input', { type: 'text', maxlength: 100, autocomplete: 'off' });
    const allowed = SCOPES.filter(([scope]) => SB.can(scope));
    const boxes = allowed.map(([scope, what]) => ({ scope, what, input: h('input', { type: 'checkbox', value: scope }) }));
    const scopeSet = h('fieldset', { class: 'ops-fieldset ops-scopes' },
      h('legend', {}, 'Scopes'),
      boxes.length
        ? boxes.map(({ scope, what, input }) => h('label', { class: 'ops-check' }, input, ` ${scope}`, h('span', { class: 'muted' }, ` — ${what}`)))
        : h('p', { class: 'muted' }, 'You hold no permission an API key may carry.'));
    const createButton = h('button', { type: 'submit', disabled: !boxes.length }, 'Create API key');
    const formMsg = msgBox();
    const form = h('form', { class: 'ops-form', novalidate: true },
      field('Name', name, 'What uses the key, e.g. “CRM sync”.'),
      scopeSet,
      h('p', { class: 'muted ops-small' }, 'A key gets only the scopes ticked, and never more than you hold.'),
      h('div', { class: 'ops-toolbar' }, createButton), formMsg);
    const formTitle = h('h2', { id: uid('h') }, 'New API key');

    async function load() {
      let keys;
      try {
        keys = await SB.api('GET', `${API}/api-keys`);
      } catch (error) {
        if (alive()) fail(msg, error);
        return;
      }
      if (!alive()) return;
      clear(listBox);
      if (!Array.isArray(keys) || !keys.length) {
        listBox.append(h('p', { class: 'muted' }, 'No API keys yet.'));
        return;
      }
      listBox.append(table('API keys', ['Name', 'Key', 'Scopes', 'Created', 'Last used', 'State'], keys.map((k) => {
        let state;
        if (k.revoked_at) {
          state = h('span', { class: 'muted' }, `Revoked ${time(k.revoked_at)}`);
        } else {
          const revoke = h('button', { type: 'button', class: 'danger' }, 'Revoke');
          revoke.addEventListener('click', act(revoke, msg, async () => {
            if (!window.confirm(`Revoke the API key “${k.name}”? Whatever uses it loses access at once.`)) return;
            await SB.api('DELETE', `${API}/api-keys/${encodeURIComponent(k.id)}`);
            SB.toast('API key revoked', 'ok');
            await load();
            if (alive()) say(msg, `The API key “${k.name}” was revoked.`, 'ok');
          }));
          state = revoke;
        }
        return h('tr', { 'data-id': k.id, class: k.revoked_at ? 'ops-revoked' : null },
          h('td', {}, k.name),
          h('td', {}, h('code', {}, `${k.prefix}…`)),
          h('td', {}, (k.scopes || []).map((s) => h('code', { class: 'ops-scope' }, s))),
          h('td', {}, time(k.created_at)),
          h('td', {}, k.last_used_at ? time(k.last_used_at) : 'never'),
          h('td', {}, state));
      })));
    }

    form.addEventListener('submit', act(createButton, formMsg, async () => {
      const body = { name: name.value.trim(), scopes: boxes.filter((b) => b.input.checked).map((b) => b.scope) };
      const k = await SB.api('POST', `${API}/api-keys`, body);
      if (!alive()) return;
      form.reset();
      clear(secretArea);
      secretArea.append(h('section', { class: 'ops-panel ops-once' },
        h('h2', {}, `API key “${k.name}” created`),
        secretBox('API key', k.secret || '', 'Copy it now: it is shown only this once (only its hash is kept).'),
        h('button', { type: 'button', onclick: () => clear(secretArea) }, 'Done')));
      SB.toast('API key created', 'ok');
      await load();
    }, { name, scopes: scopeSet }));

    root.append(
      h('h1', {}, 'API keys'),
      h('section', { class: 'ops-panel', 'aria-labelledby': formTitle.id }, formTitle, form),
      secretArea, msg, listBox);
    await load();
  }

  // ------------------------------------------------------------ registration

  register('stats', 'Stats', 'stats:read', (root, params) => statsView(root, params));
  register('broadcasts', 'Broadcasts', 'telegram:send', (root, params, life) => (
    params[0] && params[0] !== 'new'
      ? broadcastDetail(root, params[0], life)
      : broadcastList(root, life, params[0] === 'new')));
  register('webhooks', 'Webhooks', 'webhooks:manage', (root, params, life) => (
    params[0] ? webhookDetail(root, params[0], life) : webhookList(root)));
  register('api-keys', 'API keys', 'api_keys:manage', (root) => apiKeysView(root));
})();
