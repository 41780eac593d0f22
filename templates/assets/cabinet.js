/*
 * Switchboard cabinet: /cabinet (templates/pages/cabinet.html).
 * A user's support chat, balance, transactions and subscription; also the
 * bot's Telegram Mini App. Classic script, no build step, no CDN, no
 * telegram-web-app.js (a small shim below talks to the Telegram client).
 *
 * ───────────── Hooks browser tests may rely on ─────────────
 * State
 *   #cabinet[data-state]   "loading" | "signin" | "app"
 *   #cabinet[data-ws]      "closed" | "connecting" | "open"  (the live feed;
 *                          "open" once the server's `connection` message came)
 *   #cabinet[data-telegram] "true" inside Telegram (Mini App), else absent
 *   #cabinet[data-theme]   "dark" | "light" once a Telegram theme is applied
 *   #cabinet[data-bot-id], [data-bot-username]  from the server (may be "")
 *   #live-status (role=status): "Reconnecting to live updates…" while the
 *     feed is down after having been up; other background errors
 *   sessionStorage "switchboard.cabinet.session" =
 *     {"access_token":…,"refresh_token":…,"expires_at":<ms since epoch>}
 *     (a test may seed it to start signed in; removed on sign-out)
 *   sessionStorage "switchboard.cabinet.webapp" = the Mini App launch
 *     context {platform, version, theme} kept across reloads
 * Sign-in screen (#signin)
 *   link "Log in with Telegram" (#telegram-login, only when data-bot-id is set)
 *   form #email-login: inputs labelled "E-mail", "Password"; button "Sign in"
 *   link "Forgot password?"; messages in #signin-status (role=status)
 * Signed in (#app)
 *   heading (h1 #user-name): the user's name; #balances li[data-currency]
 *   button "Sign out"
 *   navigation links "Support" (default, #/support) and "Account" (#/account)
 *   Support: #messages (role=log, aria-live=polite), one li per message:
 *     li.message.from-user | li.message.from-operator, with
 *     data-message-id="<id>" and data-id="<id>", text in .text, <time datetime>
 *     #screen-support[data-ticket-id][data-ticket-status] = the thread shown
 *     textarea labelled "Message", button "Send" (Enter sends, Shift+Enter
 *     is a new line); errors in #composer-status (role=status)
 *   Account: #subscription ("No subscription" when there is none),
 *     #transactions li[data-id] (recent), link "All transactions",
 *     #profile, link "Earlier conversations"
 *   Sub-screens (hash routes): #/transactions (list li[data-id], button
 *     "Show more"), #/tickets (li[data-id] with links), #/tickets/<id>.
 *     Each has a button "Back" (hidden inside Telegram, whose own back
 *     button is shown instead); Escape also goes back.
 * Mini App: the launch hash
 *   #tgWebAppData=<url-encoded initData>&tgWebAppVersion=…&tgWebAppPlatform=…
 *   &tgWebAppThemeParams=<url-encoded JSON>
 *   Outgoing events go to window.TelegramWebviewProxy.postEvent(type, json)
 *   if defined, else window.external.notify(...), else
 *   window.parent.postMessage('{"eventType":…,"eventData":…}', '*') when
 *   framed. Incoming: window.Telegram.WebView.receiveEvent(type, data) or a
 *   `message` event from window.parent with that JSON. Sent: web_app_ready,
 *   web_app_expand, web_app_request_theme, web_app_setup_back_button
 *   {is_visible}. Handled: theme_changed {theme_params}, back_button_pressed.
 * Login Widget redirect: #tgAuthResult=<base64url JSON> or
 *   ?id=…&first_name=…&auth_date=…&hash=… (removed from the URL afterwards).
 * Console: GET /subscription answers 404 when the user has none; the page
 *   treats it as "No subscription", but Chrome still logs the 404 of the
 *   request ("Failed to load resource") — filter it by URL in tests.
 */
