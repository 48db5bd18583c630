/* Live monitor: socket.io-client on namespace /live; newest event first, at most data-max rows. */
(function () {
  "use strict";
  function start() {
    var table = document.getElementById("live-events");
    if (!table || typeof io === "undefined") { return; }
    var body = table.tBodies[0];
    var status = document.getElementById("live-status");
    var empty = document.getElementById("live-empty");
    var max = parseInt(table.dataset.max, 10) || 200;
    var fDevice = document.getElementById("f-device");
    var fKind = document.getElementById("f-kind");
    var fDecision = document.getElementById("f-decision");

    function setStatus(text, cls) { status.textContent = text; status.className = "badge " + cls; }

    function visible(row) {
      var d = fDevice.value.trim();
      if (d && row.dataset.device.indexOf(d) === -1) { return false; }
      if (fKind.value && row.dataset.kind !== fKind.value) { return false; }
      if (fDecision.value && row.dataset.decision !== fDecision.value) { return false; }
      return true;
    }
    function refilter() {
      Array.prototype.forEach.call(body.rows, function (r) { r.hidden = !visible(r); });
    }
    function cell(row, text, cls) {
      var td = row.insertCell(-1); td.textContent = text == null ? "" : text;
      if (cls) { td.className = cls; }
    }
    function add(kind, ev) {
      var row = document.createElement("tr");
      row.dataset.kind = kind;
      row.dataset.device = ev.device || "";
      row.dataset.decision = kind === "tap" ? (ev.allow ? "allow" : "deny") : "";
      row.dataset.source = kind === "tap" ? "tap" : (ev.source || "device");
      row.className = kind === "tap" ? (ev.allow ? "ok" : "denied") : "alarm s-" + ev.severity;
      cell(row, new Date(ev.at).toLocaleString());
      cell(row, kind === "tap" ? table.dataset.tap : table.dataset.alarm);
      cell(row, ev.device);
      cell(row, ev.card || "");
      cell(row, kind === "tap" ? (ev.allow ? table.dataset.allowed : table.dataset.denied) : ev.severity);
      cell(row, kind === "tap" ? ev.reason : ev.code + ": " + ev.message);
      cell(row, kind === "tap" ? ev.amount : "", "num");
      row.hidden = !visible(row);
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > max) { body.deleteRow(-1); }
      empty.hidden = true;
    }

    [fDevice, fKind, fDecision].forEach(function (el) {
      el.addEventListener("input", refilter); el.addEventListener("change", refilter);
    });
    document.getElementById("live-clear").addEventListener("click", function () {
      while (body.rows.length) { body.deleteRow(0); }
      empty.hidden = false;
    });

    var socket = io("/live", { withCredentials: true });
    socket.on("connect", function () { setStatus(status.dataset.connected, "s-ok"); });
    socket.on("disconnect", function () { setStatus(status.dataset.disconnected, "s-warning"); });
    socket.on("connect_error", function () { setStatus(status.dataset.refused, "s-critical"); });
    socket.on("tap", function (ev) { add("tap", ev); });
    socket.on("alarm", function (ev) { add("alarm", ev); });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();
