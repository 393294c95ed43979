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
})();
