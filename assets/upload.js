// Streams the chosen file to the server's /upload route as the raw request body
// (the browser never base64-encodes or holds it), shows the progress, then hands the
// upload's id to Dash through set_props on the "source-store".
(function () {
  function setText(id, text, cls) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; el.className = cls || ""; }
  }
  function post(url, file, onProgress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.onload = function () {
        var body;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = { ok: false, error: "the server answered " + xhr.status }; }
        resolve(body);
      };
      xhr.onerror = function () { resolve({ ok: false, error: "the upload failed (connection lost)" }); };
      xhr.send(file);
    });
  }
  // Put a file input into every holder the page renders (pages are rendered by Dash).
  function ensureInputs() {
    document.querySelectorAll(".file-holder").forEach(function (holder) {
      if (!holder.querySelector("input")) {
        var input = document.createElement("input");
        input.type = "file";
        input.id = holder.getAttribute("data-input-id");
        holder.appendChild(input);
      }
    });
  }
  new MutationObserver(ensureInputs).observe(document.documentElement, { childList: true, subtree: true });
  var prefix = (window.dash_config && window.dash_config.requests_pathname_prefix) || "/";
  document.addEventListener("change", async function (ev) {
    if (ev.target.id !== "trajectory-file") return;
    var file = ev.target.files[0];
    if (!file) return;
    var bar = document.getElementById("upload-progress");
    setText("upload-status", "uploading " + file.name + " ...", "");
    var res = await post(prefix + "upload?name=" + encodeURIComponent(file.name), file,
                         function (f) { if (bar) bar.value = f; });
    if (res.ok) {
      var incar = document.getElementById("incar-file");
      if (incar && incar.files[0]) {
        var r2 = await post(prefix + "upload?kind=incar&upload_id=" + res.upload_id, incar.files[0], function () {});
        if (!r2.ok) { setText("upload-status", "INCAR: " + r2.error, "error"); return; }
      }
      setText("upload-status", "uploaded " + res.name + " (" + (res.size / 1048576).toFixed(1) + " MB; species " + res.species.join(", ") + ")", "ok");
      window.dash_clientside.set_props("source-store", {
        data: { kind: "upload", id: res.upload_id, name: res.name, species: res.species, t: Date.now() }
      });
    } else {
      if (bar) bar.value = 0;
      setText("upload-status", res.error, "error");
      window.dash_clientside.set_props("source-store", { data: { kind: "error", error: res.error, t: Date.now() } });
    }
  });
})();
