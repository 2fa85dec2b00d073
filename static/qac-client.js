/*! qac-client.js: the browser side of qac's WebSocket protocol, for any search box.
 *
 * No dependencies, no build step. Include it from the qac server and wire it to an input:
 *
 *   <script src="https://qac.example.com/qac-client.js"></script>
 *   <script>
 *     const qac = new QacClient();   // connects to the server that served this script
 *     qac.attach(document.querySelector("#search"), (items) => {
 *       // items: [{query, score}, ...], best first; show item.query (as text, never as HTML)
 *     });
 *   </script>
 *
 * attach() sends every edit of the input as a keystroke, keeps the input within the server's
 * length limit and, when the input's form is submitted, records the query in the session, so
 * later suggestions follow it.
 *
 * Personal history: the client names its user to the server with a signed token, never a
 * bare id, and only ever in a WebSocket frame (never in a URL). On first use it asks the
 * server for an anonymous token and keeps it in localStorage (key "qac.user"), so the same
 * browser keeps its history; a site with signed-in users passes a token it signed instead
 * (option userToken, see docs/PROTOCOL.md). The user's own past queries then come back to
 * them, marked with item.personal === true; forget() and remove(query) delete them.
 *
 * What the client takes care of:
 *   - ids: each keystroke gets a rising id; an answer older than the last one shown is dropped,
 *     as is any answer to a keystroke made before cancel() or submit().
 *   - pace: it never sends faster than the server's rate limit (the "limits" of its hello).
 *     Keystrokes over the limit are coalesced: only the newest unsent one goes out, as soon as
 *     the limit allows. Submits and history operations wait their turn, in order.
 *   - session: the server's (signed) session id is kept in sessionStorage (one per tab) and
 *     resumed on every reconnect and page reload with a first frame {"type": "resume"}, never
 *     in the URL (which access logs keep), so the history that ranks suggestions survives both.
 *     The session's queries are what the server says they are (hello and ack carry them).
 *   - reconnects: with exponential back-off (0.5 s doubling to 15 s, jittered) when the socket
 *     drops, and at once when the user types (at most once a second); the newest keystroke
 *     and any submits made while offline are sent on reconnect. A connection the server
 *     closed for being idle (code 4000) reconnects on the next use.
 *   - refusals: a submit or keystroke the server (or the client, knowing the server's limits)
 *     refuses is reported as a "refused" event saying why; nothing is recorded.
 *   - timing: the server's took_ms (rounded up to 5 ms) and the round trip of each keystroke, in milliseconds.
 *
 * API (all optional arguments):
 *   new QacClient({url, storageKey, minDelay, maxDelay, userToken, anonymous, userStorageKey, context})
 *       url: the WebSocket URL (default: "ws" next to this script, ws: or wss: to match)
 *       context: true to be told, on each answer, whether the history changed it (the server
 *                then ranks some keystrokes twice; default false)
 *       userToken: a signed-in user's token from the embedding site (a string, or a function
 *                  returning one, called on every connect); default: an anonymous user
 *       anonymous: false for no anonymous user (and no personal history) without userToken
 *   client.on(type, fn) -> unsubscribe function. Events, each with one object argument:
 *       "suggestions" {id, prefix, items, tookMs, rttMs, context}  prefix is the server's
 *                     normalized one; items: [{query, score, personal?, corrected?}];
 *                     context (with the option): true when the session's or the user's
 *                     history changed the list
 *       "status"      {state: "connecting" | "online" | "offline" | "idle", retryInMs, retryAt}
 *                     retryAt: Date.now() of the next attempt while offline
 *       "hello"       {session, index, queries, limits, resumed, lost}   index is the
 *                     model version; queries: the session queries, oldest first; lost: the
 *                     session held queries here and the server no longer has them (it
 *                     restarted on the memory store, or the session expired)
 *       "ack"         {queries, added, stored, query}  after a submit: the session queries as
 *                     the server now holds them; added false: nothing was recorded
 *                     ("hello" and "ack" also carry history, deprecated: queries.length, until
 *                     the next release; "user"'s history is the personal history's size)
 *       "refused"     {for, code, message, query}   a submit ("for": "submit") or keystroke
 *                     ("query") that was not taken; code "empty", "too_long", "rate_limited", ...
 *       "user"        {history, removed, signedIn, session, queries}   history: entries in the
 *                     user's personal history (null if the server cannot read it); removed:
 *                     after remove(); session: the new, empty session the server began after
 *                     a forget or a change of user (else null), queries: the session's queries
 *                     (after remove(), without the removed one)
 *       "error"       {id, code, message, for}   every error frame (refusals included);
 *                     code "bad_user": the token was refused
 *   client.query(text)   send a keystroke; text that normalizes to "" (no letter or digit)
 *                        cancels instead and emits "suggestions" with no items at once.
 *   client.submit(text)  record a finished query in the session (and cancel())
 *   client.cancel()      drop answers to every keystroke sent so far
 *   client.attach(input, onItems) -> detach function
 *   client.forget()      delete the user's whole personal history and sessions (answered with
 *                        "user", which carries a new session, and a new token if anonymous)
 *   client.remove(query) delete one query from it (answered with "user", removed true/false)
 *   client.setUserToken(token)  switch to a signed-in user (null: back to the anonymous one); a
 *                        session holding queries stays with its user: the server begins a new one
 *   client.newSession()  forget the session and reconnect with a fresh one (the user stays)
 *   client.retry()       reconnect now if offline
 *   client.close()       disconnect for good
 *   client.state, client.session, client.index, client.queries, client.limits, client.latest
 *                        read-only; latest: the id of the newest keystroke (null: none)
 *   QacClient.split(query, prefix) -> [typed, completion]: the part of a suggestion that
 *                        matches the typed prefix and the rest (for bolding the completion).
 *   QacClient.normalize(text) -> the query as the server records it ("New  York!" -> "new york")
 */
