// Members page: a role select shows its Save button only once the role was changed.
// Without JavaScript the Save buttons are always visible and the forms work the same.
(function () {
  "use strict";
  document.querySelectorAll("form.role-form").forEach(function (form) {
    var select = form.querySelector("select[name=role]");
    var save = form.querySelector(".role-save");
    if (!select || !save) return;
    var sync = function () {
      var changed = select.value !== select.dataset.initial;
      save.hidden = !changed;
      form.classList.toggle("is-dirty", changed);
    };
    select.addEventListener("change", sync);
    sync();
  });
})();