(function () {
  'use strict';

  var API = '/api/v1/cabinet';
  var SESSION_KEY = 'switchboard.cabinet.session';
  var WEBAPP_KEY = 'switchboard.cabinet.webapp';
  var WIDGET_FIELDS = ['id', 'first_name', 'last_name', 'username', 'photo_url', 'auth_date', 'hash'];

  var root = document.getElementById('cabinet');
  if (!root) return;
  var botId = root.dataset.botId || '';
  var botUsername = root.dataset.botUsername || '';

  function $(id) { return document.getElementById(id); }

  /** An element with a class and text (never HTML). */
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function storageGet(key) {
    try { return window.sessionStorage.getItem(key); } catch (e) { return null; }
  }
  function storageSet(key, value) {
    try { window.sessionStorage.setItem(key, value); } catch (e) { /* storage off: memory only */ }
  }
  function storageRemove(key) {
    try { window.sessionStorage.removeItem(key); } catch (e) { /* nothing stored */ }
  }

  /* ───────────────────────── Telegram Mini App shim ───────────────────────── */

  var tg = {
    inside: false,
    initData: '',
    fromHash: false,
    backVisible: null,
    context: null // {platform, version, theme}
  };

  /** Sends an event to the Telegram client; false when there is none. */
  function postEvent(type, data) {
    var eventData = data === undefined ? '' : data;
    try {
      var proxy = window.TelegramWebviewProxy;
      if (proxy && typeof proxy.postEvent === 'function') {
        proxy.postEvent(type, JSON.stringify(eventData));
        return true;
      }
      if (window.external && 'notify' in window.external) {
        window.external.notify(JSON.stringify({ eventType: type, eventData: eventData }));
        return true;
      }
      if (window.parent !== window) {
        window.parent.postMessage(JSON.stringify({ eventType: type, eventData: eventData }), '*');
        return true;
      }
    } catch (e) {
      /* not inside a Telegram client */
    }
    return false;
  }

  function installTelegramReceiver() {
    var T = window.Telegram = window.Telegram || {};
    var webView = T.WebView = T.WebView || {};
    var previous = typeof webView.receiveEvent === 'function' ? webView.receiveEvent : null;
    webView.receiveEvent = function (type, data) {
      if (previous) {
        try { previous.call(webView, type, data); } catch (e) { /* theirs, not ours */ }
      }
      onTelegramEvent(type, data);
    };
    window.addEventListener('message', function (event) {
      if (event.source !== window.parent) return;
      var message = event.data;
      if (typeof message === 'string') {
        if (message.indexOf('eventType') === -1) return;
        try { message = JSON.parse(message); } catch (e) { return; }
      }
      if (!message || typeof message !== 'object' || typeof message.eventType !== 'string') return;
      onTelegramEvent(message.eventType, message.eventData);
    });
  }

  function onTelegramEvent(type, data) {
    if (type === 'theme_changed') {
      var theme = data && data.theme_params;
      if (theme && typeof theme === 'object') {
        applyTheme(theme);
        rememberWebApp({ theme: theme });
      }
    } else if (type === 'back_button_pressed') {
      goBack();
    }
  }

  var COLOR = /^#(?:[0-9a-f]{3}|[0-9a-f]{6}|[0-9a-f]{8})$/i;

  function hexToRgb(hex) {
    var h = hex.slice(1);
    if (h.length === 3) h = h.replace(/./g, '$&$&');
    return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
  }
  function rgbToHex(rgb) {
    return '#' + rgb.map(function (c) { return ('0' + Math.round(c).toString(16)).slice(-2); }).join('');
  }
  function mix(a, b, share) {
    var x = hexToRgb(a), y = hexToRgb(b);
    return rgbToHex([0, 1, 2].map(function (i) { return x[i] * (1 - share) + y[i] * share; }));
  }
  function isDark(hex) {
    var c = hexToRgb(hex);
    return (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) < 128;
  }

  /** Telegram's theme → app.css variables (inline on <html>, so they win). */
  function applyTheme(theme) {
    var style = document.documentElement.style;
    var pick = function (name) {
      var value = theme[name];
      return typeof value === 'string' && COLOR.test(value) ? value : null;
    };
    var bg = pick('bg_color');
    var fg = pick('text_color');
    var set = function (variable, value) { if (value) style.setProperty(variable, value); };
    set('--bg', bg);
    set('--fg', fg);
    set('--muted', pick('hint_color') || pick('subtitle_text_color'));
    set('--accent', pick('button_color') || pick('link_color'));
    set('--accent-fg', pick('button_text_color'));
    // Surfaces (bubbles, buttons) from the background when the client
    // names none, so they never keep the other scheme's colour.
    set('--panel', pick('secondary_bg_color') || pick('section_bg_color') ||
      (bg && fg ? mix(bg, fg, 0.08) : null));
    if (bg) {
      var dark = isDark(bg);
      style.colorScheme = dark ? 'dark' : 'light';
      // The status colours of app.css follow the OS; follow Telegram instead.
      set('--danger', pick('destructive_text_color') || (dark ? '#ff7a6e' : '#b42318'));
      set('--ok', dark ? '#4ade80' : '#067647');
      set('--warn', dark ? '#fbbf24' : '#b54708');
      set('--line', pick('section_separator_color') || (fg ? mix(bg, fg, 0.16) : null));
      root.dataset.theme = dark ? 'dark' : 'light';
    }
  }

  function rememberWebApp(part) {
    var context = tg.context || {};
    Object.keys(part).forEach(function (key) { context[key] = part[key]; });
    tg.context = context;
    storageSet(WEBAPP_KEY, JSON.stringify(context));
  }

  /** Reads how Telegram launched us: initData, platform, theme. */
  function readTelegramLaunch() {
    var webApp = window.Telegram && window.Telegram.WebApp;
    var hash = location.hash.slice(1);
    var params = hash.indexOf('tgWebApp') !== -1 ? new URLSearchParams(hash) : null;
    var initData = '';
    if (webApp && typeof webApp.initData === 'string' && webApp.initData) {
      initData = webApp.initData;
    } else if (params && params.get('tgWebAppData')) {
      initData = params.get('tgWebAppData');
      tg.fromHash = true;
    }
    tg.initData = initData;

    var stored = null;
    try { stored = JSON.parse(storageGet(WEBAPP_KEY) || 'null'); } catch (e) { stored = null; }
    if (params) {
      var theme = null;
      try { theme = JSON.parse(params.get('tgWebAppThemeParams') || 'null'); } catch (e) { theme = null; }
      tg.context = stored || {};
      rememberWebApp({
        platform: params.get('tgWebAppPlatform') || '',
        version: params.get('tgWebAppVersion') || '',
        theme: theme && typeof theme === 'object' ? theme : (tg.context.theme || null)
      });
    } else if (stored && typeof stored === 'object') {
      tg.context = stored;
    }
    if (!tg.context && webApp && webApp.themeParams && typeof webApp.themeParams === 'object') {
      tg.context = { theme: webApp.themeParams };
    }
    tg.inside = Boolean(initData || params || stored || window.TelegramWebviewProxy ||
      (webApp && webApp.initData));
    if (tg.context && tg.context.theme) applyTheme(tg.context.theme);
    if (tg.inside) root.dataset.telegram = 'true';
  }

  function setBackButton(visible) {
    if (tg.backVisible === visible) return;
    tg.backVisible = visible;
    if (tg.inside) postEvent('web_app_setup_back_button', { is_visible: visible });
  }

  /* ───────────────────────── Formatting ───────────────────────── */

  function makeFormat(options) {
    try { return new Intl.DateTimeFormat(undefined, options); } catch (e) {
      return { format: function (date) { return date.toLocaleString(); } };
    }
  }
  var timeFormat = makeFormat({ hour: '2-digit', minute: '2-digit' });
  var dayTimeFormat = makeFormat({ day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' });
  var dateFormat = makeFormat({ day: 'numeric', month: 'short', year: 'numeric' });
  var fullFormat = makeFormat({ weekday: 'long', year: 'numeric', month: 'long', day: 'numeric', hour: '2-digit', minute: '2-digit' });

  function toDate(iso) {
    var date = new Date(iso);
    return isNaN(date.getTime()) ? null : date;
  }
  function messageTime(iso) {
    var date = toDate(iso);
    if (!date) return '';
    var now = new Date();
    var today = date.getFullYear() === now.getFullYear() && date.getMonth() === now.getMonth() &&
      date.getDate() === now.getDate();
    return today ? timeFormat.format(date) : dayTimeFormat.format(date);
  }
  function dateText(iso) {
    var date = toDate(iso);
    return date ? dateFormat.format(date) : '';
  }
  function timeElement(iso, text) {
    var node = el('time', null, text);
    node.setAttribute('datetime', iso || '');
    var date = toDate(iso);
    if (date) node.title = fullFormat.format(date);
    return node;
  }

  var fractionCache = {};
  function fractionDigits(currency) {
    if (currency === 'XTR') return 0;
    if (!(currency in fractionCache)) {
      var digits = 2;
      try {
        digits = new Intl.NumberFormat('en', { style: 'currency', currency: currency })
          .resolvedOptions().maximumFractionDigits;
      } catch (e) { digits = 2; }
      fractionCache[currency] = digits;
    }
    return fractionCache[currency];
  }

  /** Minor units → "1,250.00 RUB"-like text; Telegram Stars as "N Stars". */
  function money(minor, currency, signed) {
    var amount = Number(minor) || 0;
    var sign = signed && amount > 0 ? '+' : (amount < 0 ? '-' : '');
    var absolute = Math.abs(amount);
    if (currency === 'XTR') {
      return sign + absolute.toLocaleString() + (absolute === 1 ? ' Star' : ' Stars');
    }
    var digits = fractionDigits(currency);
    var value = absolute / Math.pow(10, digits);
    try {
      return sign + new Intl.NumberFormat(undefined, {
        style: 'currency', currency: currency,
        minimumFractionDigits: digits, maximumFractionDigits: digits
      }).format(value);
    } catch (e) {
      return sign + value.toFixed(digits) + ' ' + currency;
    }
  }

  function humanize(kind) {
    var text = String(kind || '').replace(/[_.]+/g, ' ').trim();
    return text ? text.charAt(0).toUpperCase() + text.slice(1) : '';
  }

  var STATUS_TEXT = { open: 'Open', answered: 'Answered', pending: 'Pending', closed: 'Closed' };
  function statusText(status) { return STATUS_TEXT[status] || humanize(status); }

  /* ───────────────────────── Errors ───────────────────────── */

  /** An API answer that is not 2xx (or no answer: status 0). */
  function ApiError(status, problem) {
    this.status = status;
    this.problem = problem || null;
    this.code = problem && problem.code || '';
    this.message = problemText(status, problem);
  }
  ApiError.prototype = Object.create(Error.prototype);
  ApiError.prototype.constructor = ApiError;

  /** The session is over (refresh refused): sign in again. */
  function SessionEnded(message) { this.message = message || 'Your session has ended. Sign in again.'; }
  SessionEnded.prototype = Object.create(Error.prototype);

  /** A response that arrived after sign-out: ignored. */
  function Stale() { this.message = 'stale'; }
  Stale.prototype = Object.create(Error.prototype);

  function problemText(status, problem) {
    if (status === 0) return 'Cannot reach the server. Check the connection and try again.';
    if (problem && typeof problem === 'object') {
      var parts = [];
      if (problem.errors && typeof problem.errors === 'object') {
        Object.keys(problem.errors).forEach(function (field) {
          var value = problem.errors[field];
          parts.push(field + ': ' + (Array.isArray(value) ? value.join(', ') : String(value)));
        });
      }
      var main = problem.detail || problem.title;
      if (main) parts.unshift(String(main));
      if (parts.length) return parts.join('; ');
    }
    return 'Something went wrong (HTTP ' + status + '). Try again.';
  }

  function showStatus(node, text, kind) {
    if (!node) return;
    node.textContent = text || '';
    node.classList.toggle('error', kind === 'error');
    node.classList.toggle('ok', kind === 'ok');
  }

  /** Shows an error where it belongs; a finished session goes to sign-in. */
  function report(error, node) {
    if (error instanceof Stale) return;
    if (error instanceof SessionEnded) {
      endSession(error.message, 'error');
      return;
    }
    var text = error && error.message ? error.message : 'Something went wrong. Try again.';
    if (node) showStatus(node, text, 'error');
    else showStatus($('live-status'), text, 'error');
  }

  /* ───────────────────────── Session and API ───────────────────────── */

  var session = null; // {access_token, refresh_token, expires_at}
  var generation = 0; // bumped at sign-out: late answers are dropped
  var refreshTimer = null;
  var refreshing = null;

  function loadSession() {
    var stored = null;
    try { stored = JSON.parse(storageGet(SESSION_KEY) || 'null'); } catch (e) { stored = null; }
    if (stored && typeof stored.access_token === 'string' && typeof stored.refresh_token === 'string') {
      session = {
        access_token: stored.access_token,
        refresh_token: stored.refresh_token,
        expires_at: Number(stored.expires_at) || 0
      };
    }
    return session;
  }

  function saveSession(tokens) {
    var lifetime = Math.max(0, Number(tokens.expires_in) || 0) * 1000;
    session = {
      access_token: tokens.access_token,
      refresh_token: tokens.refresh_token,
      expires_at: Date.now() + lifetime
    };
    storageSet(SESSION_KEY, JSON.stringify(session));
    // About a minute early; half-way for short-lived tokens.
    scheduleRefresh(Math.max(lifetime - 60000, lifetime / 2, 1000));
  }

  function scheduleRefresh(delay) {
    clearTimeout(refreshTimer);
    refreshTimer = null;
    if (!session) return;
    if (delay === undefined) delay = Math.max(0, session.expires_at - 60000 - Date.now());
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      refreshSession().catch(function (error) { report(error); });
    }, delay);
  }

  function rawFetch(method, path, body, token) {
    var headers = { accept: 'application/json' };
    var init = { method: method, headers: headers, cache: 'no-store', credentials: 'same-origin' };
    if (token) headers.authorization = 'Bearer ' + token;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init);
  }

  async function readBody(response) {
    var text = '';
    try { text = await response.text(); } catch (e) { text = ''; }
    if (!text) return null;
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  /** One refresh at a time; every caller waits for the same one. */
  function refreshSession() {
    if (refreshing) return refreshing;
    var current = session;
    if (!current) return Promise.reject(new SessionEnded());
    var started = generation;
    refreshing = (async function () {
      var response;
      try {
        response = await rawFetch('POST', '/auth/refresh', { refresh_token: current.refresh_token });
      } catch (e) {
        scheduleRefresh(15000);
        throw new ApiError(0, null);
      }
      var body = await readBody(response);
      if (started !== generation || session !== current) throw new Stale();
      if (response.ok && body && body.access_token) {
        saveSession(body);
        liveAuth();
        return session;
      }
      if (response.status === 401 || response.status === 403 || response.status === 400 ||
          response.status === 422) {
        throw new SessionEnded(response.status === 403
          ? problemText(403, body) : 'Your session has ended. Sign in again.');
      }
      scheduleRefresh(15000);
      throw new ApiError(response.status, body);
    })();
    refreshing.then(done, done);
    function done() { refreshing = null; }
    return refreshing;
  }

  async function ensureFresh() {
    if (session && Date.now() > session.expires_at - 10000) await refreshSession();
  }

  /**
   * A call to the cabinet API; resolves with the parsed body (null for 204)
   * or rejects with ApiError / SessionEnded / Stale. Signed-in calls refresh
   * the token first when it is about to expire, and once on a 401.
   */
  async function api(method, path, body, options) {
    var auth = !(options && options.auth === false);
    var started = generation;
    var response;
    if (auth) {
      if (!session) throw new SessionEnded();
      await ensureFresh();
    }
    for (var attempt = 0; ; attempt++) {
      var token = auth ? session && session.access_token : null;
      if (auth && !token) throw new SessionEnded();
      try {
        response = await rawFetch(method, path, body, token);
      } catch (e) {
        if (started !== generation) throw new Stale();
        throw new ApiError(0, null);
      }
      if (started !== generation) throw new Stale();
      if (response.status === 401 && auth && attempt === 0) {
        // Someone may have refreshed meanwhile; otherwise refresh now.
        if (!session || session.access_token === token) await refreshSession();
        continue;
      }
      break;
    }
    var data = await readBody(response);
    if (started !== generation) throw new Stale();
    if (response.status === 401 && auth) throw new SessionEnded();
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  /* ───────────────────────── Screens ───────────────────────── */

  function setState(state) {
    root.dataset.state = state;
    $('boot-status').hidden = state !== 'loading';
    $('signin').hidden = state !== 'signin';
    $('app').hidden = state !== 'app';
    if (state !== 'app') setBackButton(false);
  }

  function showSignIn(message, kind) {
    setState('signin');
    showStatus($('signin-status'), message || '', kind);
    var telegramBox = $('telegram-signin');
    if (botId) {
      var params = new URLSearchParams({
        bot_id: botId,
        origin: location.origin,
        request_access: 'write',
        return_to: location.origin + '/cabinet'
      });
      $('telegram-login').href = 'https://oauth.telegram.org/auth?' + params.toString();
      telegramBox.hidden = false;
    } else {
      telegramBox.hidden = true;
    }
    if (botUsername && /^[A-Za-z0-9_]{3,64}$/.test(botUsername)) {
      var link = $('bot-link');
      link.href = 'https://t.me/' + botUsername;
      link.textContent = '@' + botUsername;
      $('bot-link-line').hidden = false;
    }
  }

  async function signIn(path, body) {
    var tokens = await api('POST', path, body, { auth: false });
    if (!tokens || !tokens.access_token) throw new ApiError(500, { detail: 'The server gave no session.' });
    saveSession(tokens);
  }

  /** Removes what the sign-in left in the URL (keeps the rest). */
  function cleanUrl(dropHash, dropQueryKeys) {
    var search = new URLSearchParams(location.search);
    (dropQueryKeys || []).forEach(function (key) { search.delete(key); });
    var query = search.toString();
    var hash = dropHash ? '' : location.hash;
    try {
      history.replaceState(history.state, '', location.pathname + (query ? '?' + query : '') + hash);
    } catch (e) { /* an odd frame: leave the URL */ }
  }

  function readWidgetResult() {
    var match = /(?:^#|&)tgAuthResult=([^&]*)/.exec(location.hash);
    if (match) {
      var raw = '';
      try { raw = decodeURIComponent(match[1]); } catch (e) { raw = match[1]; }
      var data = null;
      try {
        var b64 = raw.replace(/-/g, '+').replace(/_/g, '/');
        while (b64.length % 4) b64 += '=';
        var binary = atob(b64);
        var bytes = new Uint8Array(binary.length);
        for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
        data = JSON.parse(new TextDecoder().decode(bytes));
      } catch (e) {
        return { from: 'hash', error: 'The Telegram sign-in result could not be read. Try again.' };
      }
      if (!data || typeof data !== 'object') return { from: 'hash', cancelled: true };
      var fields = {};
      Object.keys(data).forEach(function (key) {
        var value = data[key];
        if (typeof value === 'string' || typeof value === 'number') fields[key] = value;
      });
      if (!fields.hash || fields.id === undefined) {
        return { from: 'hash', error: 'The Telegram sign-in result is incomplete. Try again.' };
      }
      return { from: 'hash', fields: fields };
    }
    var query = new URLSearchParams(location.search);
    if (query.get('hash') && query.get('id') && query.get('auth_date')) {
      var picked = {};
      WIDGET_FIELDS.forEach(function (key) {
        if (query.has(key)) picked[key] = query.get(key);
      });
      return { from: 'query', fields: picked };
    }
    return null;
  }

  /* ───────────────────────── Routing ───────────────────────── */

  var route = { name: 'support' };
  var routeStack = [];

  function parseRoute(hash) {
    var match;
    if (/^#\/account\/?$/.test(hash)) return { name: 'account' };
    if (/^#\/transactions\/?$/.test(hash)) return { name: 'transactions' };
    if (/^#\/tickets\/?$/.test(hash)) return { name: 'tickets' };
    match = /^#\/tickets\/([0-9A-Za-z-]{1,64})\/?$/.exec(hash);
    if (match) return { name: 'ticket', id: match[1] };
    return { name: 'support' };
  }

  var PARENT = { transactions: '#/account', tickets: '#/account', ticket: '#/tickets' };
  var replacing = false;

  /** Goes to `hash` in place of the current history entry. */
  function replaceRoute(hash) {
    if (location.hash === hash) return;
    replacing = true;
    location.replace(hash);
  }

  function goBack() {
    var parent = PARENT[route.name];
    if (!parent) return;
    var previous = routeStack.length > 1 ? routeStack[routeStack.length - 2] : null;
    if (previous === parent) history.back();
    else replaceRoute(parent);
  }

  function onHashChange() {
    var hash = location.hash;
    if (replacing) {
      replacing = false;
      routeStack[Math.max(0, routeStack.length - 1)] = hash;
    } else if (routeStack.length > 1 && routeStack[routeStack.length - 2] === hash) {
      routeStack.pop();
    } else {
      routeStack.push(hash);
    }
    if (routeStack.length > 50) routeStack.splice(0, routeStack.length - 50);
    renderRoute(true);
  }

  function renderRoute(moveFocus) {
    if (root.dataset.state !== 'app') return;
    route = parseRoute(location.hash);
    var name = route.name;
    var screens = document.querySelectorAll('#app .screen');
    for (var i = 0; i < screens.length; i++) {
      screens[i].hidden = screens[i].dataset.screen !== name;
    }
    var tab = name === 'support' ? 'support' : 'account';
    var tabs = document.querySelectorAll('.tabs a');
    for (var j = 0; j < tabs.length; j++) {
      if (tabs[j].dataset.tab === tab) tabs[j].setAttribute('aria-current', 'page');
      else tabs[j].removeAttribute('aria-current');
    }
    var sub = Boolean(PARENT[name]);
    setBackButton(sub);
    if (name === 'support') {
      setUnread(false);
      if (thread.pendingMarkRead) scheduleThreadReload(0);
    }
    if (name === 'transactions') loadAllTransactions(true);
    if (name === 'tickets') loadTicketList();
    if (name === 'ticket') loadPastTicket(route.id);
    else clear($('past-messages'));
    if (moveFocus && sub) {
      var heading = document.querySelector('[data-screen="' + name + '"] h2');
      if (heading) heading.focus();
    }
    if (name === 'support' && moveFocus) scrollToBottom(true);
  }

  /* ───────────────────────── Account data ───────────────────────── */

  var plans = null; // id → name

  function displayName(user) {
    var name = [user.first_name, user.last_name].filter(Boolean).join(' ').trim();
    return name || (user.username ? '@' + user.username : '') || user.email || 'Your account';
  }

  async function loadMe() {
    try {
      var user = await api('GET', '/me');
      $('user-name').textContent = displayName(user);
      renderProfile(user);
    } catch (error) {
      report(error, $('live-status'));
    }
  }

  function renderProfile(user) {
    var list = $('profile');
    clear(list);
    var add = function (term, value) {
      list.appendChild(el('dt', null, term));
      list.appendChild(el('dd', null, value));
    };
    var name = [user.first_name, user.last_name].filter(Boolean).join(' ').trim();
    if (name) add('Name', name);
    if (user.telegram_id !== null && user.telegram_id !== undefined) {
      add('Telegram', user.username ? '@' + user.username : 'Linked');
    } else if (user.username) {
      add('Telegram', '@' + user.username);
    }
    if (user.email) add('E-mail', user.email + (user.email_verified ? '' : ' (not confirmed)'));
    if (user.referral_code) add('Referral code', user.referral_code);
    if (user.created_at) add('Member since', dateText(user.created_at));
  }

  async function loadBalances() {
    var list = $('balances');
    try {
      var balances = await api('GET', '/balance');
      clear(list);
      if (!Array.isArray(balances) || balances.length === 0) {
        list.appendChild(el('li', 'muted empty', 'No balance yet'));
        return;
      }
      balances.forEach(function (entry) {
        var item = el('li', 'balance', money(entry.balance, entry.currency));
        item.dataset.currency = entry.currency;
        list.appendChild(item);
      });
    } catch (error) {
      clear(list);
      if (error instanceof ApiError) list.appendChild(el('li', 'error', error.message));
      else report(error);
    }
  }

  async function loadPlans() {
    if (plans) return plans;
    try {
      var all = await api('GET', '/plans');
      plans = {};
      (Array.isArray(all) ? all : []).forEach(function (plan) { plans[plan.id] = plan.name; });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      plans = {}; // names are a nicety: the id will do
    }
    return plans;
  }

  async function loadSubscription() {
    var box = $('subscription');
    try {
      var result = await Promise.all([
        api('GET', '/subscription').catch(function (error) {
          if (error instanceof ApiError && error.status === 404) return null;
          throw error;
        }),
        loadPlans()
      ]);
      renderSubscription(result[0]);
    } catch (error) {
      if (error instanceof ApiError) {
        clear(box);
        box.appendChild(el('p', 'error', error.message));
      } else {
        report(error);
      }
    }
  }

  function renderSubscription(subscription) {
    var box = $('subscription');
    clear(box);
    box.removeAttribute('data-status');
    if (!subscription) {
      box.appendChild(el('p', 'muted', 'No subscription'));
      return;
    }
    box.dataset.status = subscription.status;
    var name = plans && plans[subscription.plan_id] || subscription.plan_id;
    box.appendChild(el('p', 'plan', name));
    var ends = toDate(subscription.expires_at);
    var future = ends && ends.getTime() > Date.now();
    var line;
    if (subscription.status === 'active') line = 'Active until ' + dateText(subscription.expires_at);
    else if (subscription.status === 'cancelled') {
      line = future ? 'Cancelled: runs until ' + dateText(subscription.expires_at)
        : 'Cancelled on ' + dateText(subscription.expires_at);
    } else if (subscription.status === 'expired') line = 'Expired on ' + dateText(subscription.expires_at);
    else line = statusText(subscription.status) + ' · until ' + dateText(subscription.expires_at);
    var status = el('p', 'sub-status ' + (subscription.status === 'active' ? 'ok' : 'muted'), line);
    box.appendChild(status);
  }

  function transactionItem(tx) {
    var item = el('li', 'tx ' + (tx.amount < 0 ? 'debit' : 'credit'));
    item.dataset.id = tx.id;
    var main = el('div', 'tx-main');
    main.appendChild(el('span', 'tx-title', tx.description || humanize(tx.kind) || 'Transaction'));
    var meta = el('span', 'tx-meta muted');
    meta.appendChild(timeElement(tx.created_at, messageTime(tx.created_at)));
    main.appendChild(meta);
    item.appendChild(main);
    var amounts = el('div', 'tx-amounts');
    amounts.appendChild(el('span', 'tx-amount', money(tx.amount, tx.currency, true)));
    amounts.appendChild(el('span', 'tx-after muted', money(tx.balance_after, tx.currency)));
    item.appendChild(amounts);
    return item;
  }

  async function loadRecentTransactions() {
    var list = $('transactions');
    try {
      var page = await api('GET', '/transactions?per_page=5');
      clear(list);
      var items = page && Array.isArray(page.items) ? page.items : [];
      if (!items.length) list.appendChild(el('li', 'empty muted', 'No transactions yet.'));
      items.forEach(function (tx) { list.appendChild(transactionItem(tx)); });
    } catch (error) {
      clear(list);
      if (error instanceof ApiError) list.appendChild(el('li', 'error', error.message));
      else report(error);
    }
  }

  var txPaging = { page: 0, loading: false, seq: 0 };

  async function loadAllTransactions(reset) {
    var list = $('all-transactions');
    var more = $('more-transactions');
    var status = $('all-transactions-status');
    if (reset) {
      txPaging.page = 0;
      txPaging.seq++;
      clear(list);
    } else if (txPaging.loading) {
      return;
    }
    var seq = txPaging.seq;
    var next = txPaging.page + 1;
    txPaging.loading = true;
    more.disabled = true;
    showStatus(status, 'Loading…');
    try {
      var page = await api('GET', '/transactions?per_page=20&page=' + next);
      if (seq !== txPaging.seq) return;
      txPaging.page = next;
      var items = page && Array.isArray(page.items) ? page.items : [];
      items.forEach(function (tx) {
        if (!list.querySelector('[data-id="' + cssEscape(tx.id) + '"]')) list.appendChild(transactionItem(tx));
      });
      var shown = list.querySelectorAll('li[data-id]').length;
      showStatus(status, shown ? '' : 'No transactions yet.');
      more.hidden = !(items.length === 20 && shown < (page.total || 0));
    } catch (error) {
      if (seq === txPaging.seq) report(error, status);
    } finally {
      if (seq === txPaging.seq) {
        txPaging.loading = false;
        more.disabled = false;
      }
    }
  }

  /** A live change: new rows of page 1 go on top; the user's paging stays. */
  async function refreshAllTransactions() {
    if (txPaging.loading || txPaging.page === 0) return; // a page is coming anyway
    var list = $('all-transactions');
    var seq = txPaging.seq;
    try {
      var page = await api('GET', '/transactions?per_page=20&page=1');
      if (seq !== txPaging.seq) return;
      var items = page && Array.isArray(page.items) ? page.items : [];
      for (var i = items.length - 1; i >= 0; i--) {
        if (!list.querySelector('[data-id="' + cssEscape(items[i].id) + '"]')) {
          list.insertBefore(transactionItem(items[i]), list.firstChild);
        }
      }
      if (items.length) showStatus($('all-transactions-status'), '');
    } catch (error) {
      if (seq === txPaging.seq) report(error, $('all-transactions-status'));
    }
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(String(value)) : String(value).replace(/["\\]/g, '\\$&');
  }

  var accountTimer = null;
  function scheduleAccountReload(parts) {
    accountTimer = accountTimer || { parts: {}, timer: null };
    parts.forEach(function (part) { accountTimer.parts[part] = true; });
    clearTimeout(accountTimer.timer);
    accountTimer.timer = setTimeout(function () {
      var wanted = accountTimer.parts;
      accountTimer = null;
      if (!session) return;
      if (wanted.money) {
        loadBalances();
        loadRecentTransactions();
        if (route.name === 'transactions') refreshAllTransactions();
      }
      if (wanted.subscription) loadSubscription();
      if (wanted.me) loadMe();
    }, 300);
  }

  /* ───────────────────────── Support thread ───────────────────────── */

  var thread = {
    ticket: null,      // TicketOut of the thread shown, or null
    ids: {},           // message id → true
    seq: 0,            // newest load wins
    reloadTimer: null,
    pendingMarkRead: false,
    sending: false
  };

  function subjectOf(text) {
    var first = text.split('\n').map(function (line) { return line.trim(); })
      .filter(Boolean)[0] || 'Support request';
    var chars = Array.from(first);
    return chars.length > 80 ? chars.slice(0, 79).join('').trim() + '…' : first;
  }

  function messageElement(message) {
    var fromOperator = message.author !== 'user';
    var item = el('li', 'message ' + (fromOperator ? 'from-operator' : 'from-user'));
    item.dataset.messageId = message.id;
    item.dataset.id = message.id;
    item.dataset.time = String(toDate(message.created_at) ? toDate(message.created_at).getTime() : Date.now());
    // Who and when first (read first by screen readers); CSS shows it below.
    var meta = el('span', 'meta');
    meta.appendChild(el('span', 'who', fromOperator ? 'Support' : 'You'));
    meta.appendChild(document.createTextNode(' · '));
    meta.appendChild(timeElement(message.created_at, messageTime(message.created_at)));
    item.appendChild(meta);
    item.appendChild(el('p', 'text', message.text));
    return item;
  }

  /** Adds messages in time order; a message already shown is skipped. */
  function insertMessage(list, ids, message) {
    if (!message || !message.id || ids[message.id]) return null;
    ids[message.id] = true;
    var item = messageElement(message);
    var time = Number(item.dataset.time);
    var before = null;
    for (var node = list.lastElementChild; node; node = node.previousElementSibling) {
      if (Number(node.dataset.time) <= time) break;
      before = node;
    }
    list.insertBefore(item, before);
    return item;
  }

  function nearBottom() {
    var doc = document.documentElement;
    return window.innerHeight + window.scrollY >= doc.scrollHeight - 160;
  }

  function scrollToBottom(force) {
    if (route.name !== 'support' || root.dataset.state !== 'app') return;
    if (!force && !nearBottom()) return;
    window.requestAnimationFrame(function () {
      window.scrollTo(0, document.documentElement.scrollHeight);
    });
  }

  function renderThreadInfo() {
    var section = $('screen-support');
    var info = $('thread-info');
    var note = $('thread-note');
    var ticket = thread.ticket;
    if (!ticket) {
      section.removeAttribute('data-ticket-id');
      section.removeAttribute('data-ticket-status');
      info.textContent = '';
      note.textContent = 'No conversation yet. Write to us below: your first message starts one.';
      note.hidden = false;
      return;
    }
    section.dataset.ticketId = ticket.id;
    section.dataset.ticketStatus = ticket.status;
    info.textContent = ticket.subject + ' · ' + statusText(ticket.status);
    if (ticket.status === 'closed') {
      note.textContent = 'This conversation is closed. Your next message starts a new one.';
      note.hidden = false;
    } else {
      note.textContent = '';
      note.hidden = true;
    }
  }

  /** Shows `detail` (a TicketDetailOut, or null for none). */
  function showThread(detail) {
    var list = $('messages');
    var ticket = detail ? {
      id: detail.id, subject: detail.subject, status: detail.status,
      updated_at: detail.updated_at, last_message_at: detail.last_message_at
    } : null;
    var wasNearBottom = nearBottom();
    if (!ticket || !thread.ticket || thread.ticket.id !== ticket.id) {
      clear(list);
      thread.ids = {};
      wasNearBottom = true;
    }
    thread.ticket = ticket;
    thread.pendingMarkRead = false;
    if (ticket && route.name === 'ticket' && route.id === ticket.id) replaceRoute('#/support');
    if (detail && Array.isArray(detail.messages)) {
      detail.messages.forEach(function (message) { insertMessage(list, thread.ids, message); });
    }
    renderThreadInfo();
    if (wasNearBottom) scrollToBottom(true);
  }

  async function loadThread() {
    var seq = ++thread.seq;
    var list = $('messages');
    list.setAttribute('aria-busy', 'true');
    try {
      var page = await api('GET', '/tickets?per_page=20');
      if (seq !== thread.seq) return;
      var items = page && Array.isArray(page.items) ? page.items : [];
      var pick = items.filter(function (t) { return t.status !== 'closed'; })[0] || items[0] || null;
      if (!pick) {
        showThread(null);
        showStatus($('thread-status'), '');
        return;
      }
      var detail = await api('GET', '/tickets/' + encodeURIComponent(pick.id));
      if (seq !== thread.seq) return;
      showThread(detail);
      showStatus($('thread-status'), '');
    } catch (error) {
      if (seq === thread.seq) report(error, $('thread-status'));
    } finally {
      if (seq === thread.seq) list.removeAttribute('aria-busy');
    }
  }

  function scheduleThreadReload(delay) {
    clearTimeout(thread.reloadTimer);
    thread.reloadTimer = setTimeout(function () {
      thread.reloadTimer = null;
      if (session && root.dataset.state === 'app') loadThread();
    }, delay === undefined ? 250 : delay);
  }

  function onMessageAdded(out) {
    if (!out || !out.message) return;
    if (thread.ticket && out.ticket_id === thread.ticket.id) {
      if (out.status) thread.ticket.status = out.status;
      insertMessage($('messages'), thread.ids, out.message);
      renderThreadInfo();
      scrollToBottom(true);
    } else {
      scheduleThreadReload(0);
    }
  }

  async function openTicket(text) {
    try {
      var detail = await api('POST', '/tickets', { subject: subjectOf(text), text: text });
      thread.seq++; // a reload that started before this is out of date
      showThread(detail);
      scrollToBottom(true);
    } catch (error) {
      if (error instanceof ApiError && error.code === 'ticket_already_open') {
        // Opened elsewhere meanwhile (the bot, another tab): write there.
        await loadThread();
        if (thread.ticket && thread.ticket.status !== 'closed') {
          onMessageAdded(await api('POST', '/tickets/' + encodeURIComponent(thread.ticket.id) + '/messages',
            { text: text }));
          return;
        }
      }
      throw error;
    }
  }

  async function sendMessage() {
    var textarea = $('message-text');
    var status = $('composer-status');
    var text = textarea.value.trim();
    if (thread.sending) return;
    if (!text) {
      showStatus(status, 'Write a message first.', 'error');
      textarea.focus();
      return;
    }
    thread.sending = true;
    $('send').disabled = true;
    textarea.readOnly = true;
    $('composer').setAttribute('aria-busy', 'true');
    showStatus(status, '');
    try {
      var ticket = thread.ticket;
      if (ticket && ticket.status !== 'closed') {
        try {
          onMessageAdded(await api('POST', '/tickets/' + encodeURIComponent(ticket.id) + '/messages',
            { text: text }));
        } catch (error) {
          if (error instanceof ApiError && error.code === 'ticket_closed') {
            ticket.status = 'closed';
            renderThreadInfo();
            await openTicket(text);
          } else {
            if (error instanceof ApiError && error.status === 404) scheduleThreadReload(0);
            throw error;
          }
        }
      } else {
        await openTicket(text);
      }
      textarea.value = '';
      autosize();
    } catch (error) {
      report(error, status);
      if (!(error instanceof SessionEnded) && !(error instanceof Stale)) scheduleThreadReload(500);
    } finally {
      thread.sending = false;
      $('send').disabled = false;
      textarea.readOnly = false;
      $('composer').removeAttribute('aria-busy');
    }
  }

  function autosize() {
    var textarea = $('message-text');
    textarea.style.height = 'auto';
    var limit = Math.round(window.innerHeight * 0.4);
    textarea.style.height = Math.min(textarea.scrollHeight + 2, Math.max(limit, 80)) + 'px';
  }

  function setUnread(on) {
    var tab = $('tab-support');
    tab.classList.toggle('has-unread', on);
    tab.querySelector('.unread-note').hidden = !on;
  }

  /* Past conversations (sub-screens) */

  var listSeq = 0;
  async function loadTicketList() {
    var seq = ++listSeq;
    var list = $('ticket-list');
    var status = $('ticket-list-status');
    showStatus(status, 'Loading…');
    try {
      var page = await api('GET', '/tickets?per_page=50');
      if (seq !== listSeq) return;
      var items = page && Array.isArray(page.items) ? page.items : [];
      clear(list);
      items.forEach(function (ticket) {
        var item = el('li', 'ticket-row');
        item.dataset.id = ticket.id;
        item.dataset.status = ticket.status;
        var link = el('a', 'ticket-subject', ticket.subject);
        link.href = '#/tickets/' + encodeURIComponent(ticket.id);
        item.appendChild(link);
        var meta = el('span', 'muted ticket-meta', statusText(ticket.status) + ' · ');
        meta.appendChild(timeElement(ticket.last_message_at, messageTime(ticket.last_message_at)));
        if (ticket.unread > 0) meta.appendChild(el('span', 'unread', ' · ' + ticket.unread + ' new'));
        item.appendChild(meta);
        list.appendChild(item);
      });
      showStatus(status, items.length ? '' : 'No conversations yet.');
    } catch (error) {
      if (seq === listSeq) report(error, status);
    }
  }

  var pastSeq = 0;
  async function loadPastTicket(id) {
    var seq = ++pastSeq;
    var list = $('past-messages');
    var status = $('ticket-status');
    if (thread.ticket && thread.ticket.id === id) {
      // The thread of the Support screen: shown there (one copy per page).
      replaceRoute('#/support');
      return;
    }
    clear(list);
    $('ticket-title').textContent = 'Conversation';
    $('ticket-meta').textContent = '';
    showStatus(status, 'Loading…');
    try {
      var detail = await api('GET', '/tickets/' + encodeURIComponent(id));
      if (seq !== pastSeq || route.name !== 'ticket' || route.id !== id) return;
      if (thread.ticket && thread.ticket.id === detail.id) {
        replaceRoute('#/support');
        return;
      }
      $('ticket-title').textContent = detail.subject;
      $('ticket-meta').textContent = statusText(detail.status) + ' · opened ' + dateText(detail.created_at);
      var ids = {};
      (detail.messages || []).forEach(function (message) { insertMessage(list, ids, message); });
      showStatus(status, detail.messages && detail.messages.length ? '' : 'No messages.');
    } catch (error) {
      if (seq === pastSeq) report(error, status);
    }
  }

  /* ───────────────────────── Live feed (WebSocket) ───────────────────────── */

  var live = {
    ws: null,
    wanted: false,
    cursor: null,
    attempt: 0,
    failures: 0,
    timer: null,
    pingTimer: null,
    lastSeen: 0,
    connections: 0
  };

  function setLive(state) {
    root.dataset.ws = state;
    var status = $('live-status');
    if (state === 'open') {
      if (status.dataset.kind === 'live') showStatus(status, '');
      status.dataset.kind = '';
    } else if (state === 'closed' && live.wanted && live.connections > 0) {
      status.dataset.kind = 'live';
      showStatus(status, 'Reconnecting to live updates…');
    }
  }

  function connectLive() {
    if (!session) return;
    live.wanted = true;
    clearTimeout(live.timer);
    live.timer = null;
    if (live.ws) return;
    var token = session.access_token;
    var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + API +
      '/ws?token=' + encodeURIComponent(token);
    var resumeFrom = live.cursor;
    if (resumeFrom) url += '&cursor=' + encodeURIComponent(resumeFrom);
    var ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    live.ws = ws;
    var opened = false;
    setLive('connecting');
    ws.onopen = function () {
      opened = true;
      live.lastSeen = Date.now();
      startPing(ws);
    };
    ws.onmessage = function (event) {
      if (live.ws !== ws) return;
      live.lastSeen = Date.now();
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (message && typeof message === 'object') onLiveMessage(message, ws, token, resumeFrom);
    };
    ws.onerror = function () { /* a close event follows */ };
    ws.onclose = function (event) {
      if (live.ws !== ws) return;
      live.ws = null;
      stopPing();
      setLive('closed');
      if (live.wanted) onLiveClosed(event.code, opened);
    };
  }

  function onLiveMessage(message, ws, token, resumeFrom) {
    switch (message.type) {
      case 'connection':
        live.attempt = 0;
        live.failures = 0;
        live.connections++;
        if (message.cursor) live.cursor = message.cursor;
        setLive('open');
        // The token may have been refreshed while this socket connected.
        if (session && session.access_token !== token) liveAuth();
        // A fresh feed starts at the head: what happened before it is
        // read through the API (duplicates are dropped by id).
        if (!resumeFrom) {
          loadThread();
          if (live.connections > 1) scheduleAccountReload(['money', 'subscription', 'me']);
        }
        return;
      case 'resync_required':
        if (message.cursor) live.cursor = message.cursor;
        loadThread();
        scheduleAccountReload(['money', 'subscription', 'me']);
        if (route.name === 'tickets') loadTicketList();
        return;
      case 'pong':
      case 'subscribed':
      case 'authenticated':
      case 'error':
        return;
      default:
        if (typeof message.type === 'string' && message.type.indexOf('.') !== -1 && message.id) {
          if (message.cursor) live.cursor = message.cursor;
          onEvent(message);
        }
    }
  }

  function onEvent(event) {
    var type = event.type;
    var payload = event.payload || {};
    var family = type.split('.')[0];
    if (type === 'ticket.message_added') {
      if (thread.ticket && payload.ticket_id === thread.ticket.id) {
        var stick = nearBottom();
        var added = insertMessage($('messages'), thread.ids, {
          id: payload.message_id,
          author: payload.author,
          text: payload.text,
          channel: payload.channel,
          created_at: event.timestamp
        });
        if (added && payload.author !== 'user') {
          if (route.name === 'support' && document.visibilityState === 'visible') {
            scheduleThreadReload(1500); // marks it read, and checks the thread
          } else {
            thread.pendingMarkRead = true;
            setUnread(route.name !== 'support');
          }
        }
        if (added && (stick || payload.author === 'user')) scrollToBottom(true);
      } else if (!thread.sending) {
        scheduleThreadReload();
        if (payload.author !== 'user' && route.name !== 'support') setUnread(true);
      }
    } else if (type === 'ticket.status_changed') {
      if (thread.ticket && payload.ticket_id === thread.ticket.id) {
        thread.ticket.status = payload.new_status;
        renderThreadInfo();
      } else if (!thread.sending) {
        scheduleThreadReload();
      }
    } else if (type === 'ticket.created') {
      if (!thread.sending && (!thread.ticket || thread.ticket.status === 'closed' ||
          thread.ticket.id !== payload.ticket_id)) {
        scheduleThreadReload();
      }
    }
    if (family === 'ticket' && route.name === 'tickets') loadTicketList();
    if (family === 'transaction' || family === 'payment' || type === 'referral.reward_granted') {
      scheduleAccountReload(['money']);
    }
    if (family === 'subscription') scheduleAccountReload(['subscription', 'money']);
    if (family === 'user') scheduleAccountReload(['me']);
  }

  function onLiveClosed(code, opened) {
    if (code === 4001) {
      // The token expired or was revoked: a fresh one, then at once.
      refreshSession().then(function () { connectLive(); }, function (error) {
        if (error instanceof SessionEnded) report(error);
        else if (!(error instanceof Stale)) scheduleReconnect();
      });
      return;
    }
    if (!opened) {
      // Refused before the upgrade (a 401 looks the same as no network).
      live.failures++;
      if (session && (live.failures >= 2 || Date.now() > session.expires_at - 60000)) {
        refreshSession().then(function () { scheduleReconnect(); }, function (error) {
          if (error instanceof SessionEnded) report(error);
          else if (!(error instanceof Stale)) scheduleReconnect();
        });
        return;
      }
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (!live.wanted || live.timer) return;
    var base = Math.min(30000, 1000 * Math.pow(2, live.attempt));
    live.attempt = Math.min(live.attempt + 1, 10);
    var delay = base * (0.75 + Math.random() * 0.5);
    live.timer = setTimeout(function () {
      live.timer = null;
      connectLive();
    }, delay);
  }

  function startPing(ws) {
    stopPing();
    live.pingTimer = setInterval(function () {
      if (live.ws !== ws) return;
      if (Date.now() - live.lastSeen > 60000) {
        // Nothing heard for a minute: the connection is dead. Start over.
        dropSocket();
        scheduleReconnect();
        return;
      }
      try { ws.send(JSON.stringify({ type: 'ping' })); } catch (e) { /* closing */ }
    }, 25000);
  }

  function stopPing() {
    clearInterval(live.pingTimer);
    live.pingTimer = null;
  }

  function dropSocket() {
    var ws = live.ws;
    live.ws = null;
    stopPing();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000, 'bye'); } catch (e) { /* already closed */ }
    }
    setLive('closed');
  }

  /** Hands the open socket the fresh token (so the feed outlives the old). */
  function liveAuth() {
    var ws = live.ws;
    if (ws && ws.readyState === 1 && session) {
      try { ws.send(JSON.stringify({ type: 'auth', token: session.access_token })); } catch (e) { /* closing */ }
    }
  }

  function stopLive() {
    live.wanted = false;
    clearTimeout(live.timer);
    live.timer = null;
    dropSocket();
    live.cursor = null;
    live.attempt = 0;
    live.failures = 0;
    live.connections = 0;
  }

  /* ───────────────────────── Start and stop ───────────────────────── */

  function startApp() {
    setState('app');
    showStatus($('live-status'), '');
    routeStack = [location.hash];
    renderRoute(false);
    connectLive();
    loadThread();
    loadMe();
    loadBalances();
    loadSubscription();
    loadRecentTransactions();
  }

  /** Forgets the session here and shows the sign-in screen. */
  function endSession(message, kind) {
    generation++;
    session = null;
    storageRemove(SESSION_KEY);
    clearTimeout(refreshTimer);
    refreshTimer = null;
    refreshing = null;
    stopLive();
    clearTimeout(thread.reloadTimer);
    thread.ticket = null;
    thread.ids = {};
    thread.seq++;
    thread.pendingMarkRead = false;
    plans = null;
    ['messages', 'balances', 'transactions', 'all-transactions', 'ticket-list', 'past-messages',
      'profile', 'subscription'].forEach(function (id) { clear($(id)); });
    $('user-name').textContent = 'Your account';
    $('message-text').value = '';
    setUnread(false);
    ['composer-status', 'thread-status', 'live-status'].forEach(function (id) { showStatus($(id), ''); });
    showSignIn(message, kind);
  }

  async function signOut() {
    var button = $('sign-out');
    button.disabled = true;
    var problem = null;
    try {
      if (session) await api('POST', '/auth/logout');
    } catch (error) {
      if (error instanceof Stale) return;
      if (!(error instanceof SessionEnded)) problem = error;
    } finally {
      button.disabled = false;
    }
    if (problem) {
      endSession('Signed out on this device, but the server did not confirm: ' + problem.message, 'error');
    } else {
      endSession('You are signed out.', 'ok');
    }
  }

  function wire() {
    $('email-login').addEventListener('submit', function (event) {
      event.preventDefault();
      var email = $('login-email');
      var password = $('login-password');
      var button = $('login-submit');
      var status = $('signin-status');
      if (!email.value.trim() || !password.value) {
        showStatus(status, 'Enter your e-mail and password.', 'error');
        (email.value.trim() ? password : email).focus();
        return;
      }
      button.disabled = true;
      showStatus(status, 'Signing in…');
      signIn('/auth/email/login', { email: email.value.trim(), password: password.value })
        .then(function () { password.value = ''; showStatus(status, ''); startApp(); })
        .catch(function (error) {
          if (error instanceof Stale) return;
          showStatus(status, error.message || 'Sign-in failed.', 'error');
          password.focus();
        })
        .then(function () { button.disabled = false; });
    });

    $('sign-out').addEventListener('click', function () { signOut(); });

    $('composer').addEventListener('submit', function (event) {
      event.preventDefault();
      sendMessage();
    });
    var textarea = $('message-text');
    textarea.addEventListener('keydown', function (event) {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
        event.preventDefault();
        sendMessage();
      }
    });
    textarea.addEventListener('input', function () {
      autosize();
      if ($('composer-status').classList.contains('error')) showStatus($('composer-status'), '');
    });

    $('more-transactions').addEventListener('click', function () { loadAllTransactions(false); });

    var backs = document.querySelectorAll('[data-back]');
    for (var i = 0; i < backs.length; i++) backs[i].addEventListener('click', goBack);

    document.addEventListener('keydown', function (event) {
      if (event.key !== 'Escape' || !PARENT[route.name] || root.dataset.state !== 'app') return;
      var target = event.target;
      if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
      goBack();
    });

    window.addEventListener('hashchange', onHashChange);

    var wake = function () {
      if (!session || document.visibilityState !== 'visible') return;
      ensureFresh().then(function () {
        if (live.wanted && !live.ws) connectLive();
      }, function (error) { report(error); });
    };
    document.addEventListener('visibilitychange', wake);
    window.addEventListener('online', wake);
    window.addEventListener('pageshow', function (event) { if (event.persisted) wake(); });
  }

  async function boot() {
    installTelegramReceiver();
    readTelegramLaunch();
    if (tg.inside) {
      postEvent('web_app_ready');
      postEvent('web_app_expand');
      postEvent('web_app_request_theme');
    }
    wire();

    // (a) Inside Telegram: the Mini App's initData.
    if (tg.initData) {
      try {
        await signIn('/auth/telegram/mini-app', { init_data: tg.initData });
        if (tg.fromHash) cleanUrl(true);
        startApp();
        return;
      } catch (error) {
        if (tg.fromHash) cleanUrl(true);
        if (loadSession()) {
          startApp();
          return;
        }
        showSignIn('Telegram sign-in failed: ' + error.message, 'error');
        return;
      }
    }

    // (b) Back from the Telegram Login Widget.
    var widget = readWidgetResult();
    if (widget) {
      var dropQuery = widget.from === 'query' ? WIDGET_FIELDS : [];
      if (widget.fields) {
        try {
          await signIn('/auth/telegram/widget', widget.fields);
          cleanUrl(widget.from === 'hash', dropQuery);
          startApp();
          return;
        } catch (error) {
          cleanUrl(widget.from === 'hash', dropQuery);
          showSignIn('Telegram sign-in failed: ' + error.message, 'error');
          return;
        }
      }
      cleanUrl(widget.from === 'hash', dropQuery);
      if (widget.error) {
        showSignIn(widget.error, 'error');
        return;
      }
    }

    // A session of this tab.
    if (loadSession()) {
      try {
        await ensureFresh();
        scheduleRefresh();
        startApp();
      } catch (error) {
        if (error instanceof SessionEnded) endSession(error.message, 'error');
        else startApp(); // the server is away: try anyway, errors show in place
      }
      return;
    }

    // (c) Sign in here.
    showSignIn('');
  }

  boot().catch(function (error) {
    showSignIn(error && error.message ? error.message : 'Something went wrong.', 'error');
  });
})();