(function (global) {
  "use strict";

  // Where this script came from: the default server. Captured now, as currentScript is only
  // set while the script first runs.
  const scriptSrc = (global.document && document.currentScript && document.currentScript.src) || "";
  // The server's normalization (indexer/normalize.py), near enough: NFKC, split on whitespace
  // and ".", strip what is not a word character from each piece, join with spaces, lowercase.
  const SPLIT = /[\s.]+/u;
  const IDLE_CLOSE = 4000; // the server's close code for a connection left unused
  const NON_WORD = /[^\p{L}\p{N}_]+/gu;
  // The server's defaults, until its hello says otherwise.
  const DEFAULT_LIMITS = { maxPrefix: 200, rate: 20, burst: 40 };
  const PACE = 0.9; // of the server's rate and burst: its clock and ours differ a little
  const TYPING_RETRY_MS = 1000; // typing while offline reconnects at once, at most this often
  const REFUSED_RETRY_MS = 250; // a keystroke refused as rate limited is sent again after this

  function defaultUrl() {
    const base = new URL(scriptSrc || global.location.href);
    const url = new URL(base.pathname.replace(/(static\/)?[^/]*$/, "") + "ws", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.href;
  }

  function storage() {
    try {
      return global.sessionStorage; // throws in some sandboxed frames
    } catch (e) {
      return null;
    }
  }

  function localStore() {
    try {
      return global.localStorage;
    } catch (e) {
      return null;
    }
  }

  function limitsOf(m) {
    const l = m && m.limits;
    if (!l) return { ...DEFAULT_LIMITS };
    return {
      maxPrefix: l.max_prefix > 0 ? l.max_prefix : DEFAULT_LIMITS.maxPrefix,
      rate: l.rate > 0 ? l.rate : DEFAULT_LIMITS.rate,
      burst: l.burst > 0 ? l.burst : DEFAULT_LIMITS.burst,
    };
  }

  class QacClient {
    constructor(options) {
      const opts = options || {};
      this.url = opts.url || defaultUrl();
      this.storageKey = opts.storageKey || "qac.session";
      this.minDelay = opts.minDelay || 500;
      this.maxDelay = opts.maxDelay || 15000;
      this.userStorageKey = opts.userStorageKey || "qac.user";
      this._userToken = opts.userToken || null; // the site's signed-in token (or a function)
      this._anonymous = opts.anonymous !== false;
      this._context = opts.context === true;
      this._presented = null; // the token presented on this connection, until answered
      this._userEarly = false; // the user was named before this connection's resume frame
      this.history = null; // entries in the user's personal history, from the last "user" frame
      this.state = "connecting";
      this.index = null;
      this.session = null;
      this.queries = []; // the session's queries as the server last said, oldest first
      this.limits = { ...DEFAULT_LIMITS };
      const store = storage();
      if (store) this.session = store.getItem(this.storageKey);
      this._handlers = {};
      this._ws = null;
      this._nextId = 1;
      this._floor = 1; // answers to ids below this are dropped (cancelled)
      this._shown = 0; // the id of the last answer shown
      this._sentAt = new Map(); // id -> performance.now() when sent
      this._latest = null; // the newest keystroke {id, text, sent}, resent on reconnect if unanswered
      this._outbox = []; // submits, user and history frames not sent yet, oldest first
      this._submits = []; // the texts of submits sent and not yet answered, oldest first
      this._tokens = 0; // the pace: a token bucket like the server's
      this._filled = 0; // performance.now() when the bucket was last filled
      this._paceTimer = null;
      this._attempt = 0;
      this._attemptAt = 0; // performance.now() of the last connection attempt
      this._retryAt = null;
      this._timer = null;
      this._closed = false;
      this._onOnline = () => this._retryNow();
      if (global.addEventListener) global.addEventListener("online", this._onOnline);
      this._connect();
    }

    /** The id of the newest keystroke, or null after cancel(). */
    get latest() {
      return this._latest ? this._latest.id : null;
    }

    on(type, fn) {
      (this._handlers[type] = this._handlers[type] || []).push(fn);
      return () => {
        this._handlers[type] = (this._handlers[type] || []).filter((f) => f !== fn);
      };
    }

    query(text) {
      if (!QacClient.normalize(text)) {
        this.cancel();
        this._emit("suggestions", { id: null, prefix: "", items: [], tookMs: null, rttMs: null, context: false });
        return null;
      }
      if (text.length > this.limits.maxPrefix) {
        this.cancel();
        this._emit("refused", this._tooLong("query", text));
        return null;
      }
      const id = this._nextId++;
      this._latest = { id, text, sent: false };
      this._typed();
      this._pump();
      return id;
    }

    submit(text) {
      this.cancel();
      if (!QacClient.normalize(text)) {
        this._emit("refused", { for: "submit", code: "empty", query: text,
                                message: "nothing to search: a query needs a letter or a digit" });
        return;
      }
      if (text.length > this.limits.maxPrefix) {
        this._emit("refused", this._tooLong("submit", text));
        return;
      }
      this._post({ type: "submit", query: text });
    }

    cancel() {
      this._floor = this._nextId;
      this._latest = null;
      this._sentAt.clear();
    }

    attach(input, onItems) {
      const fit = () => {
        input.maxLength = this.limits.maxPrefix;
      };
      const onInput = () => this.query(input.value);
      const onSubmit = () => this.submit(input.value);
      const offItems = this.on("suggestions", (m) => onItems(m.items, m));
      const offHello = this.on("hello", fit);
      fit();
      input.addEventListener("input", onInput);
      if (input.form) input.form.addEventListener("submit", onSubmit);
      return () => {
        offItems();
        offHello();
        input.removeEventListener("input", onInput);
        if (input.form) input.form.removeEventListener("submit", onSubmit);
      };
    }

    forget() {
      this._post({ type: "forget" });
    }

    remove(query) {
      this._post({ type: "remove", query: String(query) });
    }

    setUserToken(token) {
      this._userToken = token || null;
      if (this._isOnline()) this._sendUser();
    }

    newSession() {
      this.session = null;
      this.queries = [];
      const store = storage();
      if (store) store.removeItem(this.storageKey);
      this._outbox = this._outbox.filter((m) => m.type !== "submit");
      this.cancel();
      const old = this._ws;
      this._ws = null;
      if (old) old.close(1000, "new session");
      clearTimeout(this._timer);
      this._attempt = 0;
      this._connect();
    }

    retry() {
      this._retryNow();
    }

    close() {
      this._closed = true;
      clearTimeout(this._timer);
      clearTimeout(this._paceTimer);
      if (global.removeEventListener) global.removeEventListener("online", this._onOnline);
      if (this._ws) this._ws.close(1000, "closed by the page");
      this._setState("offline", null);
    }

    static normalize(text) {
      let s = String(text);
      if (s.normalize) s = s.normalize("NFKC"); // full-width letters, ligatures, composed accents
      const pieces = s.split(SPLIT).map((piece) => piece.replace(NON_WORD, ""));
      return pieces.filter(Boolean).join(" ").toLowerCase();
    }

    static split(query, prefix) {
      let n = 0;
      const max = Math.min(query.length, prefix.length);
      while (n < max && query[n] === prefix[n]) n++;
      return [query.slice(0, n), query.slice(n)];
    }

    // -- internals ------------------------------------------------------------------------

    _emit(type, detail) {
      for (const fn of this._handlers[type] || []) {
        try {
          fn(detail);
        } catch (e) {
          setTimeout(() => {
            throw e; // report, but let the other handlers run
          });
        }
      }
    }

    _tooLong(what, text) {
      const limit = this.limits.maxPrefix;
      return { for: what, code: "too_long", query: text,
               message: `${what === "submit" ? "query" : "prefix"} of ${text.length} characters; the limit is ${limit}` };
    }

    _isOnline() {
      return this.state === "online" && this._ws && this._ws.readyState === WebSocket.OPEN;
    }

    _setState(state, retryInMs) {
      this.state = state;
      this._retryAt = retryInMs == null ? null : Date.now() + retryInMs;
      this._emit("status", { state, retryInMs, retryAt: this._retryAt });
    }

    /** A frame other than a keystroke: sent in order, when the pace allows. */
    _post(message) {
      this._outbox.push(message);
      this._typed();
      this._pump();
    }

    /** The user is doing something: reconnect now if the connection is down. */
    _typed() {
      if (this.state === "idle" || (this.state === "offline" && performance.now() - this._attemptAt >= TYPING_RETRY_MS)) {
        this._retryNow();
      }
    }

    _take() {
      const now = performance.now();
      const rate = this.limits.rate * PACE;
      const burst = Math.max(1, Math.floor(this.limits.burst * PACE));
      this._tokens = Math.min(burst, this._tokens + ((now - this._filled) / 1000) * rate);
      this._filled = now;
      if (this._tokens < 1) return false;
      this._tokens -= 1;
      return true;
    }

    /** Send what waits, oldest frame first and then the newest keystroke, as the pace allows;
     * what is left goes out when the bucket has a token again. */
    _pump() {
      clearTimeout(this._paceTimer);
      this._paceTimer = null;
      if (!this._isOnline()) return;
      const latest = this._latest;
      while (this._outbox.length || (latest && !latest.sent)) {
        if (!this._take()) {
          const wait = ((1 - this._tokens) / (this.limits.rate * PACE)) * 1000;
          this._paceTimer = setTimeout(() => this._pump(), Math.max(1, Math.ceil(wait)));
          return;
        }
        if (this._outbox.length) {
          const message = this._outbox.shift();
          if (message.type === "submit") this._submits.push(message.query);
          this._send(message);
        } else {
          latest.sent = true;
          this._sentAt.set(latest.id, performance.now());
          this._send(this._context ? { type: "query", id: latest.id, prefix: latest.text, context: true }
            : { type: "query", id: latest.id, prefix: latest.text });
        }
      }
    }

    _send(message) {
      this._ws.send(JSON.stringify(message));
    }

    _signedInToken() {
      const given = this._userToken;
      return (typeof given === "function" ? given() : given) || null;
    }

    /** The frame naming the user: the site's token, else the stored anonymous one, else a
     * request for one (null without a user); noted as presented. */
    _userMessage() {
      let token = this._signedInToken();
      if (!token) {
        const store = localStore();
        token = store ? store.getItem(this.userStorageKey) : null;
        if (!token && !this._anonymous) return null;
      }
      this._presented = token;
      return token ? { type: "user", token } : { type: "user" };
    }

    /** Name the user to the server, before what waits. */
    _sendUser() {
      const message = this._userMessage();
      if (!message) return false;
      this._outbox.unshift(message);
      this._pump();
      return true;
    }

    _user(m) {
      const signedIn = !!this._signedInToken();
      if (!signedIn && m.token && this._presented !== m.token) {
        const store = localStore(); // a newly issued anonymous token: keep it for next time
        if (store) store.setItem(this.userStorageKey, m.token);
      }
      this._presented = m.token;
      this.history = m.history;
      if (m.session) {
        // The server began a new, empty session (after a forget, or for another user): keep it.
        this.session = m.session;
        const store = storage();
        if (store) store.setItem(this.storageKey, m.session);
        this.queries = Array.isArray(m.queries) ? m.queries : [];
      } else if (Array.isArray(m.queries)) {
        this.queries = m.queries; // after remove(): the session without the removed query
      }
      this._emit("user", { history: m.history, removed: m.removed, signedIn, session: m.session || null,
                           queries: this.queries });
    }

    _refusedUser() {
      // The stored anonymous token was refused (say, the server's secret changed): start anew.
      const anonymousRefused = this._presented && !this._signedInToken();
      this._presented = null;
      this._userEarly = false; // named again once online
      if (anonymousRefused) {
        const store = localStore();
        if (store) store.removeItem(this.userStorageKey);
        if (this._anonymous && this._isOnline()) this._sendUser();
      }
    }

    _connect() {
      if (this._closed) return;
      const url = new URL(this.url); // the session goes in a resume frame, never in the URL
      this._attemptAt = performance.now();
      this._setState("connecting", null);
      let ws;
      try {
        ws = new WebSocket(url.href);
      } catch (e) {
        this._scheduleReconnect();
        return;
      }
      this._ws = ws;
      this._resuming = false;
      ws.onmessage = (event) => {
        if (ws === this._ws) this._receive(event.data);
      };
      ws.onclose = (event) => {
        if (ws !== this._ws) return;
        this._ws = null;
        this._lost();
        if (event.code === IDLE_CLOSE) {
          this._setState("idle", null); // the server closed an unused connection: reconnect on use
          return;
        }
        this._scheduleReconnect();
      };
    }

    /** The connection is gone. The newest keystroke goes again on the next one; a submit it
     * sent is not (the server may have recorded it: the next hello says what it holds). */
    _lost() {
      clearTimeout(this._paceTimer);
      this._submits = [];
      this._outbox = this._outbox.filter((m) => m.type !== "user"); // presented again after hello
      if (this._latest) this._latest.sent = false;
      this._sentAt.clear();
    }

    _scheduleReconnect() {
      if (this._closed) return;
      const backoff = Math.min(this.maxDelay, this.minDelay * 2 ** this._attempt);
      const delay = Math.round(backoff * (0.75 + Math.random() * 0.25));
      this._attempt++;
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._connect(), delay);
      this._setState("offline", delay);
    }

    _retryNow() {
      if (this._closed || this._ws) return;
      clearTimeout(this._timer);
      this._connect();
    }

    _receive(data) {
      let m;
      try {
        m = JSON.parse(data);
      } catch (e) {
        return;
      }
      if (m.type === "hello") {
        this._hello(m);
      } else if (m.type === "suggestions") {
        if (m.id < this._floor || m.id <= this._shown) return; // stale
        this._shown = m.id;
        const sent = this._sentAt.get(m.id);
        for (const id of this._sentAt.keys()) if (id <= m.id) this._sentAt.delete(id);
        this._emit("suggestions", {
          id: m.id,
          prefix: m.prefix,
          items: m.items,
          tookMs: m.took_ms,
          rttMs: sent === undefined ? null : performance.now() - sent,
          context: m.context === true,
        });
      } else if (m.type === "ack") {
        const query = this._submits.shift();
        if (Array.isArray(m.queries)) this.queries = m.queries;
        this._emit("ack", { history: this.queries.length, queries: this.queries, added: m.added !== false,
                            stored: m.stored !== false, query });
        if (m.added === false) {
          this._emit("refused", { for: "submit", code: "empty", query,
                                  message: "nothing to search: a query needs a letter or a digit" });
        }
      } else if (m.type === "user") {
        this._user(m);
      } else if (m.type === "error") {
        this._error(m);
      }
    }

    _error(m) {
      if (m.code === "bad_session" && this._resuming) {
        // The server does not know this id (its secret changed): go on with the fresh session.
        this._resuming = false;
        this._online(this._fresh, true);
        return;
      }
      if (m.code === "bad_user") this._refusedUser();
      this._emit("error", { id: m.id, code: m.code, message: m.message, for: m.for });
      const latest = this._latest;
      if (m.for === "submit") {
        this._emit("refused", { for: "submit", code: m.code, message: m.message, query: this._submits.shift() });
      } else if (m.for === "query" && m.code !== "rate_limited" && latest && latest.id === m.id) {
        this._emit("refused", { for: "query", code: m.code, message: m.message, query: latest.text });
      } else if (m.for === "query" && m.code === "rate_limited") {
        // Over the limit all the same (other tabs share the address's): the newest keystroke
        // goes again shortly, if it was the one refused.
        if (latest && latest.id === m.id) {
          latest.sent = false;
          this._tokens = 0;
          clearTimeout(this._paceTimer);
          this._paceTimer = setTimeout(() => this._pump(), REFUSED_RETRY_MS);
        }
      }
    }

    _hello(m) {
      if (this._resuming) {
        this._resuming = false; // the answer to our resume frame
      } else if (this.session && m.session !== this.session) {
        // A fresh session's hello: ask for ours back first, and wait for the answer. The user
        // goes first: a session resumes only for the user who opened it.
        this._resuming = true;
        this._fresh = m;
        const user = this._userMessage();
        if (user) this._send(user);
        this._userEarly = !!user;
        this._send({ type: "resume", session: this.session });
        return;
      }
      this._online(m);
    }

    /** ``refused``: the server refused to resume the kept session (its secret changed). */
    _online(m, refused) {
      const resumed = this.session !== null && m.session === this.session;
      const lost = this.queries.length > 0 && (refused === true || m.restored === false);
      this.session = m.session;
      this.index = m.index;
      this.limits = limitsOf(m);
      this.queries = Array.isArray(m.queries) ? m.queries : [];
      this._tokens = Math.max(1, Math.floor(this.limits.burst * PACE)) - 1; // the resume, if any
      this._filled = performance.now();
      const store = storage();
      if (store) store.setItem(this.storageKey, m.session);
      this._attempt = 0;
      this._setState("online", null);
      this._emit("hello", { session: m.session, index: m.index, history: this.queries.length, queries: this.queries,
                            limits: this.limits, resumed, lost });
      if (this._userEarly) {
        this._userEarly = false; // named before the resume
      } else {
        this._presented = null;
        this._sendUser(); // first, so that what follows counts for the user
      }
      const latest = this._latest;
      if (latest && (latest.id <= this._shown || latest.id < this._floor)) latest.sent = true; // answered
      this._pump();
    }
  }

  global.QacClient = QacClient;
})(typeof window !== "undefined" ? window : globalThis);
