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
 * attach() sends every edit of the input as a keystroke and, when the input's form is
 * submitted, records the query in the session, so later suggestions follow it.
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
 *   - session: the server's (signed) session id is kept in sessionStorage (one per tab) and
 *     resumed on every reconnect and page reload with a first frame {"type": "resume"}, never
 *     in the URL (which access logs keep), so the history that ranks suggestions survives both.
 *   - reconnects: with exponential back-off (0.5 s doubling to 15 s, jittered) when the socket
 *     drops; the newest keystroke and any submits made while offline are sent on reconnect.
 *     A connection the server closed for being idle (code 4000) reconnects on the next use.
 *   - timing: the server's took_ms and the round trip of each keystroke, in milliseconds.
 *
 * API (all optional arguments):
 *   new QacClient({url, storageKey, minDelay, maxDelay, userToken, anonymous, userStorageKey})
 *       url: the WebSocket URL (default: "ws" next to this script, ws: or wss: to match)
 *       userToken: a signed-in user's token from the embedding site (a string, or a function
 *                  returning one, called on every connect); default: an anonymous user
 *       anonymous: false for no anonymous user (and no personal history) without userToken
 *   client.on(type, fn) -> unsubscribe function. Events, each with one object argument:
 *       "suggestions" {id, prefix, items, tookMs, rttMs}  prefix is the server's normalized one;
 *                     items: [{query, score, personal?}], personal true for the user's own queries
 *       "status"      {state: "connecting" | "online" | "offline", retryInMs}
 *       "hello"       {session, index, history, resumed}   index is the model version
 *       "ack"         {history}                             length of the session's history
 *       "user"        {history, removed, signedIn}   history: entries in the user's personal
 *                     history (null if the server cannot read it); removed: after remove()
 *       "error"       {id, code, message}   code "bad_user": the token was refused
 *   client.query(text)   send a keystroke; text that normalizes to "" (no letter or digit)
 *                        cancels instead and emits "suggestions" with no items at once.
 *   client.submit(text)  record a finished query in the session (and cancel())
 *   client.cancel()      drop answers to every keystroke sent so far
 *   client.attach(input, onItems) -> detach function
 *   client.forget()      delete the user's whole personal history (answered with "user")
 *   client.remove(query) delete one query from it (answered with "user", removed true/false)
 *   client.setUserToken(token)  switch to a signed-in user (null: back to the anonymous one)
 *   client.newSession()  forget the session and reconnect with a fresh one (the user stays)
 *   client.close()       disconnect for good
 *   client.state, client.session, client.index   read-only
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
      this._presented = null; // the token presented on this connection, until answered
      this._pendingOps = []; // forget/remove frames made while offline, oldest first
      this.history = null; // entries in the user's personal history, from the last "user" frame
      this.state = "connecting";
      this.index = null;
      this.session = null;
      const store = storage();
      if (store) this.session = store.getItem(this.storageKey);
      this._handlers = {};
      this._ws = null;
      this._nextId = 1;
      this._floor = 1; // answers to ids below this are dropped (cancelled)
      this._shown = 0; // the id of the last answer shown
      this._sentAt = new Map(); // id -> performance.now() when sent
      this._latest = null; // the newest keystroke {id, text}, resent on reconnect if unanswered
      this._pendingSubmits = []; // submits made while offline, oldest first
      this._attempt = 0;
      this._timer = null;
      this._closed = false;
      this._onOnline = () => this._retryNow();
      if (global.addEventListener) global.addEventListener("online", this._onOnline);
      this._connect();
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
        this._emit("suggestions", { id: null, prefix: "", items: [], tookMs: null, rttMs: null });
        return null;
      }
      const id = this._nextId++;
      this._latest = { id, text };
      if (this._isOnline()) this._sendQuery(id, text);
      else if (this.state === "idle") this._retryNow();
      return id;
    }

    submit(text) {
      this.cancel();
      if (!QacClient.normalize(text)) return;
      if (this._isOnline()) {
        this._send({ type: "submit", query: text });
      } else {
        this._pendingSubmits.push(text);
        if (this.state === "idle") this._retryNow();
      }
    }

    cancel() {
      this._floor = this._nextId;
      this._latest = null;
      this._sentAt.clear();
    }

    attach(input, onItems) {
      const onInput = () => this.query(input.value);
      const onSubmit = () => this.submit(input.value);
      const off = this.on("suggestions", (m) => onItems(m.items, m));
      input.addEventListener("input", onInput);
      if (input.form) input.form.addEventListener("submit", onSubmit);
      return () => {
        off();
        input.removeEventListener("input", onInput);
        if (input.form) input.form.removeEventListener("submit", onSubmit);
      };
    }

    forget() {
      this._op({ type: "forget" });
    }

    remove(query) {
      this._op({ type: "remove", query: String(query) });
    }

    setUserToken(token) {
      this._userToken = token || null;
      if (this._isOnline()) this._sendUser();
    }

    newSession() {
      this.session = null;
      const store = storage();
      if (store) store.removeItem(this.storageKey);
      this._pendingSubmits = [];
      this.cancel();
      const old = this._ws;
      this._ws = null;
      if (old) old.close(1000, "new session");
      clearTimeout(this._timer);
      this._attempt = 0;
      this._connect();
    }

    close() {
      this._closed = true;
      clearTimeout(this._timer);
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

    _isOnline() {
      return this.state === "online" && this._ws && this._ws.readyState === WebSocket.OPEN;
    }

    _setState(state, retryInMs) {
      this.state = state;
      this._emit("status", { state, retryInMs });
    }

    _send(message) {
      this._ws.send(JSON.stringify(message));
    }

    _op(message) {
      if (this._isOnline()) {
        this._send(message);
      } else {
        this._pendingOps.push(message);
        if (this.state === "idle") this._retryNow();
      }
    }

    _signedInToken() {
      const given = this._userToken;
      return (typeof given === "function" ? given() : given) || null;
    }

    /** Name the user to the server: the site's token, else the stored anonymous one, else ask. */
    _sendUser() {
      let token = this._signedInToken();
      if (!token) {
        const store = localStore();
        token = store ? store.getItem(this.userStorageKey) : null;
        if (!token && !this._anonymous) return false;
      }
      this._presented = token;
      this._send(token ? { type: "user", token } : { type: "user" });
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
      this._emit("user", { history: m.history, removed: m.removed, signedIn });
    }

    _refused(m) {
      // The stored anonymous token was refused (say, the server's secret changed): start anew.
      const anonymousRefused = this._presented && !this._signedInToken();
      this._presented = null;
      if (anonymousRefused) {
        const store = localStore();
        if (store) store.removeItem(this.userStorageKey);
        if (this._anonymous && this._isOnline()) this._sendUser();
      }
    }

    _sendQuery(id, text) {
      this._sentAt.set(id, performance.now());
      this._send({ type: "query", id, prefix: text });
    }

    _connect() {
      if (this._closed) return;
      const url = new URL(this.url); // the session goes in a resume frame, never in the URL
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
        if (event.code === IDLE_CLOSE) {
          this._setState("idle", null); // the server closed an unused connection: reconnect on use
          return;
        }
        this._scheduleReconnect();
      };
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
        });
      } else if (m.type === "ack") {
        this._emit("ack", { history: m.history });
      } else if (m.type === "user") {
        this._user(m);
      } else if (m.type === "error") {
        if (m.code === "bad_session" && this._resuming) {
          // The server does not know this id (its secret changed): go on with the fresh session.
          this._resuming = false;
          this._online(this._fresh);
          return;
        }
        if (m.code === "bad_user") this._refused(m);
        this._emit("error", { id: m.id, code: m.code, message: m.message });
      }
    }

    _hello(m) {
      if (this._resuming) {
        this._resuming = false; // the answer to our resume frame
      } else if (this.session && m.session !== this.session) {
        // A fresh session's hello: ask for ours back first, and wait for the answer.
        this._resuming = true;
        this._fresh = m;
        this._send({ type: "resume", session: this.session });
        return;
      }
      this._online(m);
    }

    _online(m) {
      const resumed = this.session !== null && m.session === this.session;
      this.session = m.session;
      this.index = m.index;
      const store = storage();
      if (store) store.setItem(this.storageKey, m.session);
      this._attempt = 0;
      this._setState("online", null);
      this._emit("hello", { session: m.session, index: m.index, history: m.history, resumed });
      this._presented = null;
      this._sendUser(); // first, so that what follows counts for the user
      for (const text of this._pendingSubmits.splice(0)) this._send({ type: "submit", query: text });
      for (const op of this._pendingOps.splice(0)) this._send(op);
      const latest = this._latest;
      if (latest && latest.id > this._shown && latest.id >= this._floor) this._sendQuery(latest.id, latest.text);
    }
  }

  global.QacClient = QacClient;
})(typeof window !== "undefined" ? window : globalThis);
