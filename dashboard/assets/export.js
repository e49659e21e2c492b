// Figure export from the browser (no server-side renderer needed): SVG as vectors, PNG at
// 300 dpi, i.e. 300/96 = 3.125 times the figure's on-screen pixels.
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  iondiff: {
    exportFigure: function (nSvg, nPng, graphId) {
      var trig = (window.dash_clientside.callback_context.triggered[0] || {}).prop_id || "";
      var gd = document.querySelector("#" + graphId + " .js-plotly-plot");
      if (!gd || !gd._fullLayout) { return window.dash_clientside.no_update; }
      var png = trig.indexOf("png-") === 0;
      var opts = {
        format: png ? "png" : "svg", scale: png ? 300 / 96 : 1,
        width: gd._fullLayout.width, height: gd._fullLayout.height,
        filename: "iondiff-" + graphId.replace("graph-", "")
      };
      window.Plotly.downloadImage(gd, opts);
      return { format: opts.format, scale: opts.scale, t: Date.now() };
    }
  }
});
