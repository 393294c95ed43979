// Copy buttons: <button data-copy="element-id">. Copies the value of an input or
// textarea, or the text of any other element (a <pre> with a curl command).
// Without JavaScript the buttons are hidden (portal.css) and the text stays selectable.
(function () {
  "use strict";

  function copyWithSelection(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "absolute";
    area.style.left = "-9999px";
    document.body.appendChild(area);
    area.select();
    var ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (error) {
      ok = false;
    }
    area.remove();
    return ok;
  }

  function announce(button, ok) {
    var label = button.querySelector(".copy-label");
    if (!label) return;
    if (!button.dataset.label) button.dataset.label = label.textContent;
    label.textContent = ok ? "Copied" : "Select and copy";
    button.classList.toggle("is-copied", ok);
    window.setTimeout(function () {
      label.textContent = button.dataset.label;
      button.classList.remove("is-copied");
    }, 2000);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) return;
    var text = source.matches("input, textarea") ? source.value : source.textContent;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(
        function () { announce(button, true); },
        function () { announce(button, copyWithSelection(text)); }
      );
    } else {
      announce(button, copyWithSelection(text));
    }
  });
})();
