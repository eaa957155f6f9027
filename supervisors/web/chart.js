/*
 * limitline's strategy chart: candles with the buy and sell fills marked, the equity beside
 * buy-and-hold, and the drawdown, in three panes on one date axis (UTC), with zoom (wheel,
 * pinch) and pan (drag). Built on TradingView Lightweight Charts (the global
 * `LightweightCharts` of vendor/lightweight-charts.standalone.production.js, loaded first).
 *
 * Used by the Lab's report.html (inlined) and by the dashboard when it shows a strategy.
 *
 *   const chart = LimitlineChart.render(element, data);   // element: an empty block element
 *   chart.api          // the Lightweight Charts IChartApi
 *   chart.remove()     // detaches everything
 *
 * `data` (every time in epoch seconds, UTC; every number a JS number, for drawing only):
 *   symbol:    "BTC/USD"              shown in the legend
 *   quote:     "USD"                  the currency of prices and equity
 *   candles:   [[time, open, high, low, close], ...]   ascending, unique times
 *   equity:    [[time, value], ...]   the strategy's equity in `quote` (optional)
 *   benchmark: [[time, value], ...]   buy-and-hold's equity in `quote` (optional)
 *   drawdown:  [[time, fraction], ...] fall from the running peak, 0..1 (optional; computed
 *                                     from `equity` when absent)
 *   fills:     [[time, "buy"|"sell", price, amount, label?], ...]   ascending times (optional);
 *              label (a perpetual's fill, a few letters: "L" open long, "xS" close short,
 *              "LIQ" a liquidation, drawn in purple) is written beside the marker
 * Panes without data are left out. Returns {api, remove}.
 */
