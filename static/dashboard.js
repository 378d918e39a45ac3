// The dashboard's charts: hourly series embedded in the page (#usage-data), drawn with uPlot.
(function () {
  const el = document.getElementById("usage-data");
  if (!el || typeof uPlot === "undefined") return;
  const d = JSON.parse(el.textContent);
  if (!d.t.length) return;
  const usd = (a) => a.map((v) => v / 1e6);
  const width = (id) => Math.max(320, document.getElementById(id).clientWidth - 8);
  const opts = (id, series) => ({ width: width(id), height: 180, series: [{}].concat(series),
                                  axes: [{}, { size: 60 }], legend: { live: false } });
  new uPlot(opts("chart-requests", [{ label: "Requests", stroke: "#2563eb", fill: "rgba(37,99,235,.1)" }]),
            [d.t, d.requests], document.getElementById("chart-requests"));
  new uPlot(opts("chart-savings", [{ label: "Charge", stroke: "#2563eb" },
                                    { label: "Saved", stroke: "#10b981", fill: "rgba(16,185,129,.12)" },
                                    { label: "Benchmark", stroke: "#9ca3af", dash: [4, 4] }]),
            [d.t, usd(d.charge_micros), usd(d.saved_micros), usd(d.benchmark_micros)],
            document.getElementById("chart-savings"));
})();
