/* The demo page, the first user of qac-client.js: a WAI-ARIA 1.2 combobox with list
 * autocomplete, a strip of this session's queries, and the timings in a corner.
 *
 * What the page shows is what the server holds: the session strip is drawn from the queries
 * the server's hello and acks carry, never from what the page sent; a refused submit says why
 * and adds nothing; offline, the list closes and a banner counts down to the next attempt.
 *
 * Keys in the box: Down/Up move through the suggestions (wrapping) and show the active one in
 * the box (pressed before the answer to the last keystroke arrived, they wait for it), Enter
 * submits it (or the typed text), Escape closes the list and a second Escape clears the box,
 * Alt+Down opens the list and Alt+Up closes it, Home/End/Left/Right return to the text,
 * Tab leaves, Shift+Delete removes the active suggestion from the user's history when it
 * comes from there. Suggestions are always inserted as text, never as HTML.
 *
 * Suggestions from the user's own history carry a clock named "from your history" and a
 * Remove button beside the option, outside the listbox (an option may hold no control), named
 * for the query it removes and pointing at its option (aria-controls); from the keyboard,
 * Shift+Delete on the active option, which says so (aria-describedby). "Forget my history"
 * shows once there is history, asks once, and then says what it did.
 *
 * Nothing moves the box: the messages float under it, the session strip is one row of fixed
 * height, and the list never reaches the footer. On a phone the header steps aside once the
 * user types (not on focus: a first visit keeps its explanation in view).
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const input = $("q");
  const form = $("search-form");
  const box = $("box");
  const clearButton = $("clear");
  const popup = $("popup");
  const listbox = $("suggestions");
  let context = $("context"); // replaced, not moved, on every answer (see showContext)
  const removes = $("removes");
  const footer = $("stats");
  const notice = $("notice");
  const sessionList = $("session-queries");
  const sessionEmpty = $("session-queries-empty");
  const newSessionButton = $("new-session");
  const banner = $("offline");
  const bannerText = $("offline-text");
  const retryButton = $("retry");
  const status = $("status");
  const statusText = $("status-text");
  const timing = $("timing");
  const modelLabel = $("model");
  const announce = $("announce");
  const forgetButton = $("forget");
  const forgetDialog = $("forget-dialog");
  const forgotten = $("forgotten");
  const personalNote = $("personal-note");

  const HISTORY_SHOWN = 8;
  const NARROW = window.matchMedia("(max-width: 560px)");

  const client = new QacClient({ context: true }); // the context line needs the server's flag
  let items = []; // the suggestions in the list
  let prefix = ""; // the normalized prefix they complete
  let listId = null; // the id of the keystroke they answer
  let listText = ""; // the text of that keystroke
  let active = -1; // the active option, -1 for none
  let typed = ""; // what was typed: the box shows the active option while arrowing
  let pendingMove = 0; // an arrow pressed before the answer to the last keystroke arrived
  const sentText = new Map(); // keystroke id -> its text
  let queries = []; // this session's queries, as the server last said
  let offline = false; // since the connection dropped, until it is back
  let announceTimer = null;
  let countdown = null;
  let hasUser = false; // the server named a user: personal history is kept
  let personalCount = 0; // queries in the user's history, as the server last said (or more)
  let forgetting = false; // a forget was sent, its answer not yet here

  // -- suggestions ------------------------------------------------------------------------

  function render(m) {
    items = m.items;
    prefix = m.prefix;
    listId = m.id;
    listText = m.text !== undefined ? m.text : (m.id != null && sentText.get(m.id)) || "";
    for (const id of sentText.keys()) if (m.id != null && id <= m.id) sentText.delete(id);
    active = -1;
    input.removeAttribute("aria-activedescendant");
    listbox.replaceChildren(...items.map(option));
    removes.replaceChildren(...items.map(removeSlot));
    followScroll();
    popup.classList.remove("stale");
    listbox.removeAttribute("aria-busy");
    showContext(m.context);
    setOpen(items.length > 0 && document.activeElement === input && !offline);
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => {
      const n = items.length;
      announce.textContent = n ? `${n} ${n === 1 ? "suggestion" : "suggestions"}`
        : QacClient.normalize(typed) ? "No suggestions" : "";
    }, 600);
    if (fresh()) { // an arrow pressed while this answer was on its way applies to it
      if (pendingMove && isOpen()) move(pendingMove);
      pendingMove = 0;
    }
  }

  function clearList() {
    render({ items: [], prefix: "", id: null, context: false });
  }

  /** Whether the list answers what is in the box now. */
  function fresh() {
    return listId !== null && listId === client.latest && listText === typed;
  }

  /** One suggestion: the typed part as plain text, the completion in bold, both text nodes;
   * one from the user's history also gets its mark (no text node: the option's text stays
   * the query). */
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
      const fix = icon("fix", `suggestion-${i}-fix`, "spelling corrected");
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
      const mark = icon("mark", `suggestion-${i}-mark`, "from your history");
      li.setAttribute("aria-labelledby", [...labels, mark.id].join(" "));
      li.setAttribute("aria-describedby", "remove-hint");
      li.prepend(mark);
    }
    return li;
  }

  /** The Remove buttons scroll with the list. */
  function followScroll() {
    removes.style.transform = listbox.scrollTop ? `translateY(${-listbox.scrollTop}px)` : "";
  }

  /** The row beside option ``i``: a Remove button for one of the user's own, else empty. */
  function removeSlot(item, i) {
    const slot = document.createElement("div");
    if (!item.personal) return slot;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove";
    remove.tabIndex = -1; // the caret stays in the box: Shift+Delete is the keyboard's way
    remove.dataset.index = String(i);
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove \u201c${item.query}\u201d from your history`);
    remove.setAttribute("aria-controls", `suggestion-${i}`);
    remove.setAttribute("aria-keyshortcuts", "Shift+Delete");
    slot.append(remove);
    return slot;
  }

  /** A mark drawn by CSS and named for screen readers (it holds no text node). */
  function icon(className, id, label) {
    const span = document.createElement("span");
    span.className = className;
    span.id = id;
    span.setAttribute("role", "img");
    span.setAttribute("aria-label", label);
    return span;
  }

  /** Remove suggestion ``i`` from the user's history, and from the list at once. */
  function removeSuggestion(i) {
    const item = items[i];
    if (!item || !item.personal) return;
    client.remove(item.query);
    if (active >= 0) input.value = typed; // the box showed the option being removed
    render({ items: items.filter((_, j) => j !== i), prefix, id: listId, text: listText, context: !context.hidden });
    say(`Removed ${item.query} from your history`);
    ask(typed); // and ask again, for what takes its place
  }

  function say(text) {
    clearTimeout(announceTimer);
    announce.textContent = text;
  }

  /** The context line, only when the session (or the user's history) changed the ranking.
   * A new element each time: under a list of another length it is a line that appears, not
   * one that moves (a layout shift). */
  function showContext(changed) {
    const last = queries[queries.length - 1];
    const line = context.cloneNode(false);
    line.hidden = !changed;
    if (changed) {
      line.append(...(last ? ["Ranked for this session, after ", quote(last)] : ["Ranked with your past searches"]));
    }
    context.replaceWith(line);
    context = line;
    input.setAttribute("aria-describedby", changed ? "context hint" : "hint");
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
    if (open) fitPopup();
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

  /** Leave the options for the text (Home, End, Left, Right, Alt+Up): what the box shows is
   * now what was typed. */
  function backToText() {
    if (active < 0) return;
    typed = input.value;
    setActive(-1, false);
  }

  /** A keystroke: the list, if any, is stale until its answer arrives. */
  function ask(text) {
    const id = client.query(text);
    if (id != null) {
      sentText.set(id, text);
      if (items.length) {
        popup.classList.add("stale");
        listbox.setAttribute("aria-busy", "true");
      }
    }
  }

  /** The list fits above the footer and the bottom of what is visible (on a phone, the
   * on-screen keyboard takes half the screen), and scrolls. */
  function fitPopup() {
    const viewport = window.visualViewport;
    let bottom = viewport ? viewport.offsetTop + viewport.height : window.innerHeight;
    if (footer.offsetParent !== null) bottom = Math.min(bottom, footer.getBoundingClientRect().top);
    const room = bottom - box.getBoundingClientRect().bottom - 20 - (context.hidden ? 0 : context.offsetHeight + 14);
    listbox.style.maxHeight = `${Math.max(96, Math.floor(room))}px`;
  }

  // -- submitting, refusals and the session strip --------------------------------------------

  function submit(text) {
    const ok = QacClient.normalize(text) && text.length <= client.limits.maxPrefix;
    client.submit(text); // a refusal comes back as a "refused" event
    if (!ok) return;
    showNotice(offline ? `You are offline: \u201c${QacClient.normalize(text)}\u201d will be searched when the connection is back.` : "");
    input.value = typed = "";
    clearButton.hidden = true;
    clearList();
    input.focus();
  }

  /** A message under the box; ``kind`` "info" for news that is no refusal. */
  function showNotice(text, kind) {
    notice.textContent = text;
    notice.hidden = !text;
    notice.classList.toggle("info", kind === "info");
    if (text) say(text);
  }

  function refusal(m) {
    switch (m.code) {
      case "empty":
        return "Nothing to search: type a letter or a digit.";
      case "too_long":
        return `Not searched: that query is too long. A query has at most ${client.limits.maxPrefix} characters.`;
      case "rate_limited":
        return "Not searched: too many requests at once. Wait a moment and try again.";
      default:
        return `Not searched: ${m.message}`;
    }
  }

  function showHistory(list) {
    queries = list;
    const shown = queries.slice(-HISTORY_SHOWN);
    sessionList.replaceChildren(...shown.map((query) => {
      const li = document.createElement("li");
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.title = `Search \u201c${query}\u201d again`;
      chip.textContent = query;
      li.append(chip);
      return li;
    }));
    sessionList.classList.toggle("more", queries.length > shown.length);
    sessionList.scrollLeft = sessionList.scrollWidth; // the newest in view
    sessionEmpty.hidden = queries.length > 0;
    newSessionButton.hidden = queries.length === 0;
    if (!context.hidden) showContext(true); // "after ..." names the session's last query
    showForget();
  }

  /** "Forget my history" only when there is some to forget. */
  function showForget() {
    const some = hasUser && !forgetting && (personalCount > 0 || queries.length > 0);
    forgetButton.hidden = !some;
    personalNote.hidden = !some;
    if (some) forgotten.hidden = true;
  }

  // -- online, offline and the corner ---------------------------------------------------------

  function ms(value) {
    return value < 10 ? value.toFixed(1) : String(Math.round(value));
  }

  function showStatus({ state, retryAt }) {
    status.dataset.state = state;
    statusText.textContent = { online: "live", offline: "offline", idle: "idle" }[state] || "connecting";
    if (state === "offline" && !offline) {
      offline = true;
      setOpen(false);
      clearList(); // never offer what was ranked before the connection dropped
      timing.textContent = "";
      banner.hidden = false;
      say("Offline. Suggestions are paused until the connection is back.");
    } else if (state === "online" && offline) {
      offline = false;
      banner.hidden = true;
      say("Back online.");
    }
    clearInterval(countdown);
    if (offline) {
      const tick = () => {
        const left = retryAt == null ? 0 : Math.ceil((retryAt - Date.now()) / 1000);
        bannerText.textContent = left > 0 ? `Offline. Suggestions are paused; retrying in ${left} s.`
          : "Offline. Suggestions are paused; reconnecting\u2026";
      };
      tick();
      countdown = setInterval(tick, 250);
    }
  }

  // -- wiring -------------------------------------------------------------------------------

  client.on("suggestions", (m) => {
    if (offline) return;
    render(m);
    if (m.tookMs != null) {
      const rtt = m.rttMs != null ? ` · round trip ${ms(m.rttMs)} ms` : "";
      timing.textContent = `server ≤ ${m.tookMs} ms${rtt}`;  // took_ms is rounded up to 5 ms
    }
  });
  client.on("status", showStatus);
  client.on("hello", (m) => {
    modelLabel.textContent = `model ${m.index}`;
    input.maxLength = m.limits.maxPrefix;
    showHistory(m.queries);
    if (m.lost) {
      const back = announce.textContent === "Back online." ? "Back online. " : ""; // said in this same turn
      showNotice("The server restarted and no longer has this session\u2019s earlier queries. " +
        "What you add now starts the session again.", "info");
      say(back + notice.textContent);
    }
  });
  client.on("ack", (m) => {
    if (m.added && hasUser) personalCount = Math.max(personalCount, 1); // the submit went into it too
    showHistory(m.queries);
    if (m.added && !notice.classList.contains("info")) showNotice(""); // a refusal is answered
  });
  client.on("refused", (m) => {
    if (m.for !== "submit" && m.for !== "query") return;
    showNotice(refusal(m));
    // Refused by the server after the box was emptied: give the text back, to be fixed.
    if (m.for === "submit" && m.query && !input.value) {
      input.value = typed = m.query;
      clearButton.hidden = false;
    }
  });
  client.on("user", (m) => {
    hasUser = true;
    if (m.history != null) personalCount = m.history;
    const wasForgetting = forgetting && m.session;
    if (wasForgetting) forgetting = false;
    // The session as the server holds it now: a new one (after a forget, or for another
    // user), or this one without a removed query.
    showHistory(m.queries);
    if (wasForgetting) {
      forgotten.hidden = false;
      say("Your history is forgotten, and a new session began");
    }
    if (m.history === 0 && items.some((item) => item.personal)) {
      // forgotten: drop its marks at once
      render({ items: items.filter((item) => !item.personal), prefix, id: listId, text: listText, context: false });
    }
  });
  client.on("error", (m) => {
    if (m.for === "forget" && forgetting) {
      forgetting = false; // not done: Forget is offered again
      showForget();
    }
    if (m.code === "history_unavailable") showNotice("Your history cannot be reached just now; try again later.");
    else if (m.code === "internal") showNotice("The server could not rank that; keep typing.");
  });

  input.addEventListener("input", () => {
    if (NARROW.matches) document.body.classList.add("searching"); // the header steps aside
    typed = input.value;
    clearButton.hidden = !typed;
    if (active >= 0) setActive(-1, false);
    if (!notice.hidden) showNotice("");
    ask(typed);
  });

  input.addEventListener("keydown", (event) => {
    if (event.isComposing || event.ctrlKey || event.metaKey) return;
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp": {
        event.preventDefault();
        const delta = event.key === "ArrowDown" ? 1 : -1;
        if (event.altKey) {
          if (delta < 0) {
            backToText();
            setOpen(false);
          } else if (fresh()) {
            setOpen(items.length > 0);
          }
        } else if (fresh()) {
          move(delta);
        } else if (client.latest !== null) {
          pendingMove = delta; // the list is for an older keystroke: wait for the answer
        }
        break;
      }
      case "Home":
      case "End":
      case "ArrowLeft":
      case "ArrowRight":
        backToText(); // and the caret moves as usual
        break;
      case "Escape":
        if (isOpen()) {
          event.preventDefault();
          if (active >= 0) setActive(-1, true);
          setOpen(false);
        } else if (input.value) {
          event.preventDefault();
          input.value = typed = "";
          clearButton.hidden = true;
          ask("");
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
    if (items.length && fresh()) {
      setOpen(true);
    } else if (QacClient.normalize(input.value) && listText !== input.value) {
      typed = input.value; // the list was for another text (say, an option left in the box)
      ask(typed);
    }
  });
  input.addEventListener("blur", () => {
    document.body.classList.remove("searching");
    setOpen(false);
  });
  if (window.visualViewport) window.visualViewport.addEventListener("resize", () => isOpen() && fitPopup());
  NARROW.addEventListener("change", () => isOpen() && fitPopup());

  clearButton.addEventListener("click", () => {
    input.value = typed = "";
    clearButton.hidden = true;
    ask("");
    input.focus();
  });

  // The list never takes focus: a press on it keeps the caret in the box.
  popup.addEventListener("pointerdown", (event) => event.preventDefault());
  listbox.addEventListener("click", (event) => {
    const li = event.target.closest('[role="option"]');
    if (li) submit(items[Array.prototype.indexOf.call(listbox.children, li)].query);
  });
  removes.addEventListener("click", (event) => {
    const remove = event.target.closest(".remove");
    if (remove) removeSuggestion(Number(remove.dataset.index));
  });
  listbox.addEventListener("scroll", followScroll, { passive: true });
  // Hovering highlights (CSS) until the keys take over again.
  listbox.addEventListener("pointermove", () => listbox.classList.remove("keys"));

  sessionList.addEventListener("click", (event) => {
    const chip = event.target.closest(".chip");
    if (chip) submit(chip.textContent); // search it again
  });

  newSessionButton.addEventListener("click", () => {
    client.newSession();
    showHistory([]);
    clearList();
    input.value = typed = "";
    clearButton.hidden = true;
    input.focus();
  });

  forgetButton.addEventListener("click", () => forgetDialog.showModal()); // asks once
  forgetDialog.addEventListener("close", () => {
    if (forgetDialog.returnValue !== "forget") {
      forgetButton.focus();
      return;
    }
    forgetDialog.returnValue = "";
    client.forget();
    forgetting = true; // until the answer, which says what happened
    showForget();
    input.focus();
    if (items.some((item) => item.personal)) {
      render({ items: items.filter((item) => !item.personal), prefix, id: listId, text: listText, context: false });
    }
  });

  retryButton.addEventListener("click", () => client.retry());

  if (input.value) {
    typed = input.value; // restored by the browser on back/forward
    clearButton.hidden = false;
    ask(typed);
  }
})();