(function (global) {
  "use strict";

  var COLOURS = {
    up: "#1a7f37", down: "#cf222e", buy: "#1a7f37", sell: "#cf222e", liquidation: "#8250df",
    equity: "#0969da", benchmark: "#8c959f", drawdown: "#cf222e", grid: "#eaeef2", text: "#24292f",
  };
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  /** "2017-07-01 11:00 UTC" for epoch seconds. */
  function utc(time) {
    var d = new Date(time * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + " UTC";
  }

  /** Axis labels, in UTC whatever the viewer's time zone. TickMarkType: 0 year, 1 month,
   * 2 day of month, 3 time, 4 time with seconds. */
  function tick(time, type) {
    var d = new Date(time * 1000);
    if (type === 0) return String(d.getUTCFullYear());
    if (type === 1) return MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear();
    if (type === 2) return pad(d.getUTCDate()) + " " + MONTHS[d.getUTCMonth()];
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  }

  function money(value) {
    return value.toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  }

  function points(rows) {
    var out = new Array(rows.length);
    for (var i = 0; i < rows.length; i++) out[i] = {time: rows[i][0], value: rows[i][1]};
    return out;
  }

  function drawdownOf(equity) {
    var peak = -Infinity, out = new Array(equity.length);
    for (var i = 0; i < equity.length; i++) {
      peak = Math.max(peak, equity[i][1]);
      out[i] = [equity[i][0], peak > 0 ? (peak - equity[i][1]) / peak : 0];
    }
    return out;
  }

  function render(element, data) {
    var LC = global.LightweightCharts;
    if (!LC) throw new Error("LimitlineChart needs LightweightCharts (vendor/lightweight-charts.standalone.production.js) loaded first");
    var quote = data.quote || "";
    element.style.position = element.style.position || "relative";
    var api = LC.createChart(element, {
      autoSize: true,
      layout: {background: {type: "solid", color: "#ffffff"}, textColor: COLOURS.text, fontSize: 12, attributionLogo: true},
      grid: {vertLines: {color: COLOURS.grid}, horzLines: {color: COLOURS.grid}},
      timeScale: {timeVisible: true, secondsVisible: false, tickMarkFormatter: tick},
      localization: {locale: "en-US", timeFormatter: utc},
      crosshair: {mode: 0},  // Normal: the crosshair follows the pointer freely
    });
    var panes = [];
    var candles = null, equity = null, benchmark = null, drawdown = null;

    if (data.candles && data.candles.length) {
      candles = api.addSeries(LC.CandlestickSeries, {
        upColor: COLOURS.up, downColor: COLOURS.down, borderVisible: false,
        wickUpColor: COLOURS.up, wickDownColor: COLOURS.down, title: data.symbol || "",
      }, panes.length);
      candles.setData(data.candles.map(function (c) {
        return {time: c[0], open: c[1], high: c[2], low: c[3], close: c[4]};
      }));
      if (data.fills && data.fills.length) {
        LC.createSeriesMarkers(candles, data.fills.map(function (f) {
          var buy = f[1] === "buy";
          var marker = {
            time: f[0], price: f[2], position: buy ? "atPriceBottom" : "atPriceTop",
            shape: buy ? "arrowUp" : "arrowDown", color: buy ? COLOURS.buy : COLOURS.sell, size: 1,
          };
          if (f.length > 4 && f[4]) {
            marker.text = f[4];
            if (f[4] === "LIQ") marker.color = COLOURS.liquidation;
          }
          return marker;
        }));
      }
      panes.push(3);
    }
    if (data.equity && data.equity.length) {
      var pane = panes.length;
      if (data.benchmark && data.benchmark.length) {
        benchmark = api.addSeries(LC.LineSeries, {
          color: COLOURS.benchmark, lineWidth: 2, lineStyle: 2, title: "buy & hold", priceLineVisible: false,
        }, pane);
        benchmark.setData(points(data.benchmark));
      }
      equity = api.addSeries(LC.LineSeries, {color: COLOURS.equity, lineWidth: 2, title: "equity " + quote}, pane);
      equity.setData(points(data.equity));
      panes.push(2);
      var dd = data.drawdown || drawdownOf(data.equity);
      drawdown = api.addSeries(LC.BaselineSeries, {
        baseValue: {type: "price", price: 0}, title: "drawdown",
        topLineColor: "rgba(0,0,0,0)", topFillColor1: "rgba(0,0,0,0)", topFillColor2: "rgba(0,0,0,0)",
        bottomLineColor: COLOURS.drawdown, bottomFillColor1: "rgba(207,34,46,0.05)",
        bottomFillColor2: "rgba(207,34,46,0.35)", lineWidth: 1, priceLineVisible: false,
        priceFormat: {type: "percent", precision: 2},
      }, panes.length);
      drawdown.setData(dd.map(function (p) { return {time: p[0], value: -100 * p[1]}; }));
      panes.push(1);
    }
    var chartPanes = api.panes();
    for (var i = 0; i < chartPanes.length && i < panes.length; i++) chartPanes[i].setStretchFactor(panes[i]);
    api.timeScale().fitContent();

    // The legend: the values under the crosshair (or the last ones), in words.
    var legend = document.createElement("div");
    legend.className = "limitline-chart-legend";
    legend.style.cssText = "position:absolute;left:8px;top:4px;z-index:3;font:12px system-ui,sans-serif;" +
      "color:" + COLOURS.text + ";background:rgba(255,255,255,0.85);padding:2px 6px;pointer-events:none";
    element.appendChild(legend);
    function show(param) {
      var parts = [];
      var time = param && param.time;
      function at(series) {
        if (!series) return null;
        if (param && param.seriesData && param.seriesData.get(series)) return param.seriesData.get(series);
        var all = series.data();
        return all.length ? all[all.length - 1] : null;
      }
      var c = at(candles), e = at(equity), b = at(benchmark), d = at(drawdown);
      var t = time || (c && c.time) || (e && e.time);
      if (t) parts.push(utc(t));
      if (c) parts.push("O " + money(c.open) + " H " + money(c.high) + " L " + money(c.low) + " C " + money(c.close));
      if (e) parts.push("equity " + money(e.value) + " " + quote);
      if (b) parts.push("buy & hold " + money(b.value) + " " + quote);
      if (d) parts.push("drawdown " + (-d.value).toFixed(2) + " %");
      legend.textContent = parts.join("  ·  ");
    }
    api.subscribeCrosshairMove(show);
    show(null);

    return {
      api: api,
      remove: function () { api.unsubscribeCrosshairMove(show); api.remove(); legend.remove(); },
    };
  }

  global.LimitlineChart = {render: render, utc: utc};
})(typeof window !== "undefined" ? window : this);
