/* The demo page, the first user of qac-client.js: a WAI-ARIA 1.2 combobox with list
 * autocomplete, a strip of this session's queries, and the timings in a corner.
 *
 * Keys in the box: Down/Up move through the suggestions (wrapping) and show the active one in
 * the box, Enter submits it (or the typed text), Escape closes the list and a second Escape
 * clears the box, Tab leaves, Shift+Delete removes the active suggestion from the user's
 * history when it comes from there. Suggestions are always inserted as text, never as HTML.
 *
 * Suggestions from the user's own history carry a clock named "from your history" and a
 * Remove button (pressed with the pointer; from the keyboard, Shift+Delete on the active
 * option, as options may hold no focusable control); "Forget my history" deletes it all.
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const input = $("q");
  const form = $("search-form");
  const box = $("box");
  const popup = $("popup");
  const listbox = $("suggestions");
  const context = $("context");
  const historyList = $("history");
  const historyEmpty = $("history-empty");
  const newSessionButton = $("new-session");
  const status = $("status");
  const statusText = $("status-text");
  const timing = $("timing");
  const modelLabel = $("model");
  const announce = $("announce");
  const forgetButton = $("forget");
  const personalNote = $("personal-note");

  const HISTORY_KEY = "qac.demo.history";
  const HISTORY_SHOWN = 8;

  const client = new QacClient();
  let items = []; // the suggestions in the list
  let prefix = ""; // the normalized prefix they complete
  let active = -1; // the active option, -1 for none
  let typed = ""; // what was typed: the box shows the active option while arrowing
  let history = loadHistory(); // this session's queries, oldest first
  let announceTimer = null;

  // -- suggestions ------------------------------------------------------------------------

  function render(newItems, newPrefix) {
    items = newItems;
    prefix = newPrefix;
    active = -1;
    input.removeAttribute("aria-activedescendant");
    listbox.replaceChildren(...items.map(option));
    showContext();
    setOpen(items.length > 0 && document.activeElement === input);
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => {
      announce.textContent = items.length ? `${items.length} suggestions` : "";
    }, 600);
  }

  /** One suggestion: the typed part as plain text, the completion in bold, both text nodes;
   * one from the user's history also gets its mark and a Remove button (no text nodes: the
   * option's text stays the query). */
  function option(item, i) {
    const li = document.createElement("li");
    li.id = `suggestion-${i}`;
    li.setAttribute("role", "option");
    const text = document.createElement("span");
    text.className = "text";
    text.id = `suggestion-${i}-text`;
    const labels = [text.id];
    if (item.corrected) {
      // Not a completion of what was typed: no bold tail, a mark of its own, said aloud.
      text.append(item.query); // a string argument becomes a text node, never markup
      li.classList.add("corrected");
      const fix = document.createElement("span");
      fix.className = "fix";
      fix.id = `suggestion-${i}-fix`;
      fix.setAttribute("role", "img");
      fix.setAttribute("aria-label", "spelling corrected");
      li.prepend(fix);
      labels.push(fix.id);
    } else {
      const [head, tail] = QacClient.split(item.query, prefix);
      text.append(head);
      if (tail) {
        const bold = document.createElement("b");
        bold.textContent = tail;
        text.append(bold);
      }
    }
    li.append(text);
    if (labels.length > 1) li.setAttribute("aria-labelledby", labels.join(" "));
    if (item.personal) {
      li.classList.add("mine");
      const mark = document.createElement("span");
      mark.className = "mark";
      mark.id = `suggestion-${i}-mark`;
      mark.setAttribute("role", "img");
      mark.setAttribute("aria-label", "from your history");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.tabIndex = -1; // the caret stays in the box: Shift+Delete is the keyboard's way
      remove.setAttribute("aria-label", `Remove \u201c${item.query}\u201d from your history`);
      remove.setAttribute("aria-keyshortcuts", "Shift+Delete");
      li.setAttribute("aria-labelledby", [...labels, mark.id].join(" "));
      li.setAttribute("aria-describedby", "remove-hint");
      li.prepend(mark);
      li.append(remove);
    }
    return li;
  }

  /** Remove suggestion ``i`` from the user's history, and from the list at once. */
  function removeSuggestion(i) {
    const item = items[i];
    if (!item || !item.personal) return;
    client.remove(item.query);
    if (active >= 0) input.value = typed; // the box showed the option being removed
    render(items.filter((_, j) => j !== i), prefix);
    say(`Removed ${item.query} from your history`);
    if (QacClient.normalize(typed)) client.query(typed); // and ask again, for what takes its place
  }

  function say(text) {
    clearTimeout(announceTimer);
    announce.textContent = text;
  }

  function showContext() {
    const last = history[history.length - 1];
    context.hidden = !last;
    if (last) context.replaceChildren("Ranked for this session, after ", quote(last));
  }

  function quote(text) {
    const q = document.createElement("q");
    q.textContent = text;
    return q;
  }

  function isOpen() {
    return !popup.hidden;
  }

  function setOpen(open) {
    popup.hidden = !open;
    box.classList.toggle("open", open);
    input.setAttribute("aria-expanded", String(open));
    if (!open && active >= 0) setActive(-1, false);
  }

  /** Make option ``i`` (or none, -1) active; ``fill`` shows it in the box, as arrowing does. */
  function setActive(i, fill) {
    const old = listbox.children[active];
    if (old) old.removeAttribute("aria-selected");
    active = i;
    const li = listbox.children[i];
    if (li) {
      li.setAttribute("aria-selected", "true");
      input.setAttribute("aria-activedescendant", li.id);
      li.scrollIntoView({ block: "nearest" });
    } else {
      input.removeAttribute("aria-activedescendant");
    }
    if (fill) input.value = li ? items[i].query : typed;
  }

  function move(delta) {
    const n = items.length;
    if (!n) return;
    if (!isOpen()) setOpen(true);
    listbox.classList.add("keys");
    const next = active < 0 ? (delta > 0 ? 0 : n - 1) : (active + delta + n) % n;
    setActive(next, true);
  }

  // -- submitting and the session strip -----------------------------------------------------

  function submit(text) {
    const query = QacClient.normalize(text);
    if (!query) return;
    client.submit(text);
    history.push(query);
    saveHistory();
    showHistory();
    input.value = typed = "";
    render([], "");
    input.focus();
  }

  function showHistory() {
    const shown = history.slice(-HISTORY_SHOWN);
    historyList.replaceChildren(...shown.map((query) => {
      const li = document.createElement("li");
      li.textContent = query;
      return li;
    }));
    historyList.classList.toggle("more", history.length > shown.length);
    historyEmpty.hidden = history.length > 0;
    newSessionButton.hidden = history.length === 0;
  }

  function loadHistory() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(HISTORY_KEY) || "[]");
      return Array.isArray(saved) ? saved.filter((q) => typeof q === "string") : [];
    } catch (e) {
      return [];
    }
  }

  function saveHistory() {
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(history));
    } catch (e) {
      /* storage unavailable: the strip lasts as long as the page */
    }
  }

  // -- the corner ---------------------------------------------------------------------------

  function ms(value) {
    return value < 10 ? value.toFixed(1) : String(Math.round(value));
  }

  function showStatus({ state, retryInMs }) {
    status.dataset.state = state;
    if (state === "online") {
      statusText.textContent = "live";
    } else if (state === "offline" && retryInMs != null) {
      statusText.textContent = `offline, retrying in ${Math.max(1, Math.round(retryInMs / 1000))} s`;
    } else {
      statusText.textContent = { offline: "offline", idle: "idle" }[state] || "connecting";
    }
  }

  // -- wiring -------------------------------------------------------------------------------

  client.on("suggestions", (m) => {
    render(m.items, m.prefix);
    if (m.tookMs != null) {
      const rtt = m.rttMs != null ? ` · round trip ${ms(m.rttMs)} ms` : "";
      timing.textContent = `server ${ms(m.tookMs)} ms${rtt}`;
    }
  });
  client.on("status", showStatus);
  client.on("hello", (m) => {
    modelLabel.textContent = `model ${m.index}`;
    if (!m.resumed) {
      history = []; // a new session: the server has no history for us
    } else if (m.history < history.length) {
      history = history.slice(history.length - m.history);
    }
    saveHistory();
    showHistory();
  });
  client.on("user", (m) => {
    forgetButton.hidden = false;
    personalNote.hidden = false;
    if (m.history === 0 && items.some((item) => item.personal)) {
      render(items.filter((item) => !item.personal), prefix); // forgotten: drop its marks at once
    }
  });
  client.on("error", (m) => {
    timing.textContent = `${m.code}: ${m.message}`;
  });

  input.addEventListener("input", () => {
    typed = input.value;
    if (active >= 0) setActive(-1, false);
    client.query(typed);
  });

  input.addEventListener("keydown", (event) => {
    if (event.isComposing || event.ctrlKey || event.metaKey) return;
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp":
        event.preventDefault();
        if (event.altKey) {
          setOpen(items.length > 0);
        } else {
          move(event.key === "ArrowDown" ? 1 : -1);
        }
        break;
      case "Escape":
        if (isOpen()) {
          event.preventDefault();
          if (active >= 0) setActive(-1, true);
          setOpen(false);
        } else if (input.value) {
          event.preventDefault();
          input.value = typed = "";
          client.query("");
        }
        break;
      case "Tab":
        typed = input.value;
        setOpen(false);
        break;
      case "Delete":
        if (event.shiftKey && isOpen() && active >= 0 && items[active].personal) {
          event.preventDefault();
          removeSuggestion(active);
        }
        break;
      default:
    }
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter: the active suggestion, else the typed text
    submit(isOpen() && active >= 0 ? items[active].query : input.value);
  });

  input.addEventListener("focus", () => {
    if (items.length && input.value === typed) setOpen(true);
  });
  input.addEventListener("blur", () => setOpen(false));

  // The list never takes focus: a press on it keeps the caret in the box.
  popup.addEventListener("pointerdown", (event) => event.preventDefault());
  listbox.addEventListener("click", (event) => {
    const li = event.target.closest('[role="option"]');
    if (!li) return;
    const i = Array.prototype.indexOf.call(listbox.children, li);
    if (event.target.closest(".remove")) {
      removeSuggestion(i);
    } else {
      submit(items[i].query);
    }
  });
  // Hovering highlights (CSS) until the keys take over again.
  listbox.addEventListener("pointermove", () => listbox.classList.remove("keys"));

  newSessionButton.addEventListener("click", () => {
    client.newSession();
    history = [];
    saveHistory();
    showHistory();
    render([], "");
    input.value = typed = "";
    input.focus();
  });

  forgetButton.addEventListener("click", () => {
    client.forget();
    say("Your history is forgotten");
    if (items.some((item) => item.personal)) render(items.filter((item) => !item.personal), prefix);
  });

  showHistory();
  if (input.value) {
    typed = input.value; // restored by the browser on back/forward
    client.query(typed);
  }
})();
