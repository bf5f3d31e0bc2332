// Tessera's pages: each form and button posts JSON to the /auth route it names
// (data-post) and what follows a success is named by data-then. Refusals are shown as
// sentences in the role="alert" element of the form's section, which takes the focus.
"use strict";

(() => {
  const MESSAGES = {
    invalid_credentials: "The username or the password is wrong.",
    invalid_code: "That code is not right, or it was already used. Try the code your app shows now.",
    mfa_session_expired: "This sign-in has expired. Start again.",
    not_authenticated: "You are signed out. Sign in again.",
    invalid_or_expired_token: "This link has expired or was already used. Ask for a new one.",
    username_taken: "That username is taken. Choose another one.",
    email_taken: "An account uses that address already.",
    registration_disabled: "New accounts cannot be created here.",
    magic_links_disabled: "Sign-in links are turned off here.",
    mail_unavailable: "The mail could not be sent just now. Try again in a moment.",
    store_unavailable: "The service is not available just now. Try again in a moment.",
    overloaded: "The service is busy. Try again in a moment.",
    timeout: "The service took too long to answer. Try again.",
    csrf_rejected: "This page may not send that request. Reload the page and try again.",
    ceremony_expired: "That took too long. Try the passkey again.",
    passkey_exists: "This passkey is added already.",
    too_many_passkeys: "This account has as many passkeys as it can hold. Remove one first.",
    passkey_not_found: "That passkey was removed already.",
    passkeys_unavailable: "Passkeys cannot be used on this site.",
    no_passkey: "This account has no passkey. Choose another way.",
  };
  const PASSKEY_NOT_USED = "The passkey was not used. Try again, or choose another way.";
  const OIDC_ERRORS = {
    access_denied: "You cancelled the sign-in at the provider.",
    user_creation_disabled: "No account is linked to that sign-in, and new accounts cannot be created here.",
    account_disabled: "This account is disabled.",
    provider_unavailable: "The sign-in provider did not answer. Try again in a moment.",
    invalid_state: "That sign-in took too long or was already finished. Start again.",
    missing_cookie: "That sign-in was started in another browser or window. Start again here.",
  };
  const FIELDS = {
    username: "Username",
    email: "Email",
    password: "Password",
    new_password: "New password",
    code: "Authentication code",
    backup_code: "Backup code",
    email_code: "Emailed code",
    name: "Passkey name",
  };

  const page = document.body.dataset.page;
  const returnTo = document.body.dataset.returnTo || "/account";

  function minutes(seconds) {
    if (seconds < 90) return `${seconds} second${seconds === 1 ? "" : "s"}`;
    const m = Math.ceil(seconds / 60);
    return `${m} minute${m === 1 ? "" : "s"}`;
  }

  // A refusal as a sentence for a person: never the raw body.
  function describe(answer) {
    const problem = answer.body || {};
    const wait = Number(answer.retryAfter);
    switch (problem.code) {
      case "rate_limited":
        return wait > 0
          ? `Too many attempts. Try again in ${minutes(wait)}.`
          : "Too many attempts. Try again later.";
      case "account_locked":
        return `This account is locked after too many wrong codes${wait > 0 ? `; try again in ${minutes(wait)}` : ""}. A password reset lets you back in.`;
      case "validation_failed": {
        const first = (problem.errors && problem.errors[0]) || { field: problem.field, detail: problem.detail };
        const label = FIELDS[first.field];
        return label ? `${label}: ${first.detail}.` : "Some of what you entered is not valid.";
      }
      default:
        if (MESSAGES[problem.code]) return MESSAGES[problem.code];
        if (answer.status === 0) return "The service could not be reached. Check your connection and try again.";
        return "Something went wrong. Try again in a moment.";
    }
  }

  async function post(path, data) {
    try {
      const r = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify(data || {}),
      });
      let body = null;
      const text = await r.text();
      if (text) {
        try { body = JSON.parse(text); } catch (_) { body = null; }
      }
      return { ok: r.ok, status: r.status, body, retryAfter: r.headers.get("Retry-After") };
    } catch (_) {
      return { ok: false, status: 0, body: null, retryAfter: null };
    }
  }

  const scopeOf = (el) => el.closest("section") || document.querySelector("main");

  function showError(scope, message) {
    const alert = scope.querySelector(".error");
    status(scope, "");
    alert.textContent = message;
    alert.hidden = false;
    alert.focus();
  }

  function clearError(scope) {
    const alert = scope.querySelector(".error");
    if (alert) {
      alert.hidden = true;
      alert.textContent = "";
    }
  }

  function status(scope, message) {
    const el = scope.querySelector(".status");
    if (el) el.textContent = message;
  }

  function show(id) {
    for (const step of document.querySelectorAll(".step")) step.hidden = step.id !== id;
    const step = document.getElementById(id);
    const first = step.querySelector("input:not([type=hidden]):not([hidden])");
    if (first && first.offsetParent !== null) first.focus();
    return step;
  }

  function go(path) {
    window.location.assign(path);
  }

  // -- signing in --------------------------------------------------------------------

  let mfaToken = "";

  function chooseFactor(id) {
    const step = document.getElementById("second-factor");
    for (const form of step.querySelectorAll("form")) form.hidden = form.id !== id;
    for (const item of step.querySelectorAll("[data-factor]")) {
      item.closest("li").classList.toggle("chosen", item.dataset.factor === id);
    }
    const input = document.querySelector(`#${id} input:not([type=hidden])`);
    if (input) input.focus();
  }

  function secondFactor(answer) {
    mfaToken = answer.mfa_token;
    const step = show("second-factor");
    for (const hidden of step.querySelectorAll("input[name=mfa_token]")) hidden.value = mfaToken;
    const methods = answer.methods || [];
    for (const li of step.querySelectorAll("[data-method]")) {
      li.hidden = !methods.includes(li.dataset.method);
    }
    const first = methods.includes("totp") ? "factor-totp"
      : methods.includes("backup_code") ? "factor-backup" : null;
    if (first) chooseFactor(first);
  }

  async function enforceSetup(token) {
    const step = show("enforce");
    for (const hidden of step.querySelectorAll("input[name=mfa_token]")) hidden.value = token;
    const answer = await post("/auth/totp/enforce-setup", { mfa_token: token });
    if (!answer.ok) return showError(step, describe(answer));
    fillSetup(step, answer.body);
    step.querySelector("input[name=code]").focus();
  }

  function signedIn(answer, scope) {
    const body = answer.body || {};
    if (body.authenticated) return go(returnTo);
    if (body.mfa_required) return secondFactor(body);
    if (body.mfa_setup_required) return enforceSetup(body.mfa_token);
    return showError(scope, "Something went wrong. Try again in a moment.");
  }

  function fillSetup(scope, setup) {
    const box = scope.querySelector(".totp-setup");
    box.querySelector(".qr").src = `data:image/png;base64,${setup.qr_png_base64}`;
    box.querySelector(".secret").textContent = setup.secret;
    listCodes(box.querySelector(".codes"), setup.backup_codes);
    box.hidden = false;
  }

  function listCodes(list, codes) {
    list.replaceChildren(...codes.map((c) => {
      const li = document.createElement("li");
      li.textContent = c;
      return li;
    }));
  }

  // -- what follows a success ---------------------------------------------------------

  const THEN = {
    signin: (answer, scope) => signedIn(answer, scope),
    async registered(answer, scope, data) {
      const login = await post("/auth/login", { username: data.username, password: data.password });
      if (login.ok && login.body && login.body.authenticated) return go(returnTo);
      return go(`/login?return_to=${encodeURIComponent(returnTo)}`);
    },
    sent(answer, scope, data, trigger) {
      status(scope, trigger.dataset.sent);
    },
    reload: () => window.location.reload(),
    "signed-out": () => go("/login"),
    "password-set"(answer, scope) {
      scope.querySelector("form").hidden = true;
      status(scope, "Your password is set, and every device signed in to your account is signed out.");
      const link = document.createElement("a");
      link.href = "/login";
      link.textContent = "Sign in";
      const p = document.createElement("p");
      p.append(link);
      scope.append(p);
      link.focus();
    },
    "totp-setup"(answer, scope, data, trigger) {
      trigger.hidden = true;
      fillSetup(scope, answer.body);
      const form = scope.querySelector(".totp-confirm");
      form.hidden = false;
      form.querySelector("input").focus();
    },
    codes(answer, scope) {
      const box = scope.querySelector(".new-codes");
      listCodes(box.querySelector(".codes"), answer.body.backup_codes);
      box.hidden = false;
      status(scope, "New backup codes are ready.");
      for (const input of scope.querySelectorAll("form input")) input.value = "";
    },
    "email-otp"(answer, scope, data, trigger) {
      trigger.hidden = true;
      status(scope, "We mailed you a code. Enter it to turn email codes on.");
      const form = scope.querySelector(".email-otp-confirm");
      form.hidden = false;
      form.querySelector("input").focus();
    },
  };

  // The JSON of a form: its named fields; passwords as typed, everything else trimmed.
  function fields(form) {
    const data = {};
    if (!form) return data;
    for (const el of form.elements) {
      if (!el.name || el.disabled) continue;
      data[el.name] = el.type === "password" ? el.value : el.value.trim();
    }
    return data;
  }

  async function run(trigger, form) {
    const scope = scopeOf(trigger);
    const data = fields(form);
    if (trigger.dataset.id) data.id = trigger.dataset.id;
    const button = form ? trigger.tagName === "FORM" ? form.querySelector("button[type=submit]") : trigger : trigger;
    clearError(scope);
    button.disabled = true;
    try {
      const answer = await post(trigger.dataset.post, data);
      if (!answer.ok) return showError(scope, describe(answer));
      await THEN[trigger.dataset.then](answer, scope, data, trigger);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const submitter = event.submitter && event.submitter.dataset.post ? event.submitter : null;
    if (!submitter && !form.dataset.post) {
      // Enter in a form whose buttons each name their own action (one per passkey) does
      // nothing: the first of them is not what was meant.
      if (form.dataset.then) event.preventDefault();
      return;
    }
    event.preventDefault();
    run(submitter || form, form);
  });

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-post]");
    if (button && button.type === "button") {
      run(button, null);
      return;
    }
    const factor = event.target.closest("[data-factor]");
    if (factor) {
      event.preventDefault();
      chooseFactor(factor.dataset.factor);
      return;
    }
    const passkey = event.target.closest("button[data-passkey]");
    if (passkey) {
      event.preventDefault();
      usePasskey(passkey);
      return;
    }
    if (event.target.closest("[data-send-code]")) {
      event.preventDefault();
      sendCode(event.target);
    }
  });

  // -- passkeys ----------------------------------------------------------------------

  const passkeysWork = Boolean(window.PublicKeyCredential
    && PublicKeyCredential.parseCreationOptionsFromJSON && navigator.credentials);
  if (!passkeysWork) {
    for (const el of document.querySelectorAll("[data-passkey]")) {
      (el.closest("li[data-method]") || el).remove();
    }
  }

  // One ceremony: the options from `start`, the authenticator's answer as JSON.
  async function ceremony(kind, start, body) {
    const begun = await post(start, body);
    if (!begun.ok) return { refused: begun };
    try {
      const publicKey = kind === "create"
        ? PublicKeyCredential.parseCreationOptionsFromJSON(begun.body.publicKey)
        : PublicKeyCredential.parseRequestOptionsFromJSON(begun.body.publicKey);
      const credential = await navigator.credentials[kind]({ publicKey });
      return { credential: credential.toJSON() };
    } catch (_) {
      return { cancelled: true };
    }
  }

  const PASSKEY = {
    async login(scope) {
      const name = document.getElementById("username");
      const username = name && name.value.trim();
      const got = await ceremony("get", "/auth/passkeys/login/start", username ? { username } : {});
      if (got.refused) return showError(scope, describe(got.refused));
      if (got.cancelled) return showError(scope, PASSKEY_NOT_USED);
      const answer = await post("/auth/passkeys/login/finish", { credential: got.credential });
      if (answer.body && answer.body.code === "invalid_credentials") {
        return showError(scope, "That passkey does not sign in here: it is not registered, or it was not accepted. Choose another way to sign in.");
      }
      if (!answer.ok) return showError(scope, describe(answer));
      return signedIn(answer, scope);
    },
    async factor(scope) {
      const got = await ceremony("get", "/auth/2fa/passkey/start", { mfa_token: mfaToken });
      if (got.refused) return showError(scope, describe(got.refused));
      if (got.cancelled) return showError(scope, PASSKEY_NOT_USED);
      const answer = await post("/auth/2fa/verify", { mfa_token: mfaToken, passkey: got.credential });
      if (answer.body && answer.body.code === "invalid_code") {
        return showError(scope, "That passkey was not accepted. Try another one, or choose another way.");
      }
      if (!answer.ok) return showError(scope, describe(answer));
      return signedIn(answer, scope);
    },
    async add(scope) {
      const got = await ceremony("create", "/auth/passkeys/register/start", {});
      if (got.refused) return showError(scope, describe(got.refused));
      if (got.cancelled) return showError(scope, PASSKEY_NOT_USED);
      const name = scope.querySelector("input[name=passkey_name]").value.trim();
      const answer = await post("/auth/passkeys/register/finish", name ? { credential: got.credential, name } : { credential: got.credential });
      if (!answer.ok) return showError(scope, describe(answer));
      window.location.reload();
    },
  };

  async function usePasskey(button) {
    const scope = scopeOf(button);
    clearError(scope);
    button.disabled = true;
    try {
      await PASSKEY[button.dataset.passkey](scope);
    } finally {
      button.disabled = false;
    }
  }

  async function sendCode(trigger) {
    const scope = scopeOf(trigger);
    clearError(scope);
    const answer = await post("/auth/2fa/email/send", { mfa_token: mfaToken });
    if (!answer.ok) return showError(scope, describe(answer));
    chooseFactor("factor-email");
    status(scope, "We mailed you a code. It works for a few minutes.");
  }

  // -- links that carry a token in the fragment ---------------------------------------

  function fragment() {
    const values = new URLSearchParams(window.location.hash.slice(1));
    if (window.location.hash) {
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return values;
  }

  async function start() {
    const values = fragment();
    const refused = document.querySelector(".error:not([hidden])");
    if (refused) refused.focus();
    if (page === "login") {
      const exchange = values.get("oidc_exchange");
      const failure = values.get("oidc_error");
      const scope = document.getElementById("first-step");
      if (exchange) {
        status(scope, "Signing you in…");
        const answer = await post("/auth/oidc/exchange", { token: exchange });
        if (!answer.ok) return showError(scope, describe(answer));
        status(scope, "");
        return signedIn(answer, scope);
      }
      if (failure) {
        showError(scope, OIDC_ERRORS[failure] || "Signing in with that provider did not work. Try again.");
      }
    } else if (page === "magic") {
      const scope = document.getElementById("magic-step");
      const token = values.get("token");
      if (!token) return showError(scope, "This sign-in link is incomplete. Ask for a new one.");
      const answer = await post("/auth/magic-link/consume", { token });
      if (!answer.ok) return showError(scope, describe(answer));
      return signedIn(answer, scope);
    } else if (page === "reset") {
      const token = values.get("token");
      if (token) {
        const step = show("reset-confirm");
        step.querySelector("input[name=token]").value = token;
      }
    } else if (page === "email") {
      const scope = document.querySelector("section");
      const token = values.get("token");
      if (!token) return showError(scope, "This confirmation link is incomplete.");
      const answer = await post("/auth/email/confirm", { token });
      if (!answer.ok) return showError(scope, describe(answer));
      status(scope, `Your address is now ${answer.body.email}.`);
    }
  }

  start();
  // A link opened in a tab already on its page changes only the fragment.
  window.addEventListener("hashchange", start);
})();
