// Home's cost-trend chart: uPlot (static/vendor) over the JSON the page embeds (#trend-data).
(function () {
  "use strict";
  var el = document.getElementById("trend-chart");
  var raw = document.getElementById("trend-data");
  if (!el || !raw || typeof uPlot === "undefined") return;
  var data = JSON.parse(raw.textContent);
  var COLORS = ["#6b7280", "#3b82f6", "#10b981", "#f59e0b", "#8b5cf6", "#ef4444", "#14b8a6", "#ec4899"];
  var usd = function (v) { return v == null ? "" : "$" + (v / 1e6).toFixed(v >= 1e6 || v === 0 ? 2 : 4); };
  var chart = null;
  var day = function (t) { return new Date(t * 1000).toISOString().slice(5, 10); };  // UTC days: MM-DD

  function build(view) {
    var series = [{label: "Day (UTC)", value: function (u, v) { return v == null ? "--" : day(v); }}];
    var values = [data.days];
    if (view === "totals") {
      [["Benchmark", "benchmark_micros"], ["Charge", "charge_micros"], ["Saved", "saved_micros"]].forEach(function (s, i) {
        series.push({label: s[0], stroke: COLORS[i], width: 2, value: function (u, v) { return usd(v); }});
        values.push(data.totals[s[1]]);
      });
    } else if (view === "batch") {  // batch rows alone (their spend and saving are in the totals too)
      [["Batch charge", "charge_micros"], ["Batch saved", "saved_micros"]].forEach(function (s, i) {
        series.push({label: s[0], stroke: COLORS[i + 3], width: 2, value: function (u, v) { return usd(v); }});
        values.push(data.batch[s[1]]);
      });
    } else {
      var groups = data[view] || {};
      var names = Object.keys(groups).sort(function (a, b) {
        var sum = function (n) { return groups[n].charge_micros.reduce(function (x, y) { return x + y; }, 0); };
        return sum(b) - sum(a);
      }).slice(0, 8);
      names.forEach(function (name, i) {
        series.push({label: name, stroke: COLORS[i % COLORS.length], width: 2, value: function (u, v) { return usd(v); }});
        values.push(groups[name].charge_micros);
      });
      if (!names.length) { series.push({label: "none", stroke: COLORS[0]}); values.push(data.days.map(function () { return 0; })); }
    }
    if (chart) chart.destroy();
    chart = new uPlot({
      width: Math.max(320, el.clientWidth - 24), height: 240, series: series,
      scales: {x: {time: true}},
      axes: [{splits: function () { return data.days; }, values: function (u, ticks) { return ticks.map(day); }},
             {values: function (u, ticks) { return ticks.map(usd); }, size: 70}],
    }, values, el);
  }

  var picker = document.getElementById("trend-view");
  build(picker ? picker.value : "totals");
  if (picker) picker.addEventListener("change", function () { build(picker.value); });
  window.addEventListener("resize", function () { if (chart) chart.setSize({width: Math.max(320, el.clientWidth - 24), height: 240}); });
})();
