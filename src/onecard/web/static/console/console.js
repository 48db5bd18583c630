/* Progressive enhancements of the console; every page works without them. */
(function () {
  "use strict";

  function ready(fn) {
    if (document.readyState !== "loading") fn(); else document.addEventListener("DOMContentLoaded", fn);
  }

  // A one-time id per rendered money form: a double submit posts once (idempotency key).
  function requestIds() {
    document.querySelectorAll("input[data-request-id]").forEach(function (el) {
      if (!el.value && window.crypto && crypto.getRandomValues) {
        var a = new Uint8Array(16); crypto.getRandomValues(a);
        el.value = Array.from(a, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
      }
    });
  }

  // Switchers submit on change (their button stays for keyboard and no-script use).
  function autosubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form.submit(); });
    });
  }

  // Move focus to the first field with an error so keyboard users land on it.
  function focusError() {
    var bad = document.querySelector("[aria-invalid='true']");
    if (bad) bad.focus();
  }

  function printButtons() {
    document.querySelectorAll("[data-print]").forEach(function (el) {
      el.addEventListener("click", function () { window.print(); });
    });
  }

  function importProgress() {
    var box = document.getElementById("import-progress");
    if (!box || box.dataset.done === "yes") return;
    var url = box.dataset.statusUrl;
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          document.getElementById("bar").value = s.percent;
          document.getElementById("import-percent").textContent = s.percent;
          if (s.done) { window.location.reload(); } else { setTimeout(poll, 700); }
        })
        .catch(function () { setTimeout(poll, 2000); });
    }
    setTimeout(poll, 300);
  }

  function chart() {
    var data = document.getElementById("report-chart-data");
    var canvas = document.getElementById("report-chart");
    if (!data || !canvas || !window.Chart) return;
    var spec = JSON.parse(data.textContent);
    var colours = ["#0b5cad", "#e07b00", "#157f3b", "#b42318", "#6941c6", "#0e7490", "#a15c07"];
    spec.datasets.forEach(function (d, i) {
      d.backgroundColor = colours[i % colours.length];
      d.borderColor = colours[i % colours.length];
    });
    canvas.chart = new window.Chart(canvas, {
      type: spec.type,
      data: { labels: spec.labels, datasets: spec.datasets },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
                 scales: { y: { beginAtZero: true } } }
    });
    document.body.dataset.chartReady = "yes";
  }

  function qr() {
    document.querySelectorAll("[data-qr]").forEach(function (el) {
      if (!window.qrcode) return;
      var code = window.qrcode(0, "M");
      code.addData(el.dataset.qr);
      code.make();
      var img = document.createElement("img");
      img.src = code.createDataURL(6, 2);
      img.alt = el.getAttribute("aria-label") || "";
      el.appendChild(img);
    });
  }

  ready(function () {
    requestIds(); autosubmit(); focusError(); printButtons(); importProgress(); chart(); qr();
  });
})();
