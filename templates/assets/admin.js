/*
 * Switchboard admin dashboard: /admin (templates/pages/admin.html).
 * Classic script (no modules, no build step), CSP-safe: no innerHTML, no
 * inline styles or handlers. It defines the core `window.SB` and the views
 * Live feed, Tickets and Users; templates/assets/admin-ops.js (loaded after
 * this file) registers more views through the same core.
 *
 * ───────────── window.SB ─────────────
 * SB.api(method, path, body?, {quiet404}?) → Promise<parsed JSON | null>
 *     path "/api/v1/…" (or relative to /api/v1/: "admin/users"). Sends the
 *     bearer token and `body` as JSON (no body when undefined or null).
 *     204 → null; 404 with quiet404 → null; any other error → throws
 *     SB.ApiError. A 401 refreshes the tokens once and retries once.
 * new SB.ApiError(status, code, detail, errors?, problem?)
 *     .status (0: the server could not be reached), .code (the problem's
 *     `code`, or "network" / "http_<status>"), .detail (text for people),
 *     .errors ({field: message}; the API names one `field` per 422),
 *     .problem (the whole problem+json body, or null)
 * SB.me        the GET /api/v1/admin/me answer {kind, id, email, role, name,
 *              permissions[]}, or null while signed out
 * SB.can(permission) → bool   (permission null/undefined → true when signed in)
 * SB.el(tag, attrs?, ...children) → Element
 *     attrs: class (string or array), text, on<event> (function), data-*,
 *     style (object, applied through element.style), value/checked/selected
 *     (set as properties, after the children), any other attribute (true →
 *     present, false/null/undefined → left out). children: Nodes, strings
 *     (as text), arrays of them; null/false/undefined are skipped.
 * SB.view(name, {title, permission, render: async (main, params) => …,
 *              dispose?(main), nav?})
 *     Route #/<name>/<params…> (params: decoded path segments). `main` is a
 *     fresh container inside <main id="view">, so writes from a render that
 *     was navigated away from land in a detached node. A render may return a
 *     cleanup function (called when the view is left). The nav link (text =
 *     title) shows only if SB.can(permission); nav:false hides it.
 * SB.onEvent(handler) → unsubscribe   every event envelope from the feed
 *     socket ({id, type, position, cursor, stream, version, timestamp,
 *     actor, payload}), each id at most once per page.
 * SB.navigate(hash)   "#/tickets/<id>", "/tickets/<id>" or "tickets/<id>"
 * SB.toast(text, kind?)   kind: "info" | "ok" | "warn" | "error"
 * SB.fmtTime(iso) → string   (local date and time; "—" for none)
 * SB.fmtMoney(amountMinor, currency) → string
 *     amountMinor: an integer count of minor units, as every amount in the
 *     API is (cents for USD, kopecks for RUB, whole units for JPY, stars for
 *     XTR); currency: its ISO 4217 code (or XTR). 1250, "USD" → "$12.50".
 * Extras: SB.fetchBlob(path) → Promise<Blob> (authenticated GET);
 *     SB.onResync(fn) → unsubscribe (the server sent resync_required: reload
 *     state through the API); SB.onConnection(fn) → unsubscribe, fn(state)
 *     now and on change; SB.connection → "off" | "connecting" | "live" |
 *     "reconnecting"; SB.badge(text, tone?) → <span class="badge tone-…">;
 *     SB.errorBox(error) → <p class="error" role="alert">; SB.errorText(error);
 *     SB.qs({k: v}) → "?k=v" (empty values left out); SB.debounce(fn, ms)
 *     (with .cancel()); SB.table(columns [{label, cell(item)}], items,
 *     {empty, rowAttrs(item)}) → a responsive table, rows tr[data-id=item.id].
 *
 * ───────────── Hooks browser tests may rely on ─────────────
 * Page state: body[data-state] = "loading" | "signin" | "app".
 * Session: localStorage "switchboard.admin.session" = {"access_token",
 *   "refresh_token", "token_type", "access_expires_at" (ms since epoch),
 *   "access_ttl" (s)}; a test may seed it to start signed in; removed on
 *   sign-out (and a removal in another tab signs this one out too).
 * Sign-in (#signin): inputs labelled "E-mail", "Password"; button "Sign in";
 *   errors in #signin-error (role=alert).
 * Shell (#app): #me-email, #me-role; button "Sign out"; nav "Sections" with
 *   links "Live feed", "Tickets", "Users" (+ admin-ops.js's); <main id="view">;
 *   the landing view (no hash, or "#/") is Stats (#/stats, admin-ops.js)
 *   with stats:read, else the first section the account may open;
 *   #conn[data-state] = "off" | "connecting" | "live" | "reconnecting" with
 *   the text "offline" / "connecting…" / "live" / "reconnecting…".
 * Toasts: #toasts (role=status), each .toast[data-kind].
 * Live feed (#/feed): input labelled "Filter by type" (comma-separated,
 *   `*` wildcards; Enter or button "Apply filter" applies it); #feed-state
 *   (role=status, same texts as #conn); #feed-note ("Showing N events…");
 *   ol#feed-list, rows li[data-event-id][data-type][data-stream], newest
 *   first, each event once: the newest 100 (GET /admin/events?order=desc)
 *   then live ones on top; each row's <summary> opens a
 *   <pre class="event-json">. Button "Load older" (shown while there are
 *   older events) appends up to 100 older rows at the bottom.
 * Tickets (#/tickets): selects labelled "Status", "Priority", "Assignee";
 *   rows tr[data-id][data-unread] (class "unread" when unread > 0), the
 *   subject is a link to #/tickets/<id>; buttons "Previous page", "Next page".
 * Ticket (#/tickets/<id>): h1 = subject; #ticket[data-status][data-priority];
 *   ol.chat > li[data-message-id][data-author] (.from-user / .from-operator);
 *   a message's files (its `media`): photos and stickers
 *   img[data-file-id][data-media-type] (src: a blob: URL once loaded; the
 *   "[photo]" placeholder text is then not shown), other files a button
 *   "Download <kind>[ (<size>)]" with [data-file-id][data-media-type]
 *   (e.g. "Download document (12.5 KB)", "Download video note");
 *   textarea labelled "Reply" + button "Send reply"
 *   (Ctrl+Enter sends) with tickets:reply; selects labelled "Status",
 *   "Priority", "Assignee" with tickets:reply; errors in role=alert.
 * Users (#/users): input labelled "Search users" + button "Search", select
 *   "Status"; rows tr[data-id] with a link to #/users/<id>; "Previous page",
 *   "Next page".
 * User (#/users/<id>): h1 = the user's name; #user[data-status]; sections
 *   (h2) "Profile", "Balances", "Ledger", "Payments", "Subscription", "Top up".
 *   Profile form (users:manage): "Username", "First name", "Last name",
 *   "Language code", button "Save profile". Button "Block" with the input
 *   "Why block this user?", or button "Unblock" (users:manage). Balances
 *   li[data-currency]; ledger rows tr[data-id] (transaction id), buttons
 *   "Newer entries"/"Older entries"; payment rows tr[data-id], buttons
 *   "Newer payments"/"Older payments"; #subscription ("No subscription"
 *   when none). Top up (ledger:manage): "Amount" (integer minor units),
 *   "Currency", "Reason", button "Top up".
 */
