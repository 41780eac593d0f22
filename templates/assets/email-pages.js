/*
 * The pages the e-mailed links open (templates/pages/verify_email.html,
 * reset_password.html, forgot_password.html): one script wires whichever
 * form the page has. No inline script: the token and the API base come from
 * <main id="link-page" data-api="/api/v1/cabinet/auth" data-token="…">.
 *
 * Hooks for tests (unchanged from the pages' inline versions):
 *   verify: button #confirm ("Confirm") → POST {api}/email/verify {token}
 *           #result: "Your address is confirmed. You can sign in now."
 *   reset:  form #reset, input #password (label "New password (at least 10
 *           characters)"), button "Set the password" → POST {api}/email/reset
 *           {token, new_password}; #result: "Your password is changed. Sign
 *           in with the new one."
 *   forgot: form #forgot, input #email (label "Your e-mail address"), button
 *           "Send me a link" → POST {api}/email/forgot {email}; #result: "If
 *           this address has an account, a link is on its way."
 *   A refused link shows the problem's detail, else "This link does not
 *   work any more."; #result has class "ok" or "error". After a success
 *   #next (a link to /cabinet) is shown where the page has one.
 */
(function () {
  'use strict';

  var page = document.getElementById('link-page');
  if (!page) return;
  var api = page.dataset.api || '/api/v1/cabinet/auth';
  var token = page.dataset.token || '';
  var result = document.getElementById('result');
  var LINK_DEAD = 'This link does not work any more.';
  var OFFLINE = 'Cannot reach the server. Check the connection and try again.';

  function show(text, ok) {
    if (!result) return;
    result.textContent = text;
    result.classList.toggle('ok', ok === true);
    result.classList.toggle('error', ok === false);
  }

  function showNext() {
    var next = document.getElementById('next');
    if (next) next.hidden = false;
  }

  /** POSTs JSON; never throws: {ok, status, body, offline}. */
  async function post(path, payload) {
    var response;
    try {
      response = await fetch(api + path, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json' },
        body: JSON.stringify(payload),
        cache: 'no-store',
        credentials: 'same-origin'
      });
    } catch (e) {
      return { ok: false, status: 0, body: null, offline: true };
    }
    var body = null;
    try {
      var text = await response.text();
      body = text ? JSON.parse(text) : null;
    } catch (e) {
      body = null;
    }
    return { ok: response.ok, status: response.status, body: body, offline: false };
  }

  function refusal(answer, fallback) {
    if (answer.offline) return OFFLINE;
    var body = answer.body;
    return (body && (body.detail || body.title)) || fallback;
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  var confirm = document.getElementById('confirm');
  if (confirm) {
    confirm.addEventListener('click', async function () {
      busy(confirm, true);
      show('');
      var answer = await post('/email/verify', { token: token });
      if (answer.ok) {
        show('Your address is confirmed. You can sign in now.', true);
        showNext();
        confirm.setAttribute('aria-busy', 'false'); // stays disabled: done
        return;
      }
      show(refusal(answer, LINK_DEAD), false);
      busy(confirm, false);
    });
  }

  var reset = document.getElementById('reset');
  if (reset) {
    reset.addEventListener('submit', async function (event) {
      event.preventDefault();
      var button = reset.querySelector('button[type="submit"]');
      var password = document.getElementById('password');
      busy(button, true);
      show('');
      var answer = await post('/email/reset', { token: token, new_password: password.value });
      if (answer.ok) {
        password.value = '';
        show('Your password is changed. Sign in with the new one.', true);
        showNext();
        button.setAttribute('aria-busy', 'false');
        return;
      }
      show(refusal(answer, LINK_DEAD), false);
      busy(button, false);
      password.focus();
    });
  }

  var forgot = document.getElementById('forgot');
  if (forgot) {
    forgot.addEventListener('submit', async function (event) {
      event.preventDefault();
      var button = forgot.querySelector('button[type="submit"]');
      var email = document.getElementById('email');
      busy(button, true);
      show('');
      var answer = await post('/email/forgot', { email: email.value });
      busy(button, false);
      // The answer is the same for every address; only a malformed address,
      // too many tries or no connection are worth telling.
      if (answer.offline || answer.status === 422 || answer.status === 429 || answer.status === 400) {
        show(refusal(answer, 'Something went wrong. Try again.'), false);
        return;
      }
      if (!answer.ok && answer.status >= 500) {
        show(refusal(answer, 'Something went wrong. Try again.'), false);
        return;
      }
      show('If this address has an account, a link is on its way.', true);
    });
  }
})();
