// The console's only script besides htmx (no inline script anywhere: the CSP forbids it).
// - report and monthly-report documents are framed: size each frame to its document, and
//   print the framed document (not the console around it) from the print button;
// - the programme choice only applies when a referral's outcome is "assisted";
// - after a failed form, focus moves to the list of errors (keyboard and screen reader users).
(function () {
  "use strict";
  function fit(frame) {
    try {
      var doc = frame.contentDocument;
      if (doc && doc.documentElement) {
        frame.style.height = (doc.documentElement.scrollHeight + 24) + "px";
      }
    } catch (e) { /* not same-origin: leave the default height */ }
  }
  function wire(root) {
    root.querySelectorAll("iframe.doc-frame").forEach(function (f) {
      f.addEventListener("load", function () { fit(f); });
      if (f.contentDocument && f.contentDocument.readyState === "complete") { fit(f); }
    });
    root.querySelectorAll("[data-print-frame]").forEach(function (b) {
      b.addEventListener("click", function () {
        var f = document.getElementById(b.getAttribute("data-print-frame"));
        if (f && f.contentWindow) { f.contentWindow.focus(); f.contentWindow.print(); }
      });
    });
    var outcome = root.querySelector("select#outcome"), programme = root.querySelector("select#programme");
    if (outcome && programme) {
      var sync = function () { programme.disabled = outcome.value !== "assisted"; if (programme.disabled) { programme.value = ""; } };
      outcome.addEventListener("change", sync);
      sync();
    }
    var errors = root.querySelector("#form-errors");
    if (errors) { errors.focus(); }
  }
  document.addEventListener("DOMContentLoaded", function () { wire(document); });
  window.addEventListener("resize", function () { document.querySelectorAll("iframe.doc-frame").forEach(fit); });
})();
