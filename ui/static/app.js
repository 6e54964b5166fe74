// latscope UI: sparklines and timelines (uPlot), and opening the span a
// link points at. Pages work without it; charts need it.
(function () {
  'use strict';

  function fmtMs(v) {
    if (v == null) return '–';
    if (v === 0) return '0';
    if (v >= 1000) return (v / 1000).toPrecision(3) + 's';
    if (v >= 1) return v.toPrecision(3) + 'ms';
    return (v * 1000).toPrecision(3) + 'µs';
  }

  function sparklines() {
    document.querySelectorAll('.spark[data-values]').forEach(function (el) {
      var ys = JSON.parse(el.dataset.values);
      var xs = ys.map(function (_, i) { return i; });
      var opts = {
        width: el.clientWidth || 130, height: el.clientHeight || 30,
        legend: { show: false }, cursor: { show: false }, select: { show: false },
        scales: { x: { time: false }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
        axes: [{ show: false }, { show: false }],
        series: [{}, { stroke: '#0b5cad', width: 1.5, fill: 'rgba(11,92,173,0.12)', spanGaps: false, points: { show: false } }]
      };
      new uPlot(opts, [xs, ys], el);
      var last = ys.filter(function (v) { return v != null; }).pop();
      el.title = 'p99 per step; latest ' + fmtMs(last);
    });
  }

  // shade draws the window and baseline ranges [from,to] in ms.
  function shade(ranges) {
    return function (u) {
      var ctx = u.ctx;
      ranges.forEach(function (r) {
        var x0 = u.valToPos(r.from / 1000, 'x', true), x1 = u.valToPos(r.to / 1000, 'x', true);
        ctx.save();
        ctx.fillStyle = r.color;
        ctx.fillRect(x0, u.bbox.top, Math.max(x1 - x0, 1), u.bbox.height);
        ctx.restore();
      });
    };
  }

  function timelines() {
    document.querySelectorAll('.timeline[data-src]').forEach(function (el) {
      fetch(el.dataset.src).then(function (r) {
        if (!r.ok) return r.json().then(function (e) { throw new Error(e.errors ? e.errors[0].msg : r.statusText); });
        return r.json();
      }).then(function (t) {
        var xs = [], p50 = [], p90 = [], p99 = [], errs = [];
        t.points.forEach(function (p) {
          xs.push(p.startMs / 1000);
          var some = p.count > 0;
          p50.push(some ? p.p50Ns / 1e6 : null);
          p90.push(some ? p.p90Ns / 1e6 : null);
          p99.push(some ? p.p99Ns / 1e6 : null);
          errs.push(p.errors > 0 ? p.errors : null);
        });
        var ranges = [];
        var pair = function (s, color) { if (s) { var v = s.split(',').map(Number); ranges.push({ from: v[0], to: v[1], color: color }); } };
        pair(el.dataset.baseline, 'rgba(0,158,115,0.12)');
        pair(el.dataset.window, 'rgba(213,94,0,0.12)');
        var opts = {
          width: el.clientWidth, height: 200,
          scales: { y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } }, e: { range: function (u, min, max) { return [0, Math.max(max, 1) * 4]; } } },
          axes: [{}, { values: function (u, vals) { return vals.map(fmtMs); }, size: 60 }, { show: false, scale: 'e' }],
          series: [{},
            { label: 'p50', stroke: '#009E73', width: 1.5, value: function (u, v) { return fmtMs(v); } },
            { label: 'p90', stroke: '#E69F00', width: 1.5, value: function (u, v) { return fmtMs(v); } },
            { label: 'p99', stroke: '#D55E00', width: 2, value: function (u, v) { return fmtMs(v); } },
            { label: 'errors', scale: 'e', stroke: '#b3261e', fill: 'rgba(179,38,30,0.25)', paths: uPlot.paths.bars({ size: [0.6, 20] }), points: { show: false } }],
          hooks: { drawClear: [shade(ranges)] }
        };
        el.textContent = '';
        var plot = new uPlot(opts, [xs, p50, p90, p99, errs], el);
        window.addEventListener('resize', function () { plot.setSize({ width: el.clientWidth, height: 200 }); });
      }).catch(function (e) {
        el.textContent = 'timeline unavailable: ' + e.message;
        el.classList.add('muted');
      });
    });
  }

  // openLinked opens the span a #span-… fragment names and shows it.
  function openLinked() {
    var id = decodeURIComponent(location.hash.slice(1));
    if (!id) return;
    var el = document.getElementById(id);
    if (el && el.tagName === 'DETAILS') {
      el.open = true;
      el.scrollIntoView({ block: 'center' });
    }
  }

  // showSelected brings the span a slow-traces row pointed at (the
  // request, ?span=…) into view when it is below the fold.
  function showSelected() {
    var el = document.querySelector('details.span.selected');
    if (el && el.getBoundingClientRect().top > window.innerHeight) el.scrollIntoView({ block: 'center' });
  }

  document.addEventListener('DOMContentLoaded', function () {
    if (window.uPlot) {
      sparklines();
      timelines();
    }
    openLinked();
    showSelected();
    window.addEventListener('hashchange', openLinked);
  });
})();
