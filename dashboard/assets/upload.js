// Streams the chosen files to the server's /upload route as raw request bodies (the
// browser never base64-encodes or holds them), shows the progress, then hands what the
// server read from them (species, timestep, temperature, name) to Dash through set_props
// on the "source-store". The trajectory, its INCAR and a POSCAR may be chosen in any
// order, in either input, or all at once: they join one upload folder on the server.
// Every post carries this session's upload token (fetched once from /upload/token) in a
// header, which a cross-site page cannot read or send; the server answers with a
// reference to the upload that only this browser session can use.
(function () {
  function setText(id, text, cls) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; el.className = cls || ""; }
  }
  var token = null;
  async function uploadToken() {
    if (token) return token;
    var r = await fetch(prefix + "upload/token", { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error("the server answered " + r.status);
    token = await r.json();
    return token;
  }
  function post(url, file, onProgress, tok) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader(tok.header, tok.token);
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
        input.multiple = input.id === "trajectory-file";
        holder.appendChild(input);
        state = { ref: null, hasTrajectory: false };  // a fresh page: a fresh upload
      }
    });
  }
  new MutationObserver(ensureInputs).observe(document.documentElement, { childList: true, subtree: true });
  var prefix = (window.dash_config && window.dash_config.requests_pathname_prefix) || "/";
  var state = { ref: null, hasTrajectory: false };

  function kindOf(file) {
    if (/INCAR/i.test(file.name)) return "incar";
    if (/POSCAR|CONTCAR/i.test(file.name)) return "poscar";
    return "trajectory";
  }
  async function send(kind, file) {
    var bar = document.getElementById("upload-progress");
    var q = "upload?kind=" + kind + "&name=" + encodeURIComponent(file.name);
    // A new trajectory after a complete upload starts a new folder; everything else joins the current one.
    if (state.ref && !(kind === "trajectory" && state.hasTrajectory)) q += "&ref=" + state.ref;
    // The "damaged compressed file" option: keep a cut file's complete frames (flagged in the library).
    if (document.querySelector("#allow-truncated input:checked")) q += "&allow_truncated=1";
    setText("upload-status", "uploading " + file.name + " ...", "");
    var tok;
    try { tok = await uploadToken(); } catch (err) {
      return { ok: false, error: "the upload could not start (" + err.message + "): reload the page" };
    }
    var res = await post(prefix + q, file, function (f) { if (bar) bar.value = f; }, tok);
    if (!res.ok && /upload token/.test(res.error || "")) token = null;  // a new session: fetch a new token next time
    if (res.ok) {
      state.ref = res.ref;
      if (kind === "trajectory") state.hasTrajectory = true;
    }
    return res;
  }
  function report(res) {
    if (!res.ok) {
      var bar = document.getElementById("upload-progress");
      if (bar) bar.value = 0;
      setText("upload-status", res.error, "error");
      window.dash_clientside.set_props("source-store", { data: { kind: "error", error: res.error, t: Date.now() } });
      return;
    }
    if (!res.ready) {
      setText("upload-status", res.file + " received: now choose the trajectory", "ok");
      return;
    }
    var parts = [(res.size / 1048576).toFixed(1) + " MB", "species " + res.species.join(", ")];
    if (res.incar) parts.push("INCAR: " + (res.timestep_fs ? res.timestep_fs + " fs per frame" : "no timestep") +
                              (res.temperature_K ? ", " + res.temperature_K + " K" : ""));
    if (res.poscar) parts.push("POSCAR as reference lattice");
    setText("upload-status", "uploaded " + res.trajectory + " (" + parts.join("; ") + ") as \u201c" + res.name + "\u201d", "ok");
    window.dash_clientside.set_props("source-store", {
      data: { kind: "upload", ref: res.ref, name: res.name, species: res.species, timestep_fs: res.timestep_fs,
              temperature_K: res.temperature_K, poscar: res.poscar, t: Date.now() }
    });
  }
  document.addEventListener("change", async function (ev) {
    if (ev.target.id !== "trajectory-file" && ev.target.id !== "incar-file") return;
    var files = Array.prototype.slice.call(ev.target.files || []);
    if (!files.length) return;
    // The next choice starts afresh (and choosing the same file again still fires "change").
    if (ev.target.id === "trajectory-file") ev.target.value = "";
    var trajs = files.filter(function (f) { return ev.target.id === "trajectory-file" && kindOf(f) === "trajectory"; });
    if (trajs.length > 1) {
      report({ ok: false, error: "choose one trajectory at a time (with its INCAR and POSCAR): got " +
               trajs.map(function (f) { return f.name; }).join(", ") });
      return;
    }
    var res = null;
    if (trajs.length) {
      res = await send("trajectory", trajs[0]);
      if (!res.ok) { state.hasTrajectory = false; report(res); return; }
      // An INCAR chosen earlier in its own input goes with the new trajectory too.
      var incarInput = document.getElementById("incar-file");
      var chosen = files.some(function (f) { return kindOf(f) === "incar"; });
      if (!chosen && incarInput && incarInput.files[0]) res = await send("incar", incarInput.files[0]);
    }
    for (var i = 0; i < files.length && (!res || res.ok); i++) {
      var kind = ev.target.id === "incar-file" ? "incar" : kindOf(files[i]);
      if (kind !== "trajectory") res = await send(kind, files[i]);
    }
    report(res);
  });
})();