(function () {
  "use strict";

  const API = "/api/v1";
  const SESSION_KEY = "switchboard.admin.session";
  const FILTER_KEY = "switchboard.admin.feedFilter";
  // The core object; filled in at the end of this file (views registered
  // below already read SB.me).
  const SB = { me: null };

  // ═════════════════════════════ DOM and formatting ═════════════════════════════

  const PROPERTIES = new Set(["value", "checked", "selected", "indeterminate"]);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    const properties = [];
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") {
        node.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : String(value);
      } else if (key === "text") {
        node.textContent = String(value);
      } else if (key === "style" && typeof value === "object") {
        Object.assign(node.style, value);
      } else if (key.startsWith("on") && typeof value === "function") {
        node.addEventListener(key.slice(2).toLowerCase(), value);
      } else if (PROPERTIES.has(key)) {
        properties.push([key, value]);
      } else if ((key === "href" || key === "src") && /^\s*javascript:/i.test(String(value))) {
        continue; // never a script URL, whatever the data says
      } else {
        node.setAttribute(key, value === true ? "" : String(value));
      }
    }
    appendChildren(node, children);
    // After the children: a <select>'s value needs its options.
    for (const [key, value] of properties) node[key] = value;
    return node;
  }

  function appendChildren(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) appendChildren(node, child);
      else if (child instanceof Node) node.appendChild(child);
      else node.appendChild(document.createTextNode(String(child)));
    }
  }

  /** Element.append with SB.el's rules for children (null/false skipped,
   * arrays flattened); `replace` empties the node first. */
  function put(node, children, replace) {
    if (replace) node.replaceChildren();
    appendChildren(node, children);
    return node;
  }

  let idCounter = 0;
  const uid = (prefix) => `${prefix}-${++idCounter}`;

  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  function fmtTime(iso) {
    if (iso === null || iso === undefined || iso === "") return "—";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : timeFormat.format(date);
  }

  function timeEl(iso, className) {
    return el("time", { class: className, datetime: iso || null, text: fmtTime(iso) });
  }

  /** Digits after the decimal point of a currency's minor unit. */
  function minorDigits(currency) {
    if (currency === "XTR") return 0; // Telegram Stars: whole stars
    try {
      return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    } catch (_) {
      return 2;
    }
  }

  function fmtMoney(amountMinor, currency) {
    const amount = Number(amountMinor);
    if (!Number.isFinite(amount)) return `${amountMinor} ${currency || ""}`.trim();
    if (!currency) return amount.toLocaleString();
    if (currency === "XTR") return `${amount.toLocaleString()} XTR`;
    const digits = minorDigits(currency);
    const value = amount / 10 ** digits;
    try {
      return new Intl.NumberFormat(undefined, {
        style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits,
      }).format(value);
    } catch (_) {
      return `${value.toFixed(digits)} ${currency}`;
    }
  }

  const clip = (text, max) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
  const capitalize = (text) => (text ? text[0].toUpperCase() + text.slice(1) : text);
  const shortId = (id) => (id ? String(id).slice(0, 8) : "—");

  function qs(params) {
    const search = new URLSearchParams();
    for (const [key, value] of Object.entries(params || {})) {
      if (value !== null && value !== undefined && value !== "") search.set(key, String(value));
    }
    const text = search.toString();
    return text ? `?${text}` : "";
  }

  function debounce(fn, ms) {
    let timer = 0;
    const debounced = (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
    debounced.cancel = () => clearTimeout(timer);
    return debounced;
  }

  const TONES = {
    ok: ["answered", "active", "completed", "sent", "live", "enabled", "delivered", "succeeded", "verified", "reachable"],
    warn: ["pending", "high", "queued", "sending", "running", "retrying", "unknown", "bot blocked"],
    danger: ["blocked", "failed", "urgent", "disabled", "dead", "error"],
    accent: ["open", "new", "started", "owner", "admin"],
  };

  function toneOf(text) {
    const value = String(text || "").toLowerCase();
    for (const [tone, words] of Object.entries(TONES)) if (words.includes(value)) return tone;
    return "muted";
  }

  function badge(text, tone) {
    return el("span", { class: `badge tone-${tone || toneOf(text)}`, "data-status": text, text });
  }

  // ═════════════════════════════ Errors and toasts ═════════════════════════════

  class ApiError extends Error {
    constructor(status, code, detail, errors, problem) {
      super(detail || code || `HTTP ${status}`);
      this.name = "ApiError";
      this.status = status;
      this.code = code;
      this.detail = detail || this.message;
      this.errors = errors || {};
      this.problem = problem || null;
    }
  }

  /** Thrown out of a load that was left (navigation, a newer load). */
  class Cancelled extends Error {}

  const networkError = () =>
    new ApiError(0, "network", "The server could not be reached. Check the connection and try again.");
  const signedOutError = () => new ApiError(401, "unauthorized", "You are signed out. Sign in again.");

  async function problemFrom(response) {
    let body = null;
    if (/json/.test(response.headers.get("content-type") || "")) {
      try {
        body = await response.json();
      } catch (_) {
        body = null;
      }
    }
    const errors = {};
    if (body && Array.isArray(body.errors)) {
      for (const e of body.errors) if (e && e.field) errors[e.field] = e.detail || e.message || "";
    } else if (body && body.errors && typeof body.errors === "object") {
      Object.assign(errors, body.errors);
    }
    if (body && body.field) errors[body.field] = body.detail || body.title || "";
    let detail = (body && (body.detail || body.title)) || response.statusText || `HTTP ${response.status}`;
    const retry = response.headers.get("retry-after");
    if (response.status === 429 && retry && !/retry/i.test(detail)) detail += ` (try again in ${retry} s)`;
    return new ApiError(response.status, (body && body.code) || `http_${response.status}`, detail, errors, body);
  }

  function errorText(error) {
    if (error instanceof ApiError) {
      if (error.status === 403) return `Not allowed: ${error.detail}`;
      return error.detail;
    }
    return (error && error.message) || String(error);
  }

  function errorBox(error) {
    return el("p", { class: "error", role: "alert", text: errorText(error) });
  }

  function toast(text, kind) {
    const box = document.getElementById("toasts");
    if (!box) return;
    const tone = kind || "info";
    const item = el("div", { class: "toast", "data-kind": tone },
      el("span", { text }),
      el("button", { type: "button", onclick: () => item.remove() }, "Dismiss"));
    box.append(item);
    setTimeout(() => item.remove(), tone === "error" ? 10000 : 5000);
  }

  /** Runs a cleanup; one that fails must not stop the others. */
  function safely(fn) {
    try {
      fn();
    } catch (error) {
      toast(`Something went wrong while leaving a page: ${errorText(error)}`, "error");
    }
  }

  // ═════════════════════════════ Session and tokens ═════════════════════════════

  function readStoredSession() {
    try {
      const stored = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
      return stored && stored.access_token && stored.refresh_token ? stored : null;
    } catch (_) {
      return null;
    }
  }

  const session = {
    data: null,
    load() {
      this.data = readStoredSession();
      return this.data;
    },
    /** Keeps a login or refresh answer (TokensOut). */
    save(tokens) {
      const ttl = Number(tokens.expires_in) || 900;
      this.data = {
        access_token: tokens.access_token,
        refresh_token: tokens.refresh_token,
        token_type: tokens.token_type || "Bearer",
        access_expires_at: Date.now() + ttl * 1000,
        access_ttl: ttl,
      };
      try {
        localStorage.setItem(SESSION_KEY, JSON.stringify(this.data));
      } catch (_) {
        // Storage full or disabled: the session still works in this tab.
      }
    },
    clear() {
      this.data = null;
      try {
        localStorage.removeItem(SESSION_KEY);
      } catch (_) {
        // nothing kept, nothing to remove
      }
    },
  };

  /** How long before the access token expires it is refreshed: 60 s, or a
   * quarter of its lifetime when that is shorter (short test TTLs). */
  const refreshLead = (data) => Math.min(60000, (data.access_ttl || 900) * 250);

  let refreshing = null;
  let refreshTimer = 0;

  /** Exchanges the refresh token for a new pair; concurrent callers share one
   * exchange, and tabs take turns (a rotated token is single use). */
  function refreshTokens() {
    if (!refreshing) refreshing = exchangeRefreshToken().finally(() => { refreshing = null; });
    return refreshing;
  }

  async function exchangeRefreshToken() {
    const known = session.data;
    if (!known) throw signedOutError();
    const exchange = async () => {
      const stored = readStoredSession();
      if (!stored) throw signedOutError();
      if (stored.refresh_token !== known.refresh_token) {
        session.data = stored; // another tab rotated it meanwhile: use its pair
        return;
      }
      let response;
      try {
        response = await fetch(`${API}/auth/refresh`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify({ refresh_token: stored.refresh_token }),
        });
      } catch (_) {
        throw networkError();
      }
      if (!response.ok) {
        const error = await problemFrom(response);
        // Refused (revoked, reused, expired): the session is over. A 429 or
        // a 5xx is not a refusal; the caller may try again.
        if (response.status >= 400 && response.status < 500 && response.status !== 429) {
          endSession("Your session has ended. Sign in again.", false);
        }
        throw error;
      }
      session.save(await response.json());
    };
    if (navigator.locks && navigator.locks.request) {
      await navigator.locks.request("switchboard.admin.refresh", exchange);
    } else {
      await exchange();
    }
    tokensChanged();
  }

  function tokensChanged() {
    scheduleRefresh();
    socketSendAuth();
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const data = session.data;
    if (!data) return;
    const delay = Math.max(0, data.access_expires_at - refreshLead(data) - Date.now());
    refreshTimer = setTimeout(backgroundRefresh, delay);
  }

  function backgroundRefresh() {
    refreshTokens().catch(() => {
      // Signed out: the sign-in form says why. Otherwise (network, 5xx,
      // 429) try again shortly.
      if (session.data) refreshTimer = setTimeout(backgroundRefresh, 15000);
    });
  }

  /** An access token with at least `minMs` to live (refreshing if needed). */
  async function accessToken(minMs) {
    if (!session.data) throw signedOutError();
    if (session.data.access_expires_at - Date.now() < minMs) await refreshTokens();
    if (!session.data) throw signedOutError();
    return session.data.access_token;
  }

  // ═════════════════════════════ HTTP ═════════════════════════════

  const resolvePath = (path) => (String(path).startsWith("/") ? String(path) : `${API}/${path}`);

  async function authedFetch(method, path, body, accept) {
    const send = (token) => {
      const headers = { accept, authorization: `Bearer ${token}` };
      const init = { method, headers };
      if (body !== undefined && body !== null) {
        headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      return fetch(path, init).catch(() => { throw networkError(); });
    };
    const token = await accessToken(5000);
    const response = await send(token);
    if (response.status !== 401) return response;
    // Once: refresh (unless another request already did) and retry.
    if (session.data && session.data.access_token === token) await refreshTokens();
    if (!session.data) throw signedOutError();
    return send(session.data.access_token);
  }

  async function api(method, path, body, options) {
    const opts = options || {};
    const response = await authedFetch(String(method || "GET").toUpperCase(), resolvePath(path), body,
      "application/json, application/problem+json");
    if (response.status === 404 && opts.quiet404) return null;
    if (!response.ok) throw await problemFrom(response);
    if (response.status === 204) return null;
    const text = await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (_) {
      throw new ApiError(response.status, "invalid_response", "The server's answer could not be read.");
    }
  }

  async function fetchBlob(path) {
    const response = await authedFetch("GET", resolvePath(path), undefined, "*/*");
    if (!response.ok) throw await problemFrom(response);
    return response.blob();
  }

  // ═════════════════════════════ The feed socket ═════════════════════════════
  // One WebSocket per page. It resumes with the cursor of the newest event
  // seen, so a reconnect loses nothing. The Live feed view joins its REST
  // page to it through socketTap (every position the socket takes, events
  // again included after a restart from an earlier cursor) and
  // socketRestartFrom (the page's `head`).

  const eventHandlers = new Set();
  const tapHandlers = new Set();
  const resyncHandlers = new Set();
  const connectionHandlers = new Set();
  const CONNECTION_TEXT = { off: "offline", connecting: "connecting…", live: "live", reconnecting: "reconnecting…" };

  const socket = {
    ws: null,
    running: false,
    cursor: null,      // resume point: the newest cursor seen (null: from the head)
    state: "off",
    backoff: 1000,
    retryTimer: 0,
    pingTimer: 0,
    greeted: false,    // the current connection's `connection` message came
    liveSince: 0,
    tokenInUse: null,
    seen: new Set(),   // event ids delivered (bounded)
    seenOrder: [],
  };
  let unloading = false;

  function setConnection(state) {
    if (socket.state === state) return;
    socket.state = state;
    const badgeEl = document.getElementById("conn");
    if (badgeEl) {
      badgeEl.dataset.state = state;
      badgeEl.textContent = CONNECTION_TEXT[state];
    }
    for (const handler of connectionHandlers) safely(() => handler(state));
  }

  function onEvent(handler) {
    eventHandlers.add(handler);
    return () => eventHandlers.delete(handler);
  }

  function onResync(handler) {
    resyncHandlers.add(handler);
    return () => resyncHandlers.delete(handler);
  }

  /** Internal (the Live feed): handler({cursor, event}) each time the socket
   * moves: event = the envelope delivered (also one delivered before, after
   * a restart from an earlier cursor; SB.onEvent handlers never see those
   * twice), or null when a connection is greeted at `cursor`. */
  function socketTap(handler) {
    tapHandlers.add(handler);
    return () => tapHandlers.delete(handler);
  }

  function tap(cursor, event) {
    for (const handler of tapHandlers) {
      try {
        handler({ cursor, event });
      } catch (error) {
        toast(`A live update could not be shown: ${errorText(error)}`, "error");
      }
    }
  }

  function onConnection(handler) {
    connectionHandlers.add(handler);
    handler(socket.state);
    return () => connectionHandlers.delete(handler);
  }

  /** Starts the socket (from `cursor`, or from the last one known). */
  function socketStart(cursor) {
    if (socket.running || !can("events:read")) return;
    socket.running = true;
    if (cursor) socket.cursor = cursor;
    connect();
  }

  function socketStop() {
    socket.running = false;
    clearTimeout(socket.retryTimer);
    dropSocket();
    socket.cursor = null;
    socket.backoff = 1000;
    socket.liveSince = 0;
    socket.seen.clear();
    socket.seenOrder = [];
    setConnection("off");
  }

  /** Reconnects from `cursor` (the head of the feed view's REST page). */
  function socketRestartFrom(cursor) {
    if (!socket.running) {
      socketStart(cursor);
      return;
    }
    socket.cursor = cursor;
    socket.backoff = 1000;
    clearTimeout(socket.retryTimer);
    dropSocket();
    connect();
  }

  function dropSocket() {
    const ws = socket.ws;
    socket.ws = null;
    clearInterval(socket.pingTimer);
    if (!ws) return;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
    // Closing a socket still connecting makes the browser log an error:
    // let it open, then close it.
    if (ws.readyState === WebSocket.CONNECTING) ws.onopen = () => ws.close(1000);
    else ws.close(1000);
  }

  async function connect() {
    clearTimeout(socket.retryTimer);
    setConnection(socket.liveSince ? "reconnecting" : "connecting");
    let token;
    try {
      token = await accessToken(refreshLead(session.data || {}));
    } catch (_) {
      if (socket.running) scheduleReconnect();
      return;
    }
    if (!socket.running || socket.ws) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/ws${qs({ token, cursor: socket.cursor })}`;
    const ws = new WebSocket(url);
    socket.ws = ws;
    socket.greeted = false;
    socket.tokenInUse = token;
    ws.onmessage = (message) => onSocketMessage(ws, message);
    ws.onclose = (event) => onSocketClose(ws, event);
    ws.onerror = () => {}; // a close follows
  }

  function scheduleReconnect() {
    clearTimeout(socket.retryTimer);
    const delay = socket.backoff;
    socket.backoff = Math.min(socket.backoff * 2, 30000);
    socket.retryTimer = setTimeout(connect, delay);
  }

  function onSocketMessage(ws, message) {
    if (ws !== socket.ws) return;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    if (!data || typeof data !== "object") return;
    if (data.id && data.cursor && typeof data.type === "string" && data.type.includes(".")) {
      deliver(data);
      return;
    }
    if (data.type === "connection") {
      socket.greeted = true;
      socket.liveSince = Date.now();
      if (data.cursor) socket.cursor = data.cursor;
      if (socket.cursor) tap(socket.cursor, null);
      setConnection("live");
      clearInterval(socket.pingTimer);
      socket.pingTimer = setInterval(() => sendJson({ type: "ping" }), 20000);
      // Refreshed while connecting: hand the socket the new token.
      if (session.data && session.data.access_token !== socket.tokenInUse) socketSendAuth();
    } else if (data.type === "resync_required") {
      // The server skipped to its head and goes on live from `cursor`.
      socket.cursor = data.cursor || null;
      for (const handler of resyncHandlers) safely(() => handler());
    }
    // pong, subscribed, authenticated, error: nothing to do.
  }

  function deliver(envelope) {
    socket.cursor = envelope.cursor;
    tap(envelope.cursor, envelope);
    if (socket.seen.has(envelope.id)) return;
    socket.seen.add(envelope.id);
    socket.seenOrder.push(envelope.id);
    if (socket.seenOrder.length > 5000) socket.seen.delete(socket.seenOrder.shift());
    for (const handler of eventHandlers) {
      try {
        handler(envelope);
      } catch (error) {
        toast(`A live update could not be shown: ${errorText(error)}`, "error");
      }
    }
  }

  function onSocketClose(ws, event) {
    if (ws !== socket.ws) return;
    socket.ws = null;
    clearInterval(socket.pingTimer);
    if (!socket.running || unloading) return;
    setConnection("reconnecting");
    // A connection that stayed up a while starts the backoff over.
    if (socket.greeted && Date.now() - socket.liveSince > 10000) socket.backoff = 1000;
    if (event.code === 4001) {
      // The token expired or was revoked: refresh, then reconnect.
      refreshTokens().then(scheduleReconnect, () => { if (socket.running) scheduleReconnect(); });
      return;
    }
    if (!socket.greeted) checkSession(); // refused before the upgrade (401/403) or no network
    scheduleReconnect();
  }

  /** After a refused connection: /admin/me refreshes a dead token (or signs
   * out) and brings changed permissions. */
  function checkSession() {
    api("GET", `${API}/admin/me`).then((me) => {
      if (!me) return;
      SB.me = me;
      if (!can("events:read")) socketStop();
    }, () => {});
  }

  function sendJson(value) {
    const ws = socket.ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(value));
  }

  function socketSendAuth() {
    if (!socket.ws || !socket.greeted || !session.data) return;
    socket.tokenInUse = session.data.access_token;
    sendJson({ type: "auth", token: session.data.access_token });
  }

  // ═════════════════════════════ Views and routing ═════════════════════════════

  const views = new Map();
  let current = null; // {def, root, cleanup}
  let viewMain = null;

  function can(permission) {
    if (!SB.me) return false;
    if (permission === null || permission === undefined || permission === "") return true;
    return Array.isArray(SB.me.permissions) && SB.me.permissions.includes(permission);
  }

  function view(name, definition) {
    views.set(name, Object.assign({ name, title: name, permission: null, nav: true }, definition));
    if (SB.me) buildNav();
  }

  function parseHash() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").filter((part) => part !== "");
    const decode = (part) => {
      try {
        return decodeURIComponent(part);
      } catch (_) {
        return part;
      }
    };
    return { name: parts.length ? decode(parts[0]) : "", params: parts.slice(1).map(decode) };
  }

  /** The landing view: Stats for those who may read it, else the first
   * permitted one. */
  function firstView() {
    const stats = views.get("stats");
    if (stats && stats.nav !== false && can("stats:read") && can(stats.permission)) return stats;
    for (const def of views.values()) if (def.nav !== false && can(def.permission)) return def;
    return null;
  }

  function buildNav() {
    const list = document.getElementById("nav-list");
    if (!list) return;
    const links = [];
    for (const def of views.values()) {
      if (def.nav === false || !can(def.permission)) continue;
      links.push(el("li", {}, el("a", { href: `#/${def.name}`, "data-view": def.name }, def.title)));
    }
    list.replaceChildren(...links);
    markNav();
  }

  function markNav() {
    const name = (current && current.def.name) || parseHash().name || (firstView() || {}).name;
    for (const link of document.querySelectorAll("#nav-list a")) {
      if (link.dataset.view === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function leaveView() {
    const left = current;
    current = null;
    if (!left) return;
    if (left.cleanup) safely(left.cleanup);
    if (left.def.dispose) safely(() => left.def.dispose(left.root));
  }

  async function route() {
    if (!SB.me || !viewMain) return;
    leaveView();
    const { name, params } = parseHash();
    const def = name ? views.get(name) : firstView();
    const root = el("div", { class: "view-root" });
    viewMain.replaceChildren(root);
    // Every view but the feed may start the socket at once; the feed starts
    // it from the `head` of its first REST page.
    if (!def || def.name !== "feed") socketStart();
    if (!def) {
      document.title = "Not found · Switchboard admin";
      markNav();
      root.append(el("h1", { text: name ? "Not found" : "Nothing to show" }),
        el("p", {}, name ? "There is no page at this address." : "Your account may not open any page here."));
      return;
    }
    document.title = `${def.title} · Switchboard admin`;
    const entry = { def, root, cleanup: null };
    current = entry;
    markNav();
    if (!can(def.permission)) {
      root.append(el("h1", { text: def.title }),
        el("p", { class: "error", role: "alert", text: `You may not open this page: it needs the ${def.permission} permission.` }));
      return;
    }
    try {
      const cleanup = await def.render(root, params);
      if (typeof cleanup === "function") {
        if (current === entry) entry.cleanup = cleanup;
        else safely(cleanup); // left while rendering
      }
    } catch (error) {
      if (!(error instanceof Cancelled) && current === entry) root.append(errorBox(error));
    }
  }

  function navigate(hash) {
    let target = String(hash || "");
    if (!target.startsWith("#")) target = `#${target.startsWith("/") ? target : `/${target}`}`;
    if (location.hash === target) route();
    else location.hash = target;
  }

  // ═════════════════════════════ Shell: sign in, sign out ═════════════════════════════

  function show(state) {
    document.body.dataset.state = state;
    document.getElementById("boot").hidden = state !== "loading";
    document.getElementById("signin").hidden = state !== "signin";
    document.getElementById("app").hidden = state !== "app";
  }

  function showSignIn(message) {
    show("signin");
    document.getElementById("signin-error").textContent = message || "";
    const email = document.querySelector("#signin-form input[name=email]");
    if (email) email.focus();
  }

  async function onSignInSubmit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button[type=submit]");
    const errorLine = document.getElementById("signin-error");
    const email = form.elements.email.value.trim();
    const password = form.elements.password.value;
    errorLine.textContent = "";
    button.disabled = true;
    try {
      let response;
      try {
        response = await fetch(`${API}/auth/login`, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify({ email, password }),
        });
      } catch (_) {
        throw networkError();
      }
      if (!response.ok) throw await problemFrom(response);
      session.save(await response.json());
      form.elements.password.value = "";
      await startSignedIn();
    } catch (error) {
      errorLine.textContent = errorText(error);
    } finally {
      button.disabled = false;
    }
  }

  async function startSignedIn() {
    show("loading");
    const boot = document.getElementById("boot");
    boot.textContent = "Loading…";
    let me;
    try {
      me = await api("GET", `${API}/admin/me`);
    } catch (error) {
      if (!session.data) {
        // A refused refresh already showed the sign-in form with its reason.
        if (document.body.dataset.state !== "signin") showSignIn(errorText(error));
        return;
      }
      boot.replaceChildren(errorBox(error),
        el("div", { class: "actions" },
          el("button", { type: "button", onclick: () => startSignedIn() }, "Try again"),
          el("button", { type: "button", onclick: () => signOut() }, "Sign out")));
      return;
    }
    SB.me = me;
    document.getElementById("me-email").textContent = me.email || me.name || shortId(me.id);
    document.getElementById("me-role").textContent = me.role || me.kind || "";
    setConnection("off");
    show("app");
    scheduleRefresh();
    buildNav();
    viewMain.focus({ preventScroll: true });
    await route();
  }

  /** Ends this tab's session locally; `tellServer` also ends it server-side. */
  function endSession(message, tellServer) {
    const tokens = session.data;
    session.clear();
    clearTimeout(refreshTimer);
    socketStop();
    leaveView();
    resetCaches();
    SB.me = null;
    if (viewMain) viewMain.replaceChildren();
    document.getElementById("nav-list").replaceChildren();
    showSignIn(message);
    if (tellServer && tokens) logOutOnServer(tokens);
  }

  function signOut() {
    endSession("", true);
  }

  /** POST /auth/logout; with an expired access token, refresh first so the
   * refresh token dies too. Failures are of no consequence to this tab. */
  async function logOutOnServer(tokens) {
    const post = (path, headers, body) => fetch(`${API}${path}`, { method: "POST", headers, body });
    try {
      let access = tokens.access_token;
      if (tokens.access_expires_at - Date.now() < 5000) {
        const response = await post("/auth/refresh", { "content-type": "application/json" },
          JSON.stringify({ refresh_token: tokens.refresh_token }));
        if (!response.ok) return;
        access = (await response.json()).access_token;
      }
      await post("/auth/logout", { authorization: `Bearer ${access}` });
    } catch (_) {
      // offline: the tokens expire by themselves
    }
  }

  /** Another tab refreshed, signed in or signed out. */
  function onStorage(event) {
    if (event.key !== SESSION_KEY && event.key !== null) return;
    const stored = readStoredSession();
    if (!stored) {
      if (SB.me) endSession("You signed out in another tab.", false);
      return;
    }
    if (!session.data || !SB.me) {
      if (document.body.dataset.state === "signin") {
        session.data = stored;
        startSignedIn();
      }
      return;
    }
    if (stored.refresh_token !== session.data.refresh_token) {
      session.data = stored;
      tokensChanged();
    }
  }

  function onVisible() {
    if (document.visibilityState !== "visible" || !session.data || !SB.me) return;
    if (session.data.access_expires_at - Date.now() < refreshLead(session.data)) backgroundRefresh();
    if (socket.running && !socket.ws) connect();
  }

  function boot() {
    viewMain = document.getElementById("view");
    document.getElementById("signin-form").addEventListener("submit", onSignInSubmit);
    document.getElementById("signout").addEventListener("click", signOut);
    window.addEventListener("hashchange", () => {
      route();
      if (viewMain) viewMain.focus({ preventScroll: true });
    });
    window.addEventListener("storage", onStorage);
    window.addEventListener("online", () => { if (socket.running && !socket.ws) connect(); });
    window.addEventListener("pagehide", () => { unloading = true; });
    window.addEventListener("pageshow", () => {
      unloading = false;
      if (socket.running && !socket.ws) connect();
    });
    document.addEventListener("visibilitychange", onVisible);
    if (session.load()) startSignedIn();
    else showSignIn("");
  }

  // ═════════════════════════════ Shared view pieces ═════════════════════════════

  function table(columns, items, options) {
    const opts = options || {};
    if (!items.length) return el("p", { class: "empty", text: opts.empty || "Nothing to show." });
    const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", text: c.label })));
    const rows = items.map((item) => {
      const attrs = Object.assign({ "data-id": item.id }, opts.rowAttrs ? opts.rowAttrs(item) : {});
      return el("tr", attrs, columns.map((c) => el("td", { "data-label": c.label, class: c.class }, c.cell(item))));
    });
    return el("div", { class: "table-wrap" }, el("table", { class: "stack" }, el("thead", {}, head), el("tbody", {}, rows)));
  }

  function selectEl(options, value, attrs) {
    return el("select", Object.assign({ value }, attrs || {}),
      options.map(([optionValue, label]) => el("option", { value: optionValue }, label)));
  }

  /** "Previous" / "Next" buttons for a paged list; `go(page)` loads a page. */
  function pager(labels) {
    const info = el("span");
    const previous = el("button", { type: "button" }, labels[0]);
    const next = el("button", { type: "button" }, labels[1]);
    const node = el("div", { class: "pager" }, previous, info, next);
    let go = () => {};
    let page = 1;
    previous.addEventListener("click", () => go(page - 1));
    next.addEventListener("click", () => go(page + 1));
    return {
      node,
      /** From a page answer {page, per_page, total}. */
      update(answer, onGo) {
        go = onGo;
        page = answer.page || 1;
        const pages = Math.max(1, Math.ceil((answer.total || 0) / (answer.per_page || 1)));
        info.textContent = `Page ${page} of ${pages} · ${answer.total} in all`;
        previous.disabled = page <= 1;
        next.disabled = page >= pages;
        node.hidden = pages <= 1 && page <= 1;
      },
    };
  }

  function fieldLabel(text, control, hint) {
    if (!hint) return el("label", {}, text, control);
    const hintId = uid("hint");
    control.setAttribute("aria-describedby", hintId);
    return el("div", {}, el("label", {}, text, control), el("p", { class: "hint", id: hintId, text: hint }));
  }

  /** Marks the fields an ApiError names; clears the others. */
  function markInvalid(form, error) {
    for (const input of form.querySelectorAll("input, select, textarea")) input.removeAttribute("aria-invalid");
    const errors = (error && error.errors) || {};
    for (const field of Object.keys(errors)) {
      const input = form.elements[field];
      if (input && input.setAttribute) input.setAttribute("aria-invalid", "true");
    }
  }

  // ═════════════════════════════ The event log, read through REST ═════════════════════════════
  // GET /api/v1/admin/events?order=desc reads the log back, newest first.
  // The first page (no cursor) also names the log's `head` when it was
  // read: the socket resumed from it carries every event after the page.

  const FEED_ROWS = 100;      // rows a load (and each "Load older") shows
  const FEED_MAX_ROWS = 500;  // rows kept as live ones come in (more after "Load older")
  const PAGE_MAX = 500;       // the API's largest page
  const SCAN_PAGES = 10;      // pages read at most for one load filtered in the browser

  /** Reads the log back from `cursor` (from the newest when none) until
   * `want` events `matcher` accepts were found, the log's start, or
   * SCAN_PAGES pages. `type`: the API's filter (undefined: none). Answers
   * {rows (newest first), older (the cursor to read on from, null at the
   * log's start), head (the first page's), scanned (events read)}. */
  async function readBack({ cursor, type, matcher, want, alive }) {
    const rows = [];
    let sent = cursor || null;
    let head = null;
    let scanned = 0;
    for (let pages = 0; pages < SCAN_PAGES; pages += 1) {
      if (alive && !alive()) throw new Cancelled();
      // The first page is the newest FEED_ROWS; a filter kept in the
      // browser reads on in the largest pages.
      const limit = pages === 0 || type ? FEED_ROWS : PAGE_MAX;
      const page = await api("GET", `${API}/admin/events${qs({ order: "desc", cursor: sent, type, limit })}`);
      if (alive && !alive()) throw new Cancelled();
      if (!sent && page.head) head = page.head;
      const events = page.events || [];
      scanned += events.length;
      for (const event of events) {
        if (!matcher(event)) continue;
        rows.push(event);
        // Enough: read on from this one next time.
        if (rows.length >= want) return { rows, older: event.cursor, head, scanned };
      }
      const next = page.next_cursor || null;
      // Nothing before it: the start of the log.
      if (!next || next === sent || (!events.length && !sent && next === page.head)) {
        return { rows, older: null, head, scanned };
      }
      sent = next;
    }
    return { rows, older: sent, head, scanned };
  }

  /** "ticket.*, payment.completed" → a predicate on envelopes. */
  function typeMatcher(text) {
    const patterns = splitPatterns(text);
    if (!patterns.length) return () => true;
    const escape = (part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&");
    const regexps = patterns.map((p) => new RegExp(`^${p.split("*").map(escape).join(".*")}$`));
    return (event) => regexps.some((r) => r.test(event.type));
  }

  const splitPatterns = (text) => String(text || "").split(",").map((p) => p.trim()).filter(Boolean);

  /** The API's `type` parameter takes one exact type or one `family.*`. */
  function serverTypeOf(text) {
    const patterns = splitPatterns(text);
    if (patterns.length !== 1) return undefined;
    return /^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$/.test(patterns[0]) ? patterns[0] : undefined;
  }

  function typeTone(type) {
    if (/failed|blocked|refunded|cancelled|expired|send_failed|relay_failed/.test(type)) return "danger";
    if (/completed|activated|renewed|sent|unblocked|verified|granted/.test(type)) return "ok";
    if (/^ticket\./.test(type)) return "accent";
    return "muted";
  }

  /** A one-line gist of an event's payload. */
  function summarize(event) {
    const p = event.payload || {};
    const parts = [];
    if ("old_status" in p || "new_status" in p) parts.push(`${p.old_status ?? "—"} → ${p.new_status ?? "—"}`);
    if ("old_priority" in p || "new_priority" in p) parts.push(`${p.old_priority ?? "—"} → ${p.new_priority ?? "—"}`);
    if (typeof p.amount === "number" && typeof p.currency === "string") parts.push(fmtMoney(p.amount, p.currency));
    for (const key of ["subject", "text", "caption", "reason", "kind", "status", "provider", "email", "username", "plan_id", "author", "channel", "method", "error"]) {
      if (parts.length >= 4) break;
      const value = p[key];
      if (typeof value !== "string" || !value) continue;
      parts.push(["subject", "text", "caption"].includes(key) ? `“${clip(value, 60)}”` : `${key}: ${clip(value, 40)}`);
    }
    if (!parts.length) {
      // Any other scalars, ids last (the stream already names the entity).
      const scalars = Object.entries(p).filter(([, value]) => value !== null && typeof value !== "object");
      scalars.sort(([a], [b]) => Number(a.endsWith("_id")) - Number(b.endsWith("_id")));
      for (const [key, value] of scalars.slice(0, 3)) parts.push(`${key}: ${clip(String(value), 40)}`);
    }
    return clip(parts.join(" · "), 160);
  }

  function eventRow(event) {
    const pre = el("pre", { class: "event-json" });
    const details = el("details", {},
      el("summary", {},
        timeEl(event.timestamp, "ev-time"),
        el("span", { class: "ev-type" }, badge(event.type, typeTone(event.type))),
        el("code", { class: "ev-stream", title: event.stream, text: event.stream || "" }),
        el("span", { class: "ev-summary", text: summarize(event) })),
      pre);
    // The JSON is built when the row is first opened.
    details.addEventListener("toggle", () => {
      if (details.open && !pre.textContent) pre.textContent = JSON.stringify(event, null, 2);
    });
    return el("li", { "data-event-id": event.id, "data-type": event.type, "data-stream": event.stream, "data-position": event.position }, details);
  }

  // ═════════════════════════════ View: Live feed ═════════════════════════════

  function storedFilter() {
    try {
      return localStorage.getItem(FILTER_KEY) || "";
    } catch (_) {
      return "";
    }
  }

  function storeFilter(text) {
    try {
      if (text) localStorage.setItem(FILTER_KEY, text);
      else localStorage.removeItem(FILTER_KEY);
    } catch (_) {
      // not kept across reloads; still applied
    }
  }

  async function renderFeed(main) {
    const cleanup = [];
    const shown = new Map(); // event id → cursor, for the rows in the list
    let filterText = storedFilter();
    let matcher = typeMatcher(filterText);
    let loading = false;
    let buffer = [];   // live events that came while the newest page loaded
    let marks = [];    // where the socket stood meanwhile: {cursor, count: events in buffer}
    let older = null;  // "Load older" reads back from here (null: the log's start was shown)
    let maxRows = FEED_MAX_ROWS;
    let loadSeq = 0;

    const input = el("input", {
      type: "text", name: "types", value: filterText, autocomplete: "off", spellcheck: "false",
      placeholder: "ticket.*, payment.completed",
    });
    const form = el("form", { class: "toolbar", role: "search" },
      fieldLabel("Filter by type", input),
      el("button", { type: "submit" }, "Apply filter"));
    const stateLine = el("span", { id: "feed-state", class: "conn", role: "status" });
    const note = el("p", { id: "feed-note", class: "muted" });
    const list = el("ol", { id: "feed-list", class: "feed", "aria-label": "Events, newest first" });
    const olderButton = el("button", { type: "button", hidden: true }, "Load older");
    const olderNote = el("p", { class: "muted", "aria-live": "polite" });
    main.append(el("div", { class: "view-head" }, el("h1", { text: "Live feed" }), stateLine), form, note, list,
      el("div", { class: "actions feed-more" }, olderButton), olderNote);

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      filterText = splitPatterns(input.value).join(",");
      input.value = filterText;
      storeFilter(filterText);
      matcher = typeMatcher(filterText);
      load();
    });

    const describe = () => {
      const count = list.children.length;
      note.textContent = `Showing ${count} event${count === 1 ? "" : "s"}, newest first${filterText ? `, of types ${filterText}` : ""}.`;
    };

    const showOlder = () => {
      olderButton.hidden = !older;
      if (!older && list.children.length) olderNote.textContent = "These are all the events.";
    };

    /** Drops the oldest rows past maxRows; "Load older" goes on from the
     * oldest row left. */
    const trim = () => {
      if (list.children.length <= maxRows) return;
      while (list.children.length > maxRows) {
        shown.delete(list.lastElementChild.dataset.eventId);
        list.lastElementChild.remove();
      }
      older = shown.get(list.lastElementChild.dataset.eventId) || older;
      olderNote.textContent = "";
      showOlder();
    };

    const addLive = (event) => {
      if (shown.has(event.id) || !matcher(event)) return;
      shown.set(event.id, event.cursor);
      const row = eventRow(event);
      row.classList.add("fresh");
      list.prepend(row);
      trim();
      describe();
    };

    async function load() {
      const seq = ++loadSeq;
      const alive = () => seq === loadSeq && main.isConnected;
      loading = true;
      buffer = [];
      marks = socket.running && socket.cursor ? [{ cursor: socket.cursor, count: 0 }] : [];
      note.textContent = "Reading the newest events…";
      olderButton.hidden = true;
      olderNote.textContent = "";
      let page;
      try {
        page = await readBack({ type: serverTypeOf(filterText), matcher, want: FEED_ROWS, alive });
      } catch (error) {
        if (!alive()) return;
        loading = false;
        buffer = [];
        note.replaceChildren(errorBox(error), el("button", { type: "button", onclick: () => load() }, "Try again"));
        socketStart();
        return;
      }
      if (!alive()) return;
      shown.clear();
      maxRows = FEED_MAX_ROWS;
      list.replaceChildren(...page.rows.map((event) => {
        shown.set(event.id, event.cursor);
        return eventRow(event);
      }));
      older = page.older;
      // Join the socket to the page. The page holds the log up to `head`.
      // If the socket stood at `head` since the read began, what it
      // delivered after that point follows the page; else it restarts
      // from `head` (events it delivers again are told apart by id).
      const pending = buffer;
      const mark = page.head ? marks.find((m) => m.cursor === page.head) : null;
      loading = false;
      buffer = [];
      marks = [];
      if (mark) {
        pending.slice(mark.count).forEach(addLive);
      } else if (page.head) {
        socketRestartFrom(page.head);
      } else {
        pending.forEach(addLive); // no head (an older server): the socket goes on
        socketStart();
      }
      describe();
      showOlder();
    }

    async function loadOlder() {
      if (!older || loading) return;
      const seq = loadSeq;
      const alive = () => seq === loadSeq && main.isConnected;
      olderButton.disabled = true;
      olderNote.textContent = "Reading older events…";
      try {
        const page = await readBack({ cursor: older, type: serverTypeOf(filterText), matcher, want: FEED_ROWS, alive });
        if (!alive()) return;
        const rows = page.rows.filter((event) => !shown.has(event.id)).map((event) => {
          shown.set(event.id, event.cursor);
          return eventRow(event);
        });
        list.append(...rows);
        maxRows = Math.max(maxRows, list.children.length);
        older = page.older;
        olderNote.textContent = rows.length ? `${rows.length} older event${rows.length === 1 ? "" : "s"} added.`
          : `No older events${filterText ? " of these types" : ""} among the ${page.scanned.toLocaleString()} read.`;
        describe();
      } catch (error) {
        if (!alive()) return;
        olderNote.replaceChildren(errorBox(error));
      } finally {
        if (alive()) {
          olderButton.disabled = false;
          showOlder();
        }
      }
    }
    olderButton.addEventListener("click", loadOlder);

    cleanup.push(onConnection((state) => {
      stateLine.dataset.state = state;
      stateLine.textContent = CONNECTION_TEXT[state];
    }));
    cleanup.push(socketTap(({ cursor, event }) => {
      if (loading) {
        if (event) buffer.push(event);
        marks.push({ cursor, count: buffer.length });
      } else if (event) {
        addLive(event);
      }
    }));
    cleanup.push(onResync(() => load()));
    const leave = () => {
      loadSeq += 1; // stops a read in progress
      cleanup.forEach((fn) => fn());
    };
    await load();
    return leave;
  }

  view("feed", { title: "Live feed", permission: "events:read", render: renderFeed });

  // ═════════════════════════════ View: Tickets ═════════════════════════════

  const TICKET_STATUSES = ["open", "answered", "pending", "closed"];
  const PRIORITIES = ["low", "normal", "high", "urgent"];
  const ticketFilters = { status: "", priority: "", assignee: "", page: 1 };
  let adminsPromise = null;

  /** Admin accounts (GET /admin/admins needs admins:manage), or null. */
  function loadAdmins() {
    if (!can("admins:manage")) return Promise.resolve(null);
    if (!adminsPromise) adminsPromise = api("GET", `${API}/admin/admins`).catch((error) => { adminsPromise = null; throw error; });
    return adminsPromise;
  }

  async function adminDirectory() {
    let admins = null;
    let error = null;
    try {
      admins = await loadAdmins();
    } catch (e) {
      error = e;
    }
    const names = new Map((admins || []).map((a) => [a.id, a.email]));
    if (SB.me && SB.me.kind === "admin") names.set(SB.me.id, SB.me.email || "me");
    const name = (id) => {
      if (!id) return "Unassigned";
      if (SB.me && id === SB.me.id) return "Me";
      return names.get(id) || `Admin ${shortId(id)}`;
    };
    /** [value, label] pairs: me first, then the other admins. */
    const options = () => {
      const list = [];
      if (SB.me && SB.me.kind === "admin") list.push([SB.me.id, "Me"]);
      for (const a of admins || []) if (a.id !== (SB.me && SB.me.id) && !a.disabled) list.push([a.id, a.email]);
      return list;
    };
    return { name, options, error };
  }

  function renderTickets(main, params) {
    return params[0] ? renderTicket(main, params[0]) : renderTicketList(main);
  }

  async function renderTicketList(main) {
    const cleanup = [];
    const directory = await adminDirectory();
    const status = selectEl([["", "Any status"], ...TICKET_STATUSES.map((s) => [s, capitalize(s)])], ticketFilters.status);
    const priority = selectEl([["", "Any priority"], ...PRIORITIES.map((p) => [p, capitalize(p)])], ticketFilters.priority);
    const assignee = selectEl([["", "Anyone"], ...directory.options()], ticketFilters.assignee);
    const summary = el("p", { class: "muted", "aria-live": "polite" });
    const box = el("div");
    const pages = pager(["Previous page", "Next page"]);
    put(main, [el("div", { class: "view-head" }, el("h1", { text: "Tickets" })),
      el("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() },
        el("label", {}, "Status", status), el("label", {}, "Priority", priority), el("label", {}, "Assignee", assignee)),
      directory.error ? el("p", { class: "error", role: "alert", text: `The admin list could not be read: ${errorText(directory.error)}` }) : null,
      summary, box, pages.node]);

    const columns = [
      { label: "Subject", cell: (t) => [el("a", { href: `#/tickets/${t.id}` }, t.subject || "(no subject)"), " ", t.unread > 0 ? el("span", { class: "badge count", text: `${t.unread} unread` }) : null] },
      { label: "Status", cell: (t) => badge(t.status) },
      { label: "Priority", cell: (t) => badge(t.priority) },
      { label: "Assignee", cell: (t) => directory.name(t.assignee_id) },
      { label: "Messages", cell: (t) => String(t.messages_count) },
      { label: "Last activity", cell: (t) => timeEl(t.last_message_at) },
    ];

    let loadSeq = 0;
    async function load() {
      const seq = ++loadSeq;
      if (!box.firstChild) summary.textContent = "Loading…";
      try {
        const answer = await api("GET", `${API}/admin/tickets${qs({
          status: ticketFilters.status, priority: ticketFilters.priority,
          assignee_id: ticketFilters.assignee, page: ticketFilters.page, per_page: 50,
          sort: "unread",
        })}`);
        if (seq !== loadSeq) return;
        const unread = answer.items.filter((t) => t.unread > 0).length;
        summary.textContent = `${answer.total} ticket${answer.total === 1 ? "" : "s"}${unread ? `, ${unread} with unread messages on this page` : ""}.`;
        // The API puts unread tickets first, then the latest activity.
        box.replaceChildren(table(columns, answer.items, {
          empty: "No tickets match these filters.",
          rowAttrs: (t) => ({ class: t.unread > 0 ? "unread" : null, "data-unread": t.unread }),
        }));
        pages.update(answer, (page) => { ticketFilters.page = page; load(); });
      } catch (error) {
        if (seq !== loadSeq) return;
        summary.textContent = "";
        box.replaceChildren(errorBox(error));
      }
    }

    const onFilter = (key, select) => select.addEventListener("change", () => {
      ticketFilters[key] = select.value;
      ticketFilters.page = 1;
      load();
    });
    onFilter("status", status);
    onFilter("priority", priority);
    onFilter("assignee", assignee);

    const reload = debounce(load, 400);
    cleanup.push(onEvent((event) => { if (event.type.startsWith("ticket.")) reload(); }));
    cleanup.push(onResync(reload));
    cleanup.push(reload.cancel);
    await load();
    return () => cleanup.forEach((fn) => fn());
  }

  // ─── Files in tickets ───
  // A message a user sent through Telegram carries its files (`media`).
  // Each is read through GET /admin/telegram/files/{file_id} with the bearer
  // token and shown from an object URL, revoked when the ticket is left.

  const IMAGE_KINDS = new Set(["photo", "sticker"]);
  const FILE_EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif",
    "video/mp4": ".mp4", "video/webm": ".webm", "audio/ogg": ".ogg", "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a", "application/pdf": ".pdf", "application/zip": ".zip", "text/plain": ".txt",
  };

  /** The text the server keeps for a message that had only files. */
  const mediaPlaceholder = (media) => media.map((m) => `[${m.type}]`).join(" ");

  function fmtSize(bytes) {
    const n = Number(bytes);
    if (!Number.isFinite(n) || n <= 0) return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KB`;
    return `${(n / (1024 * 1024)).toFixed(1)} MB`;
  }

  /** The files of one ticket view: each file read once (4 at a time), its
   * object URL revoked by dispose(). */
  function fileStore() {
    const files = new Map(); // file_id → Promise<{blob, url}>
    const waiting = [];
    let running = 0;
    let open = true;

    const limited = (task) => new Promise((resolve, reject) => {
      const run = () => {
        running += 1;
        task().then(resolve, reject).finally(() => {
          running -= 1;
          const next = waiting.shift();
          if (next) next();
        });
      };
      if (running < 4) run();
      else waiting.push(run);
    });

    return {
      get(fileId) {
        if (!open) return Promise.reject(new Cancelled());
        let file = files.get(fileId);
        if (!file) {
          file = limited(() => {
            if (!open) return Promise.reject(new Cancelled());
            return fetchBlob(`${API}/admin/telegram/files/${encodeURIComponent(fileId)}`);
          }).then((blob) => {
            if (!open) throw new Cancelled(); // the ticket was left meanwhile
            return { blob, url: URL.createObjectURL(blob) };
          });
          files.set(fileId, file);
          file.catch(() => { if (files.get(fileId) === file) files.delete(fileId); }); // may be tried again
        }
        return file;
      },
      dispose() {
        open = false;
        waiting.length = 0;
        for (const file of files.values()) file.then((f) => URL.revokeObjectURL(f.url), () => {});
        files.clear();
      },
    };
  }

  /** A file as a "Download …" button. */
  function fileButton(media, files) {
    const kind = String(media.type || "file");
    const size = fmtSize(media.file_size);
    const button = el("button", { type: "button", class: "msg-file", "data-file-id": media.file_id, "data-media-type": kind },
      `Download ${kind.replace(/_/g, " ")}${size ? ` (${size})` : ""}`);
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const file = await files.get(media.file_id);
        const extension = FILE_EXTENSIONS[(file.blob.type || "").split(";")[0]] || "";
        const link = el("a", { href: file.url, download: `${kind}-${media.file_unique_id || "file"}${extension}`, hidden: true });
        document.body.append(link);
        link.click();
        link.remove();
      } catch (error) {
        if (!(error instanceof Cancelled)) toast(`The file could not be downloaded: ${errorText(error)}`, "error");
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  /** One file of a message: photos and stickers as images, the rest as a
   * download button (so is a sticker the browser cannot show). */
  function mediaItem(media, files) {
    const kind = String(media.type || "file");
    if (!IMAGE_KINDS.has(kind)) return el("figure", { class: "msg-media", "data-media-type": kind }, fileButton(media, files));
    const img = el("img", {
      alt: kind === "sticker" ? "Sticker sent by the user" : "Photo sent by the user",
      "data-file-id": media.file_id, "data-media-type": kind,
    });
    const figure = el("figure", { class: ["msg-media", kind === "sticker" ? "sticker" : null], "data-media-type": kind }, img);
    img.addEventListener("error", () => {
      if (img.getAttribute("src")) figure.replaceChildren(fileButton(media, files)); // not an image format it knows
    });
    files.get(media.file_id).then((file) => {
      img.src = file.url;
    }, (error) => {
      if (error instanceof Cancelled) return;
      figure.replaceChildren(el("p", { class: "error", text: `The ${kind} could not be loaded: ${errorText(error)}` }),
        fileButton(media, files));
    });
    return figure;
  }

  // ─── One ticket ───

  async function renderTicket(main, id) {
    const base = `${API}/admin/tickets/${encodeURIComponent(id)}`;
    const back = el("a", { class: "back", href: "#/tickets" }, "← All tickets");
    main.append(back, el("p", { class: "muted", text: "Loading…" }));
    let ticket;
    let directory;
    try {
      [ticket, directory] = await Promise.all([api("GET", base, undefined, { quiet404: true }), adminDirectory()]);
    } catch (error) {
      main.replaceChildren(back, el("h1", { text: "Ticket" }), errorBox(error));
      return undefined;
    }
    if (!ticket) {
      main.replaceChildren(back, el("h1", { text: "Ticket not found" }), el("p", { text: "No ticket has this id." }));
      return undefined;
    }
    const cleanup = [];
    const files = fileStore();     // the messages' files; revoked on leaving
    const shown = new Set();       // message ids in the chat
    const mayReply = can("tickets:reply");
    let state = ticket;

    const title = el("h1");
    const meta = el("div", { class: "ticket-meta" });
    const errorLine = el("p", { class: "error form-error", role: "alert" });
    const chat = el("ol", { class: "chat", "aria-label": "Messages", "aria-live": "polite" });
    const wrapper = el("section", { id: "ticket", "data-id": id }, title, meta);
    main.replaceChildren(back, wrapper);

    // Status, priority and assignee (tickets:reply changes them).
    const controls = {};
    if (mayReply) {
      controls.status = selectEl(TICKET_STATUSES.map((s) => [s, capitalize(s)]), ticket.status);
      controls.priority = selectEl(PRIORITIES.map((p) => [p, capitalize(p)]), ticket.priority);
      controls.assignee = selectEl([["", "Unassigned"], ...directory.options()], ticket.assignee_id || "");
      wrapper.append(el("div", { class: "toolbar" },
        el("label", {}, "Status", controls.status),
        el("label", {}, "Priority", controls.priority),
        el("label", {}, "Assignee", controls.assignee)));
      for (const field of ["status", "priority", "assignee"]) {
        controls[field].addEventListener("change", () => change(field, controls[field]));
      }
    }
    wrapper.append(errorLine, chat);

    function renderHead() {
      title.textContent = state.subject || "(no subject)";
      wrapper.dataset.status = state.status;
      wrapper.dataset.priority = state.priority;
      const userLink = can("users:read") ? el("a", { href: `#/users/${state.user_id}`, "data-user-id": state.user_id }, "the user's profile") : null;
      put(meta, [badge(state.status), badge(state.priority),
        el("span", {}, "Assignee: ", directory.name(state.assignee_id)),
        el("span", {}, "Opened ", timeEl(state.created_at)),
        userLink ? el("span", {}, "See ", userLink) : null], true);
      for (const [field, value] of [["status", state.status], ["priority", state.priority], ["assignee", state.assignee_id || ""]]) {
        const select = controls[field];
        if (!select || select.disabled) continue;
        if (field === "assignee" && value && ![...select.options].some((o) => o.value === value)) {
          select.append(el("option", { value }, directory.name(value)));
        }
        select.value = value;
        select.dataset.current = value;
      }
    }

    function addMessage(message) {
      if (shown.has(message.id)) return;
      shown.add(message.id);
      const fromUser = message.author === "user";
      const who = fromUser ? "User" : (message.author_id ? directory.name(message.author_id) : "Operator");
      const media = (Array.isArray(message.media) ? message.media : []).filter((m) => m && m.file_id);
      const text = String(message.text || "");
      // "[photo]" (or "[photo] [document]"…) only stands for the files shown.
      const placeholder = media.length > 0 && text.trim() === mediaPlaceholder(media);
      const item = el("li", {
        class: ["msg", fromUser ? "from-user" : "from-operator"],
        "data-message-id": message.id, "data-author": message.author, "data-channel": message.channel,
      },
      placeholder ? null : el("p", { class: "msg-text", text }),
      media.map((m) => mediaItem(m, files)),
      el("div", { class: "msg-meta" }, `${who} · ${message.channel} · `, timeEl(message.created_at)));
      chat.append(item);
    }

    function apply(next) {
      state = next;
      renderHead();
      (next.messages || []).forEach(addMessage);
    }

    async function change(field, select) {
      const body = field === "assignee" ? { assignee_id: select.value || null } : { [field]: select.value };
      errorLine.textContent = "";
      select.disabled = true;
      try {
        const next = await api("PUT", `${base}/${field}`, body);
        select.disabled = false;
        apply(next);
        toast(`${capitalize(field)} changed.`, "ok");
      } catch (error) {
        select.disabled = false;
        select.value = select.dataset.current || "";
        errorLine.textContent = errorText(error);
      }
    }

    if (mayReply) wrapper.append(replyForm());

    function replyForm() {
      const textarea = el("textarea", { name: "text", rows: "3", maxlength: "10000" });
      const send = el("button", { type: "submit" }, "Send reply");
      const replyError = el("p", { class: "error", role: "alert" });
      const form = el("form", { class: "reply" },
        fieldLabel("Reply", textarea), el("div", { class: "actions" }, send, el("span", { class: "hint", text: "Ctrl+Enter sends." })), replyError);
      textarea.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          form.requestSubmit();
        }
      });
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const text = textarea.value.trim();
        replyError.textContent = "";
        if (!text) {
          replyError.textContent = "Write a reply first.";
          textarea.focus();
          return;
        }
        send.disabled = true;
        try {
          const added = await api("POST", `${base}/messages`, { text });
          addMessage(added.message);
          state = Object.assign({}, state, { status: added.status });
          renderHead();
          textarea.value = "";
          toast(added.telegram_send_id ? "Reply sent, also to the user's Telegram chat." : "Reply sent.", "ok");
        } catch (error) {
          replyError.textContent = errorText(error);
        } finally {
          send.disabled = false;
        }
      });
      return form;
    }

    // Live: show a new message at once, then read the ticket again (which
    // also marks it read and brings status, priority and assignee).
    let refetchSeq = 0;
    const refetch = debounce(async () => {
      const seq = ++refetchSeq;
      try {
        const next = await api("GET", base);
        if (seq === refetchSeq && main.isConnected) apply(next);
      } catch (error) {
        if (main.isConnected) errorLine.textContent = errorText(error);
      }
    }, 300);
    cleanup.push(onEvent((event) => {
      const p = event.payload || {};
      if (p.ticket_id !== id) return;
      if (event.type === "ticket.message_added") {
        addMessage({
          id: p.message_id, author: p.author, author_id: p.author_id, text: p.text, channel: p.channel,
          created_at: event.timestamp, media: p.media,
        });
      }
      refetch();
    }));
    cleanup.push(onResync(refetch));
    cleanup.push(refetch.cancel);
    cleanup.push(() => files.dispose());

    apply(ticket);
    return () => cleanup.forEach((fn) => fn());
  }

  view("tickets", { title: "Tickets", permission: "tickets:read", render: renderTickets });

  // ═════════════════════════════ View: Users ═════════════════════════════

  const userQuery = { q: "", status: "", page: 1 };

  function displayName(user) {
    const name = [user.first_name, user.last_name].filter(Boolean).join(" ");
    return name || (user.username ? `@${user.username}` : "") || user.email || `User ${shortId(user.id)}`;
  }

  function renderUsers(main, params) {
    return params[0] ? renderUser(main, params[0]) : renderUserList(main);
  }

  async function renderUserList(main) {
    const cleanup = [];
    const search = el("input", { type: "search", name: "q", value: userQuery.q, autocomplete: "off", placeholder: "username, e-mail or Telegram id" });
    const status = selectEl([["", "Any status"], ["active", "Active"], ["blocked", "Blocked"]], userQuery.status);
    const form = el("form", { class: "toolbar", role: "search" },
      el("label", {}, "Search users", search), el("label", {}, "Status", status), el("button", { type: "submit" }, "Search"));
    const summary = el("p", { class: "muted", "aria-live": "polite" });
    const box = el("div");
    const pages = pager(["Previous page", "Next page"]);
    main.append(el("div", { class: "view-head" }, el("h1", { text: "Users" })), form, summary, box, pages.node);

    const columns = [
      { label: "Name", cell: (u) => el("a", { href: `#/users/${u.id}` }, displayName(u)) },
      { label: "Username", cell: (u) => (u.username ? `@${u.username}` : "—") },
      { label: "Telegram id", cell: (u) => (u.telegram_id === null || u.telegram_id === undefined ? "—" : String(u.telegram_id)) },
      { label: "E-mail", cell: (u) => (u.email ? [u.email, " ", u.email_verified ? badge("verified") : badge("unverified", "muted")] : "—") },
      { label: "Status", cell: (u) => badge(u.status) },
      { label: "Bot", cell: (u) => (u.bot_blocked ? badge("bot blocked") : u.telegram_reachable ? badge("reachable") : "—") },
      { label: "Joined", cell: (u) => timeEl(u.created_at) },
    ];

    let loadSeq = 0;
    async function load() {
      const seq = ++loadSeq;
      if (!box.firstChild) summary.textContent = "Loading…";
      try {
        const answer = await api("GET", `${API}/admin/users${qs({ q: userQuery.q, status: userQuery.status, page: userQuery.page, per_page: 50 })}`);
        if (seq !== loadSeq) return;
        summary.textContent = `${answer.total} user${answer.total === 1 ? "" : "s"}${userQuery.q ? ` matching “${userQuery.q}”` : ""}.`;
        box.replaceChildren(table(columns, answer.items, { empty: "No users match." }));
        pages.update(answer, (page) => { userQuery.page = page; load(); });
      } catch (error) {
        if (seq !== loadSeq) return;
        summary.textContent = "";
        box.replaceChildren(errorBox(error));
      }
    }

    const applySearch = () => {
      userQuery.q = search.value.trim();
      userQuery.status = status.value;
      userQuery.page = 1;
      load();
    };
    const typed = debounce(applySearch, 350);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      typed.cancel();
      applySearch();
    });
    search.addEventListener("input", typed);
    status.addEventListener("change", applySearch);
    const reload = debounce(load, 1000);
    cleanup.push(onEvent((event) => { if (event.type.startsWith("user.")) reload(); }));
    cleanup.push(onResync(reload));
    cleanup.push(typed.cancel, reload.cancel);
    await load();
    return () => cleanup.forEach((fn) => fn());
  }

  // ─── One user ───

  async function renderUser(main, id) {
    const base = `${API}/admin/users/${encodeURIComponent(id)}`;
    const back = el("a", { class: "back", href: "#/users" }, "← All users");
    main.append(back, el("p", { class: "muted", text: "Loading…" }));
    let user;
    try {
      user = await api("GET", base, undefined, { quiet404: true });
    } catch (error) {
      main.replaceChildren(back, el("h1", { text: "User" }), errorBox(error));
      return undefined;
    }
    if (!user) {
      main.replaceChildren(back, el("h1", { text: "User not found" }), el("p", { text: "No user has this id." }));
      return undefined;
    }
    const cleanup = [];
    const page = el("section", { id: "user", "data-id": id });
    main.replaceChildren(back, page);
    const profile = userProfile(page, base, user);
    const money = can("ledger:read") ? userMoney(page, id) : null;
    const subscription = userSubscription(page, id);
    if (can("ledger:manage")) userTopUp(page, base, () => money && money.reload(), () => (money ? money.currencies() : []));

    const reloadProfile = debounce(profile.reload, 300);
    const reloadMoney = debounce(() => money && money.reload(), 300);
    const reloadSubscription = debounce(subscription.reload, 300);
    cleanup.push(onEvent((event) => {
      const p = event.payload || {};
      if (p.user_id !== id) return;
      if (event.type.startsWith("user.")) reloadProfile();
      else if (/^(transaction|payment)\./.test(event.type)) reloadMoney();
      else if (event.type.startsWith("subscription.")) reloadSubscription();
    }));
    cleanup.push(onResync(() => { reloadProfile(); reloadMoney(); reloadSubscription(); }));
    cleanup.push(reloadProfile.cancel, reloadMoney.cancel, reloadSubscription.cancel);
    return () => cleanup.forEach((fn) => fn());
  }

  function panel(parent, heading) {
    const section = el("section", { class: "panel" }, el("h2", { text: heading }));
    parent.append(section);
    return section;
  }

  /** Header, profile facts, profile edit form and block / unblock. */
  function userProfile(page, base, initial) {
    let user = initial;
    const title = el("h1");
    const meta = el("div", { class: "ticket-meta" });
    page.append(title, meta);
    const section = panel(page, "Profile");
    const facts = el("dl", { class: "kv" });
    section.append(facts);
    const manage = can("users:manage");
    const editForm = manage ? profileForm() : null;
    const blockBox = manage ? el("div") : null;
    if (editForm) section.append(editForm.node);
    if (blockBox) section.append(blockBox);

    function render() {
      title.textContent = displayName(user);
      page.dataset.status = user.status;
      put(meta, [badge(user.status),
        user.bot_blocked ? badge("bot blocked") : null,
        el("span", {}, "Joined ", timeEl(user.created_at))], true);
      const row = (label, value) => [el("dt", { text: label }), el("dd", {}, value === null || value === undefined || value === "" ? "—" : value)];
      facts.replaceChildren(
        ...row("Id", el("code", { text: user.id })),
        ...row("Username", user.username ? `@${user.username}` : null),
        ...row("First name", user.first_name),
        ...row("Last name", user.last_name),
        ...row("Language", user.language_code),
        ...row("E-mail", user.email ? [user.email, " ", user.email_verified ? badge("verified") : badge("unverified", "muted")] : null),
        ...row("Telegram id", user.telegram_id === null || user.telegram_id === undefined ? null : String(user.telegram_id)),
        ...row("Telegram", user.bot_blocked ? "Blocked the bot" : user.telegram_reachable ? "The bot can write to them" : "The bot cannot write to them"),
        ...row("Referral code", user.referral_code ? el("code", { text: user.referral_code }) : null));
      if (editForm) editForm.fill(user);
      if (blockBox && blockBox.dataset.status !== user.status) renderBlock();
    }

    function profileForm() {
      const fields = [["username", "Username", 64], ["first_name", "First name", 128], ["last_name", "Last name", 128], ["language_code", "Language code", 16]];
      const inputs = {};
      let dirty = false; // typed into and not saved: live updates leave it alone
      const errorLine = el("p", { class: "error", role: "alert" });
      const save = el("button", { type: "submit" }, "Save profile");
      const form = el("form", {},
        el("div", { class: "form-grid" }, fields.map(([name, label, max]) => {
          inputs[name] = el("input", { type: "text", name, maxlength: String(max), autocomplete: "off" });
          return el("label", {}, label, inputs[name]);
        })),
        el("p", { class: "hint", text: "Only the fields you change are sent; the API cannot empty a field." }),
        el("div", { class: "actions" }, save), errorLine);
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        const changes = {};
        for (const [name] of fields) {
          const value = inputs[name].value.trim();
          if (value !== (user[name] || "")) changes[name] = value;
        }
        errorLine.textContent = "";
        markInvalid(form, null);
        if (!Object.keys(changes).length) {
          errorLine.textContent = "Nothing to save: no field was changed.";
          return;
        }
        save.disabled = true;
        try {
          user = await api("PATCH", base, changes);
          dirty = false;
          render();
          toast("Profile saved.", "ok");
        } catch (error) {
          errorLine.textContent = errorText(error);
          markInvalid(form, error);
        } finally {
          save.disabled = false;
        }
      });
      form.addEventListener("input", () => { dirty = true; });
      const fill = (u) => {
        if (dirty) return;
        for (const [name] of fields) inputs[name].value = u[name] || "";
      };
      return { node: form, fill };
    }

    function renderBlock() {
      blockBox.dataset.status = user.status;
      const errorLine = el("p", { class: "error", role: "alert" });
      if (user.status === "blocked") {
        const unblock = el("button", { type: "button" }, "Unblock");
        unblock.addEventListener("click", () => act(unblock, errorLine, "unblock", undefined, "User unblocked."));
        blockBox.replaceChildren(el("h3", { text: "Blocked" }), el("div", { class: "actions" }, unblock), errorLine);
        return;
      }
      const reason = el("input", { type: "text", name: "reason", maxlength: "500", required: true, autocomplete: "off" });
      const block = el("button", { type: "submit", class: "danger" }, "Block");
      const form = el("form", { novalidate: true }, el("h3", { text: "Block this user" }),
        fieldLabel("Why block this user?", reason, "Blocking ends every cabinet session of the user at once."),
        el("div", { class: "actions" }, block), errorLine);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const text = reason.value.trim();
        if (!text) {
          errorLine.textContent = "Say why the user is blocked.";
          reason.focus();
          return;
        }
        act(block, errorLine, "block", { reason: text }, "User blocked.");
      });
      blockBox.replaceChildren(form);
    }

    async function act(button, errorLine, action, body, done) {
      button.disabled = true;
      errorLine.textContent = "";
      try {
        user = await api("POST", `${base}/${action}`, body);
        render();
        toast(done, "ok");
      } catch (error) {
        errorLine.textContent = errorText(error);
      } finally {
        button.disabled = false;
      }
    }

    async function reload() {
      try {
        const next = await api("GET", base, undefined, { quiet404: true });
        if (next) {
          user = next;
          render();
        }
      } catch (error) {
        toast(`The profile could not be refreshed: ${errorText(error)}`, "error");
      }
    }

    render();
    return { reload };
  }

  /** Balances, ledger and payments (ledger:read). */
  function userMoney(page, id) {
    const balancesSection = panel(page, "Balances");
    const balances = el("ul", { class: "balances" });
    balancesSection.append(balances);
    const ledgerSection = panel(page, "Ledger");
    const ledgerBox = el("div");
    const ledgerPager = pager(["Newer entries", "Older entries"]);
    ledgerSection.append(ledgerBox, ledgerPager.node);
    const paymentsSection = panel(page, "Payments");
    const paymentsBox = el("div");
    const paymentsPager = pager(["Newer payments", "Older payments"]);
    paymentsSection.append(paymentsBox, paymentsPager.node);
    let ledgerPage = 1;
    let paymentsPage = 1;
    let currencies = [];

    const amountCell = (amount, currency) => el("span", { class: amount < 0 ? "neg" : "pos", text: fmtMoney(amount, currency) });
    const ledgerColumns = [
      { label: "When", cell: (t) => timeEl(t.created_at) },
      { label: "Kind", cell: (t) => t.kind },
      { label: "Amount", cell: (t) => amountCell(t.amount, t.currency) },
      { label: "Balance after", cell: (t) => fmtMoney(t.balance_after, t.currency) },
      { label: "Description", cell: (t) => t.description || t.reference || "—" },
    ];
    const paymentColumns = [
      { label: "When", cell: (p) => timeEl(p.created_at) },
      { label: "Amount", cell: (p) => fmtMoney(p.amount, p.currency) },
      { label: "Provider", cell: (p) => p.provider },
      { label: "Status", cell: (p) => badge(p.status) },
      { label: "External id", cell: (p) => el("code", { text: p.external_id }) },
      { label: "Failure", cell: (p) => p.failure_reason || "—" },
    ];

    async function loadLedger() {
      try {
        const answer = await api("GET", `${API}/admin/users/${encodeURIComponent(id)}/ledger${qs({ page: ledgerPage, per_page: 20 })}`);
        currencies = answer.balances.map((b) => b.currency);
        balances.replaceChildren(...(answer.balances.length
          ? answer.balances.map((b) => el("li", { "data-currency": b.currency }, el("strong", { text: fmtMoney(b.balance, b.currency) })))
          : [el("li", { class: "empty", text: "No balance yet." })]));
        ledgerBox.replaceChildren(table(ledgerColumns, answer.transactions.items, { empty: "No ledger entries yet." }));
        ledgerPager.update(answer.transactions, (n) => { ledgerPage = n; loadLedger(); });
      } catch (error) {
        balances.replaceChildren(el("li", {}, errorBox(error)));
        ledgerBox.replaceChildren();
      }
    }

    async function loadPayments() {
      try {
        const answer = await api("GET", `${API}/admin/payments${qs({ user_id: id, page: paymentsPage, per_page: 20 })}`);
        paymentsBox.replaceChildren(table(paymentColumns, answer.items, { empty: "No payments yet." }));
        paymentsPager.update(answer, (n) => { paymentsPage = n; loadPayments(); });
      } catch (error) {
        paymentsBox.replaceChildren(errorBox(error));
      }
    }

    const reload = () => Promise.all([loadLedger(), loadPayments()]);
    reload();
    return { reload, currencies: () => currencies };
  }

  /** The user's subscription. GET /admin/subscriptions has no user filter:
   * its pages are read until the user's row turns up. */
  function userSubscription(page, id) {
    const section = panel(page, "Subscription");
    const box = el("div", { id: "subscription" }, el("p", { class: "muted", text: "Loading…" }));
    section.append(box);
    let seq = 0;

    async function find() {
      for (let n = 1; ; n += 1) {
        const answer = await api("GET", `${API}/admin/subscriptions${qs({ page: n, per_page: 100 })}`);
        const found = answer.items.find((s) => s.user_id === id);
        if (found) return found;
        if (n * answer.per_page >= answer.total || !answer.items.length) return null;
      }
    }

    async function reload() {
      const mine = ++seq;
      try {
        const found = await find();
        if (mine !== seq) return;
        if (!found) {
          box.replaceChildren(el("p", { class: "empty", text: "No subscription" }));
          return;
        }
        box.replaceChildren(el("dl", { class: "kv", "data-status": found.status },
          el("dt", { text: "Plan" }), el("dd", {}, el("code", { text: found.plan_id })),
          el("dt", { text: "Status" }), el("dd", {}, badge(found.status)),
          el("dt", { text: "Started" }), el("dd", {}, timeEl(found.started_at)),
          el("dt", { text: found.status === "active" ? "Ends" : "Ended" }), el("dd", {}, timeEl(found.expires_at))));
      } catch (error) {
        if (mine === seq) box.replaceChildren(errorBox(error));
      }
    }

    reload();
    return { reload };
  }

  /** POST /admin/users/{id}/top-up: {amount (minor units), currency, reason}. */
  function userTopUp(page, base, done, currencies) {
    const section = panel(page, "Top up");
    const amount = el("input", { type: "number", name: "amount", min: "1", max: "1000000000000", step: "1", inputmode: "numeric", required: true });
    const currency = el("input", { type: "text", name: "currency", maxlength: "3", required: true, autocomplete: "off", list: uid("currencies"), class: "currency" });
    const datalist = el("datalist", { id: currency.getAttribute("list") });
    const reason = el("input", { type: "text", name: "reason", maxlength: "500", required: true, autocomplete: "off" });
    const preview = el("p", { class: "hint", "aria-live": "polite" });
    const submit = el("button", { type: "submit" }, "Top up");
    const errorLine = el("p", { class: "error", role: "alert" });
    const form = el("form", { novalidate: true }, // checked below, with messages in the page
      el("div", { class: "form-grid" },
        fieldLabel("Amount", amount, "In minor units: cents, kopecks… (1250 in USD is $12.50)."),
        el("label", {}, "Currency", currency),
        el("label", {}, "Reason", reason)),
      datalist, preview, el("div", { class: "actions" }, submit), errorLine);
    section.append(form);

    const showPreview = () => {
      const code = currency.value.trim().toUpperCase();
      const value = Number(amount.value);
      preview.textContent = Number.isInteger(value) && value > 0 && /^[A-Z]{3}$/.test(code) ? `= ${fmtMoney(value, code)}` : "";
    };
    amount.addEventListener("input", showPreview);
    currency.addEventListener("input", showPreview);
    currency.addEventListener("focus", () => {
      datalist.replaceChildren(...currencies().map((c) => el("option", { value: c })));
    });

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      errorLine.textContent = "";
      markInvalid(form, null);
      const body = { amount: Number(amount.value), currency: currency.value.trim().toUpperCase(), reason: reason.value.trim() };
      const problem = !Number.isInteger(body.amount) || body.amount < 1 ? ["amount", "The amount is a whole number of minor units, at least 1."]
        : !/^[A-Z]{3}$/.test(body.currency) ? ["currency", "The currency is a three-letter code such as USD, RUB or XTR."]
          : !body.reason ? ["reason", "Say why (it is kept on the ledger entry)."] : null;
      if (problem) {
        errorLine.textContent = problem[1];
        markInvalid(form, { errors: { [problem[0]]: problem[1] } });
        form.elements[problem[0]].focus();
        return;
      }
      submit.disabled = true;
      try {
        const payment = await api("POST", `${base}/top-up`, body);
        toast(`Topped up ${fmtMoney(payment.amount, payment.currency)}.`, "ok");
        amount.value = "";
        reason.value = "";
        showPreview();
        done();
      } catch (error) {
        errorLine.textContent = errorText(error);
        markInvalid(form, error);
      } finally {
        submit.disabled = false;
      }
    });
  }

  view("users", { title: "Users", permission: "users:read", render: renderUsers });

  // ═════════════════════════════ Caches, the core object, start ═════════════════════════════

  function resetCaches() {
    adminsPromise = null;
  }

  Object.assign(SB, {
    api,
    ApiError,
    can,
    el,
    view,
    onEvent,
    navigate,
    toast,
    fmtTime,
    fmtMoney,
    // extras
    fetchBlob,
    onResync,
    onConnection,
    badge,
    errorBox,
    errorText,
    qs,
    debounce,
    table,
  });
  Object.defineProperty(SB, "connection", { enumerable: true, get: () => socket.state });
  window.SB = SB;

  document.addEventListener("DOMContentLoaded", boot);
})();
