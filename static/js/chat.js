// Chat page: follow answers as they are written (Server-Sent Events), send with Enter,
// show composer errors, copy answers. Needs htmx (loaded before this file, both deferred).
//
// The stream is untrusted model output: deltas are written with textContent, never as
// HTML. When a turn ends, the bubble is replaced by the server-rendered answer
// (Markdown rendered and sanitized on the server), fetched from data-fragment-url.
(function () {
  "use strict";

  var list = document.getElementById("messages");
  var STATUS_TEXT = {
    queued: "Waiting for the agent…",
    running: "Thinking…",
    streaming: "Writing…",
  };

  // --- scrolling: follow the answer unless the reader scrolled up ----------------------

  var stickToBottom = true;

  function nearBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 48;
  }

  function scrollToEnd(force) {
    if (list && (force || stickToBottom)) list.scrollTop = list.scrollHeight;
  }

  if (list) {
    list.addEventListener(
      "scroll",
      function () {
        stickToBottom = nearBottom();
      },
      { passive: true }
    );
    scrollToEnd(true);
  }

  // --- streaming ------------------------------------------------------------------------

  function parse(event) {
    try {
      return JSON.parse(event.data) || {};
    } catch (err) {
      return {};
    }
  }

  // Only a passage page of this portal becomes a link (the server-rendered answer applies
  // the same rule, and also checks the tenant).
  var PASSAGE_HREF = /^\/t\/[\w-]+\/knowledge\/passages\/\d+\/$/;

  function addItem(container, text, value, href) {
    var item = document.createElement("li");
    if (href && PASSAGE_HREF.test(href)) {
      var link = document.createElement("a");
      link.href = href;
      link.textContent = text;
      item.appendChild(link);
    } else {
      item.textContent = text;
    }
    if (value) item.value = value;
    container.appendChild(item);
    container.hidden = false;
  }

  // The shield of templates/includes/icon.html, for a notice written by this script.
  var SVG = "http://www.w3.org/2000/svg";

  function shieldIcon() {
    var icon = document.createElementNS(SVG, "svg");
    var attributes = {
      class: "icon",
      width: "16",
      height: "16",
      viewBox: "0 0 24 24",
      fill: "none",
      stroke: "currentColor",
      "stroke-width": "2",
      "stroke-linecap": "round",
      "stroke-linejoin": "round",
      "aria-hidden": "true",
      focusable: "false",
    };
    Object.keys(attributes).forEach(function (name) {
      icon.setAttribute(name, attributes[name]);
    });
    var path = document.createElementNS(SVG, "path");
    path.setAttribute("d", "M12 3l8 3v6c0 5-3.5 8-8 9-4.5-1-8-4-8-9V6l8-3z");
    icon.appendChild(path);
    return icon;
  }

  function follow(bubble) {
    if (bubble.dataset.following) return;
    bubble.dataset.following = "1";
    var text = bubble.querySelector("[data-stream-text]");
    var statusText = bubble.querySelector("[data-stream-status-text]");
    var citations = bubble.querySelector("[data-stream-citations]");
    var tools = bubble.querySelector("[data-stream-tools]");
    var finished = false;
    // The browser reconnects by itself and sends Last-Event-ID; the server resumes after it.
    var source = new EventSource(bubble.dataset.streamUrl);

    function setStatus(message) {
      if (statusText) statusText.textContent = message;
    }

    // The guardrails blocked the answer, or what a failed turn had written of it: what was
    // shown is replaced at once by their message, shown as the stored answer will show it
    // (the "Blocked by guardrails" notice, never as answer text) until that answer is swapped in.
    function showBlocked(message) {
      var notice = document.createElement("div");
      notice.className = "alert alert-warning msg-problem msg-blocked";
      notice.setAttribute("role", "alert");
      notice.appendChild(shieldIcon());
      var paragraph = document.createElement("p");
      var title = document.createElement("strong");
      title.textContent = "Blocked by guardrails.";
      paragraph.appendChild(title);
      paragraph.appendChild(document.createTextNode(" " + (message || "This answer was blocked.")));
      notice.appendChild(paragraph);
      text.replaceChildren(notice);
      bubble.classList.add("is-blocked");
    }

    function finish() {
      if (finished) return;
      finished = true;
      source.close(); // otherwise EventSource reconnects and asks again
      bubble.setAttribute("aria-busy", "false");
      htmx
        .ajax("GET", bubble.dataset.fragmentUrl, { target: bubble, swap: "outerHTML" })
        .then(function () {
          if (document.contains(bubble)) {
            // The answer could not be loaded (signed out, network): say so instead of spinning.
            bubble.classList.remove("is-streaming");
            setStatus("The answer could not be loaded. Reload the page.");
          }
          scrollToEnd(false);
        });
    }

    source.addEventListener("status", function (event) {
      var status = parse(event).status;
      if (STATUS_TEXT[status]) setStatus(STATUS_TEXT[status]);
    });
    source.addEventListener("delta", function (event) {
      text.textContent += parse(event).text || "";
      bubble.classList.add("has-text");
      scrollToEnd(false);
    });
    source.addEventListener("replace", function (event) {
      // The shown text was corrected (guardrails redacted a value only now complete), or a
      // failed turn's answer so far was blocked (its "error" follows).
      var data = parse(event);
      if (data.blocked) showBlocked(data.text);
      else text.textContent = data.text || "";
    });
    source.addEventListener("reset", function () {
      // A retry starts the answer over.
      text.textContent = "";
      citations.textContent = "";
      citations.hidden = true;
      tools.textContent = "";
      tools.hidden = true;
      bubble.classList.remove("has-text");
    });
    source.addEventListener("citation", function (event) {
      var c = parse(event);
      addItem(citations, c.title || c.source || c.passage_id || "Source", c.index, c.source);
    });
    source.addEventListener("tool_call", function (event) {
      var call = parse(event);
      addItem(tools, "Used " + (call.name || "a tool") + (call.error ? " (failed)" : ""));
      scrollToEnd(false);
    });
    source.addEventListener("done", finish);
    source.addEventListener("cancelled", finish);
    source.addEventListener("blocked", function (event) {
      // The output guardrails stopped the answer; then the stored (blocked) answer is swapped in.
      var data = parse(event);
      showBlocked(data.message || data.text);
      finish();
    });
    source.addEventListener("error", function (event) {
      if (event.data !== undefined) {
        finish(); // the turn's own "error" event: it failed; show the stored reason
      } else if (source.readyState === EventSource.CLOSED) {
        finish(); // the server refused the stream (e.g. 404): show what is stored
      } else {
        setStatus("Reconnecting…"); // a dropped connection: the browser retries by itself
      }
    });
  }

  htmx.onLoad(function (root) {
    if (root.matches && root.matches("[data-stream-url]")) follow(root);
    if (root.querySelectorAll) root.querySelectorAll("[data-stream-url]").forEach(follow);
  });

  // Stop: the form posts with htmx (CSRF header from <body hx-headers>); the stream then
  // ends with "cancelled" and the bubble is replaced.
  document.addEventListener("submit", function (event) {
    var form = event.target.closest(".stop-form");
    if (!form) return;
    var status = form.closest(".msg") && form.closest(".msg").querySelector("[data-stream-status-text]");
    if (status) status.textContent = "Stopping…";
  });

  // --- composer ---------------------------------------------------------------------------

  var composer = document.getElementById("composer");
  var input = composer && composer.querySelector("[data-composer-input]");
  var errorSlot = document.getElementById("composer-error");

  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 240) + "px";
  }

  if (composer && input) {
    input.addEventListener("input", grow);
    input.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      if (composer.classList.contains("htmx-request")) return; // one send at a time
      composer.requestSubmit();
    });

    composer.addEventListener("htmx:afterRequest", function (event) {
      if (event.detail.elt !== composer) return;
      var status = event.detail.xhr ? event.detail.xhr.status : 0;
      if (status >= 200 && status < 300) {
        // A first message names the conversation: the answer carries the new title out of
        // band (agents/_turn.html), as the server cut it, so nothing is repeated here.
        composer.reset();
        grow();
        errorSlot.textContent = "";
        var empty = list.querySelector("[data-chat-empty]");
        if (empty) empty.remove();
        stickToBottom = true;
        scrollToEnd(true);
      } else if (!CARRIES_MESSAGE[status]) {
        // 400, 402, 409, 413, 429 and 503 carry their own message (swapped in below); anything else gets a plain one.
        var alert = document.createElement("div");
        alert.className = "alert alert-error composer-alert";
        alert.setAttribute("role", "alert");
        alert.textContent = status
          ? "The message was not sent (error " + status + "). Reload the page and try again."
          : "The message was not sent: the portal could not be reached. Try again.";
        errorSlot.replaceChildren(alert);
      }
      input.focus();
    });
  }

  // An element with data-swap-errors has its 400 answer (a server-rendered partial with
  // the reason) swapped in too: into the element the attribute names, or its usual target.
  // htmx:beforeSwap fires on the target, so the requesting element is noted per request.
  var swapErrorsOwner = new WeakMap();
  // Refusals with a server-rendered reason: invalid input, a limit (402 quota/budget,
  // 413 a turn larger than a minute's tokens, 429 rate), and 409 (the conversation was
  // deleted in another tab while the message was being sent), and 503 (the database was too
  // busy to take it: portal/db/busy.py).
  var CARRIES_MESSAGE = { 400: true, 402: true, 409: true, 413: true, 429: true, 503: true };

  document.body.addEventListener("htmx:beforeRequest", function (event) {
    var owner = event.target.closest && event.target.closest("[data-swap-errors]");
    if (owner) swapErrorsOwner.set(event.detail.xhr, owner);
  });

  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var owner = swapErrorsOwner.get(event.detail.xhr);
    if (!owner || !CARRIES_MESSAGE[event.detail.xhr.status]) return;
    event.detail.shouldSwap = true;
    event.detail.isError = false;
    var selector = owner.getAttribute("data-swap-errors");
    if (selector) {
      event.detail.target = document.querySelector(selector);
      event.detail.swapOverride = "innerHTML";
    }
  });

  // --- Rename and Delete panels in the header -----------------------------------------
  // Each is a <details>: it opens on its button, and closes on Escape or a click elsewhere.

  var actions = document.querySelectorAll("details.chat-action");

  actions.forEach(function (details) {
    details.addEventListener("toggle", function () {
      if (!details.open) return;
      actions.forEach(function (other) {
        if (other !== details) other.open = false;
      });
      var field = details.querySelector("input[name=title]");
      if (field) field.select();
    });
  });
  document.addEventListener("click", function (event) {
    actions.forEach(function (details) {
      if (details.open && !details.contains(event.target)) details.open = false;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    actions.forEach(function (details) {
      if (details.open) {
        details.open = false;
        details.querySelector("summary").focus();
      }
    });
  });

  // --- copy an answer (its raw Markdown) ------------------------------------------------

  function copyText(value) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(value);
    var area = document.createElement("textarea");
    area.value = value;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    try {
      document.execCommand("copy");
    } finally {
      area.remove();
    }
    return Promise.resolve();
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    copyText(button.getAttribute("data-copy")).then(function () {
      button.classList.add("is-copied");
      button.setAttribute("title", "Copied");
      window.setTimeout(function () {
        button.classList.remove("is-copied");
        button.setAttribute("title", "Copy the answer (Markdown)");
      }, 1500);
    });
  });
})();
