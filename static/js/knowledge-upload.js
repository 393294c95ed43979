// Knowledge base page: upload several files at once (drop or choose), one request per file
// so each has its own progress bar and its own answer. Each stored file refreshes the
// documents table at once (with the page's counts, sent out of band), whose statuses htmx
// keeps polling while files are being indexed; each upload's line follows its document's
// status in that table, so it does not say "being indexed" once it is ready or failed.
(function () {
  "use strict";

  var form = document.getElementById("kb-upload-form");
  if (!form) return;
  var zone = document.getElementById("kb-dropzone");
  var input = document.getElementById("kb-files");
  var list = document.getElementById("kb-uploads");
  var maxBytes = parseInt(form.dataset.maxBytes, 10) || 0;
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function row(file) {
    var item = document.createElement("li");
    item.className = "kb-upload";
    var name = document.createElement("span");
    name.className = "kb-upload-name";
    name.textContent = file.name;
    var msg = document.createElement("span");
    msg.className = "kb-upload-msg muted";
    msg.textContent = "Waiting…";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    item.appendChild(name);
    item.appendChild(msg);
    item.appendChild(bar);
    list.appendChild(item);
    return { item: item, msg: msg, bar: bar };
  }

  function finish(ui, ok, text) {
    ui.item.classList.add(ok ? "is-done" : "is-error");
    ui.msg.classList.remove("muted");
    ui.msg.textContent = text;
    ui.bar.value = 100;
    ui.bar.hidden = true;
  }

  function refreshDocuments() {
    if (window.htmx) {
      // From the table itself, so its hx-sync lets this replace a poll still on its way.
      window.htmx.ajax("GET", form.dataset.documentsUrl, {
        source: "#kb-documents",
        target: "#kb-documents",
        swap: "outerHTML",
      });
    }
  }

  // What an upload's line says while its document is indexed, by the document's status.
  var PROGRESS = {
    uploaded: "Uploaded. Queued for indexing…",
    parsing: "Uploaded. Reading the file…",
    indexing: "Uploaded. Indexing…",
  };

  function followStatuses(table) {
    list.querySelectorAll("li[data-document-id]").forEach(function (item) {
      var row = table.querySelector('tr[data-document-id="' + item.dataset.documentId + '"]');
      if (!row) return;
      var msg = item.querySelector(".kb-upload-msg");
      var status = row.dataset.status;
      item.classList.remove("is-done", "is-error", "is-busy");
      if (status === "ready") {
        var passages = parseInt(row.dataset.chunkCount, 10) || 0;
        item.classList.add("is-done");
        msg.textContent = "Ready: " + passages + (passages === 1 ? " passage" : " passages");
      } else if (status === "failed") {
        var error = row.querySelector(".kb-error");
        item.classList.add("is-error");
        msg.textContent = "Indexing failed" + (error ? ": " + error.textContent.trim() : ".");
      } else {
        item.classList.add("is-busy");
        msg.textContent = PROGRESS[status] || "Uploaded. Indexing…";
      }
    });
  }

  if (window.htmx) {
    window.htmx.onLoad(function (element) {
      if (element.id === "kb-documents") followStatuses(element);
    });
  }

  function send(file) {
    var ui = row(file);
    if (maxBytes && file.size > maxBytes) {
      finish(ui, false, "Larger than the " + Math.floor(maxBytes / 1048576) + " MB limit.");
      return;
    }
    var data = new FormData();
    data.append("files", file, file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-CSRFToken", csrf);
    xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) {
        ui.bar.value = Math.round((event.loaded / event.total) * 100);
        ui.msg.textContent = ui.bar.value + "%";
      }
    });
    xhr.addEventListener("load", function () {
      var result = null;
      try {
        result = (JSON.parse(xhr.responseText).results || [])[0];
      } catch (err) {
        result = null;
      }
      if (result) finish(ui, !!result.ok, result.message);
      else finish(ui, false, "The upload failed (" + xhr.status + ").");
      if (result && result.ok) {
        // A new document or version is indexed from now on: follow it, and list it at once.
        if (result.outcome !== "unchanged") ui.item.dataset.documentId = result.document;
        refreshDocuments();
      }
    });
    xhr.addEventListener("error", function () {
      finish(ui, false, "The upload failed: no connection.");
    });
    xhr.send(data);
  }

  function sendAll(files) {
    for (var i = 0; i < files.length; i++) send(files[i]);
  }

  input.addEventListener("change", function () {
    sendAll(input.files);
    input.value = "";
  });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("is-over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.remove("is-over");
    });
  });
  zone.addEventListener("drop", function (event) {
    if (event.dataTransfer && event.dataTransfer.files) sendAll(event.dataTransfer.files);
  });
})();
