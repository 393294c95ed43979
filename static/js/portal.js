// Behaviour shared by every page of the shell. No dependencies; runs after parse (defer).
(function () {
  "use strict";
  document.documentElement.classList.replace("no-js", "js");

  // Flash messages: the × button removes its banner.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-dismiss]");
    if (button) {
      var flash = button.closest(".flash");
      if (flash) flash.remove();
    }
  });

  // <form data-confirm="…">: ask before destructive POSTs (remove, revoke, suspend).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // The tenant switcher closes on Escape or a click elsewhere; so does the narrow screen's
  // Menu, except for a click in the links it opened (they sit beside it, not inside).
  var POPUPS = "details.switcher[open], details.nav-menu[open]";
  document.addEventListener("click", function (event) {
    document.querySelectorAll(POPUPS).forEach(function (details) {
      var controlled = details.matches(".nav-menu") && event.target.closest(".nav");
      if (!details.contains(event.target) && !controlled) details.removeAttribute("open");
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    document.querySelectorAll(POPUPS).forEach(function (details) {
      details.removeAttribute("open");
      details.querySelector("summary").focus();
    });
  });

  // A table wider than its box scrolls sideways inside its .table-wrap. A keyboard can only
  // scroll a box that takes focus (WCAG 2.1.1), and a screen reader should say what it is:
  // while a box scrolls it is a region named after its table, in the tab order; while its
  // table fits it is left alone, so no empty tab stop is added. A ResizeObserver follows
  // the box and its table (window width, fonts, a <details> opened, rows swapped in).
  function nameOf(wrap) {
    var table = wrap.querySelector("table");
    var label = table && (table.getAttribute("aria-label") || (table.caption && table.caption.textContent));
    if (!label) {
      var labelled = wrap.closest("[aria-labelledby]");
      var heading = labelled && document.getElementById(labelled.getAttribute("aria-labelledby").split(" ")[0]);
      heading = heading || (wrap.closest("section, .card") || document).querySelector("h2, h3") || document.querySelector("h1");
      if (heading) {
        heading = heading.cloneNode(true); // without its count badge or hidden decoration
        heading.querySelectorAll(".count, [aria-hidden='true']").forEach(function (el) { el.remove(); });
      }
      label = heading ? heading.textContent : "";
    }
    return label.replace(/\s+/g, " ").trim() || "Table";
  }
  function followScroll(wrap) {
    if (wrap.hasAttribute("data-follows-scroll")) return;
    wrap.setAttribute("data-follows-scroll", "");
    // Where the page already made the box focusable (or named it), that stays as it is.
    if (wrap.hasAttribute("tabindex")) return;
    function update() {
      var scrolls = wrap.scrollWidth > wrap.clientWidth + 1 || wrap.scrollHeight > wrap.clientHeight + 1;
      if (scrolls && !wrap.hasAttribute("data-scroll-region")) {
        wrap.setAttribute("data-scroll-region", "");
        wrap.setAttribute("tabindex", "0");
        wrap.setAttribute("role", "region");
        wrap.setAttribute("aria-label", nameOf(wrap));
      } else if (!scrolls && wrap.hasAttribute("data-scroll-region")) {
        ["data-scroll-region", "tabindex", "role", "aria-label"].forEach(function (name) {
          wrap.removeAttribute(name);
        });
      }
    }
    update();
    if ("ResizeObserver" in window) {
      var observer = new ResizeObserver(update);
      observer.observe(wrap);
      if (wrap.firstElementChild) observer.observe(wrap.firstElementChild);
    }
  }
  function followScrollBoxes(root) {
    if (root.matches && root.matches(".table-wrap")) followScroll(root);
    root.querySelectorAll(".table-wrap").forEach(followScroll);
  }
  followScrollBoxes(document);
  document.addEventListener("htmx:load", function (event) {
    followScrollBoxes(event.target);
  });
})();
