// natkey's only script. Every page works without it; it adds live progress on the audit page,
// tabs for the plans and copy buttons. Data comes from <script type="application/json">
// elements and data- attributes, never from inline script.
"use strict";

function readJson(id) {
  var el = document.getElementById(id);
  if (!el) return null;
  try { return JSON.parse(el.textContent); } catch (e) { return null; }
}

function liveProgress() {
  var run = readJson("run-data");
  if (!run || (run.status !== "queued" && run.status !== "running")) return;
  var bar = document.getElementById("run-progress");
  var text = document.getElementById("run-progress-text");
  var status = document.getElementById("run-status");
  function poll() {
    fetch(run.api, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (data) {
        var p = data.progress || {};
        if (bar && p.total) { bar.max = p.total; bar.value = p.done; }
        if (text) {
          text.textContent = (p.done || 0) + " of " + (p.total == null ? "?" : p.total) +
            " tables audited" + (p.current ? " · now: " + p.current : "");
        }
        if (status) status.setAttribute("data-status", data.status);
        if (data.status === "queued" || data.status === "running") {
          setTimeout(poll, 700);
        } else {
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  poll();
}

function tabs() {
  var nav = document.querySelector("nav.tabs");
  if (!nav) return;
  var links = nav.querySelectorAll("a.tab");
  var panels = document.querySelectorAll(".tab-panel");
  function show(id) {
    panels.forEach(function (p) { p.hidden = p.id !== id; });
    links.forEach(function (a) {
      var on = a.getAttribute("data-tab") === id;
      a.classList.toggle("active", on);
      a.setAttribute("aria-selected", on ? "true" : "false");
    });
  }
  links.forEach(function (a) {
    a.addEventListener("click", function (e) {
      e.preventDefault();
      show(a.getAttribute("data-tab"));
    });
  });
  var wanted = window.location.hash.slice(1);
  var first = nav.querySelector("a.tab");
  var audited = Array.prototype.find.call(links, function (a) { return a.textContent.indexOf("✓") >= 0; });
  // Only a tab panel's id selects a tab: a hash naming another element (#samples) would
  // otherwise hide every panel.
  var isPanel = Array.prototype.some.call(panels, function (p) { return p.id === wanted; });
  var start = isPanel ? wanted : (audited || first).getAttribute("data-tab");
  show(start);
  document.body.classList.add("tabs-ready");
}

function copyButtons() {
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el) return;
      var done = function () { b.textContent = "Copied"; setTimeout(function () { b.textContent = "Copy"; }, 1500); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(el.textContent).then(done, function () {});
      } else {
        var range = document.createRange();
        range.selectNodeContents(el);
        var sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
      }
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  liveProgress();
  tabs();
  copyButtons();
});
