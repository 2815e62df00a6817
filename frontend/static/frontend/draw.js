// Sketchsearch drawing page: a canvas with undo/redo, live search against /api/search/, results and statistics.
// Plain modern JavaScript, no build step and nothing fetched from elsewhere.
"use strict";

(() => {
  const LIVE_DEBOUNCE_MS = 250;
  const BACKGROUND = "#ffffff";
  const INK = "#000000";

  const $ = (id) => document.getElementById(id);
  const main = document.querySelector("main");
  const api = {
    search: main.dataset.apiSearch, indexes: main.dataset.apiIndexes, collections: main.dataset.apiCollections,
  };
  const STRIP_SIZE = 12; // thumbnails in the narrow-screen strip under the canvas

  const canvas = $("sketch");
  const ctx = canvas.getContext("2d");
  // Completed strokes are rendered once into this layer; a frame draws it plus the stroke in progress.
  const committed = document.createElement("canvas");
  committed.width = canvas.width;
  committed.height = canvas.height;
  const committedCtx = committed.getContext("2d");

  const ui = {
    pen: $("tool-pen"), eraser: $("tool-eraser"), width: $("stroke-width"), widthValue: $("stroke-width-value"),
    undo: $("undo"), redo: $("redo"), clear: $("clear"), search: $("search-button"), live: $("live-search"),
    upload: $("upload"), download: $("download"), k: $("k-select"), index: $("index-select"),
    probes: $("probes-select"), domain: $("domain-select"), scan: $("scan"), status: $("status"), error: $("error"), results: $("results"),
    chips: $("label-chips"), stats: $("stats"), predictions: $("predictions"), wrap: $("canvas-wrap"),
    dropHint: $("drop-hint"), example: $("query-example"), exampleImg: $("query-example-img"),
    exampleText: $("query-example-text"), exampleBack: $("query-example-back"),
    filterChips: $("filter-chips"), predictionChips: $("prediction-chips"),
    strip: $("results-strip"), stripStatus: $("strip-status"), stripList: $("strip-list"), stripMore: $("strip-more"),
  };

  // --- drawing state: a list of actions (strokes and placed images) is the single source of truth ---
  const state = {
    actions: [],   // {type: "stroke", mode: "pen"|"eraser", width, points: [[x, y], ...]} | {type: "image", bitmap}
    redo: [],
    current: null, // the stroke being drawn
    pointerId: null,
    tool: "pen",
    example: null, // {image_id, label, url}: query by example instead of the drawing
    label: "",     // active label filter ("" = all)
    chipLabels: [], // the labels of the last unfiltered results
  };

  function traceStroke(target, stroke) {
    const pts = stroke.points;
    target.save();
    target.lineCap = "round";
    target.lineJoin = "round";
    target.lineWidth = stroke.width;
    target.strokeStyle = stroke.mode === "eraser" ? BACKGROUND : INK;
    target.fillStyle = target.strokeStyle;
    if (pts.length === 1) {
      target.beginPath();
      target.arc(pts[0][0], pts[0][1], stroke.width / 2, 0, Math.PI * 2);
      target.fill();
    } else {
      // Quadratic curves through the midpoints of consecutive samples: smooth, and it passes near every sample.
      target.beginPath();
      target.moveTo(pts[0][0], pts[0][1]);
      for (let i = 1; i < pts.length - 1; i += 1) {
        const midX = (pts[i][0] + pts[i + 1][0]) / 2;
        const midY = (pts[i][1] + pts[i + 1][1]) / 2;
        target.quadraticCurveTo(pts[i][0], pts[i][1], midX, midY);
      }
      const last = pts[pts.length - 1];
      target.lineTo(last[0], last[1]);
      target.stroke();
    }
    target.restore();
  }

  function drawImageFitted(target, bitmap) {
    const scale = Math.min(target.canvas.width / bitmap.width, target.canvas.height / bitmap.height);
    const w = bitmap.width * scale;
    const h = bitmap.height * scale;
    target.drawImage(bitmap, (target.canvas.width - w) / 2, (target.canvas.height - h) / 2, w, h);
  }

  function renderCommitted() {
    committedCtx.fillStyle = BACKGROUND;
    committedCtx.fillRect(0, 0, committed.width, committed.height);
    for (const action of state.actions) {
      if (action.type === "image") drawImageFitted(committedCtx, action.bitmap);
      else traceStroke(committedCtx, action);
    }
    renderFrame();
  }

  function renderFrame() {
    ctx.drawImage(committed, 0, 0);
    if (state.current) traceStroke(ctx, state.current);
  }

  let framePending = false;
  function requestFrame() {
    if (framePending) return;
    framePending = true;
    requestAnimationFrame(() => { framePending = false; renderFrame(); });
  }

  function canvasPoint(event) {
    const rect = canvas.getBoundingClientRect();
    return [
      ((event.clientX - rect.left) * canvas.width) / rect.width,
      ((event.clientY - rect.top) * canvas.height) / rect.height,
    ];
  }

  function strokeWidth() {
    // The slider is in CSS pixels of the displayed canvas; scale to the canvas's own pixels.
    const rect = canvas.getBoundingClientRect();
    return (Number(ui.width.value) * canvas.width) / (rect.width || canvas.width);
  }

  canvas.addEventListener("pointerdown", (event) => {
    if (state.current || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    canvas.setPointerCapture(event.pointerId);
    state.pointerId = event.pointerId;
    state.current = { type: "stroke", mode: state.tool, width: strokeWidth(), points: [canvasPoint(event)] };
    requestFrame();
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!state.current || event.pointerId !== state.pointerId) return;
    const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const sample of samples.length ? samples : [event]) state.current.points.push(canvasPoint(sample));
    requestFrame();
  });

  function endStroke(event) {
    if (!state.current || event.pointerId !== state.pointerId) return;
    const stroke = state.current;
    state.current = null;
    state.pointerId = null;
    pushAction(stroke);
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);

  function pushAction(action) {
    state.actions.push(action);
    state.redo = [];
    drawingChanged();
  }

  function drawingChanged() {
    state.example = null; // drawing again means searching with the drawing again
    renderCommitted();
    updateHistoryButtons();
    if (state.actions.length === 0) {
      resetResults("Draw something to search.");
    } else if (ui.live.checked) {
      scheduleSearch();
    }
  }

  function updateHistoryButtons() {
    ui.undo.disabled = state.actions.length === 0;
    ui.redo.disabled = state.redo.length === 0;
  }

  function undo() {
    if (!state.actions.length) return;
    state.redo.push(state.actions.pop());
    drawingChanged();
    announce("Undone.");
  }

  function redo() {
    if (!state.redo.length) return;
    state.actions.push(state.redo.pop());
    drawingChanged();
    announce("Redone.");
  }

  function clearCanvas() {
    if (!state.actions.length && !state.example) return;
    // Clear starts over: the drawing, its history and the label filter all go.
    state.actions = [];
    state.redo = [];
    state.label = "";
    state.chipLabels = [];
    drawingChanged();
  }

  function setTool(tool) {
    state.tool = tool;
    ui.pen.setAttribute("aria-pressed", String(tool === "pen"));
    ui.eraser.setAttribute("aria-pressed", String(tool === "eraser"));
  }

  ui.pen.addEventListener("click", () => setTool("pen"));
  ui.eraser.addEventListener("click", () => setTool("eraser"));
  ui.width.addEventListener("input", () => { ui.widthValue.value = ui.width.value; });
  ui.undo.addEventListener("click", undo);
  ui.redo.addEventListener("click", redo);
  ui.clear.addEventListener("click", clearCanvas);
  ui.search.addEventListener("click", () => runSearch());
  for (const control of [ui.k, ui.probes, ui.domain, ui.scan]) {
    control.addEventListener("change", () => rerun());
  }
  ui.index.addEventListener("change", () => {
    updateDomainChoices();
    rerun();
  });
  ui.exampleBack.addEventListener("click", () => {
    state.example = null;
    state.label = "";
    rerun();
  });

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type === "text") return;
    const mod = event.ctrlKey || event.metaKey;
    const key = event.key.toLowerCase();
    if (mod && key === "z" && !event.shiftKey) { event.preventDefault(); undo(); }
    else if (mod && ((key === "z" && event.shiftKey) || key === "y")) { event.preventDefault(); redo(); }
    else if (!mod && !event.altKey && target === canvas && key === "e") setTool("eraser");
    else if (!mod && !event.altKey && target === canvas && key === "p") setTool("pen");
  });

  // --- images as the query: upload or drop; placed on the canvas so the user can keep drawing on them ---
  async function placeImageFile(file) {
    if (!file) return;
    if (!file.type.startsWith("image/")) {
      showError(`"${file.name}" is not an image file.`);
      return;
    }
    try {
      const bitmap = await createImageBitmap(file);
      pushAction({ type: "image", bitmap });
      announce(`Searching with ${file.name}.`);
      if (!ui.live.checked) runSearch();
    } catch (error) {
      showError(`Cannot read "${file.name}" as an image.`);
    }
  }

  ui.upload.addEventListener("change", () => {
    placeImageFile(ui.upload.files[0]);
    ui.upload.value = "";
  });
  ui.wrap.addEventListener("dragover", (event) => {
    event.preventDefault();
    ui.wrap.classList.add("dragging");
    ui.dropHint.hidden = false;
  });
  ui.wrap.addEventListener("dragleave", () => {
    ui.wrap.classList.remove("dragging");
    ui.dropHint.hidden = true;
  });
  ui.wrap.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.wrap.classList.remove("dragging");
    ui.dropHint.hidden = true;
    placeImageFile(event.dataTransfer.files[0]);
  });

  ui.download.addEventListener("click", () => {
    const link = document.createElement("a");
    link.download = "sketch.png";
    link.href = canvas.toDataURL("image/png");
    link.click();
  });

  // --- search: debounced, the in-flight request aborted, and a sequence number so old answers never win ---
  let debounceTimer = null;
  let inFlight = null;
  let sequence = 0;
  let searchesDone = 0;

  function scheduleSearch() {
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(() => runSearch(), LIVE_DEBOUNCE_MS);
  }

  function rerun() {
    if (state.example || state.actions.length) runSearch();
    else renderExample();
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function searchBody() {
    const body = {
      k: Number(ui.k.value), scan: ui.scan.checked, domain: ui.domain.value,
    };
    if (ui.index.value) body.index = Number(ui.index.value);
    if (ui.probes.value !== "") body.probes = Number(ui.probes.value);  // else the index's tuned probes
    if (state.label) body.label = state.label;
    if (state.example) body.image_id = state.example.image_id;
    else body.image = canvas.toDataURL("image/png");
    return body;
  }

  async function runSearch() {
    clearTimeout(debounceTimer);
    renderExample();
    if (!state.example && state.actions.length === 0) {
      resetResults("Draw something to search.");
      return;
    }
    if (inFlight) inFlight.abort();
    const controller = new AbortController();
    inFlight = controller;
    const seq = ++sequence;
    ui.results.dataset.state = "loading";
    ui.strip.dataset.state = "loading";
    announce("Searching…");
    let response;
    let body;
    try {
      response = await fetch(api.search, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify(searchBody()),
        signal: controller.signal,
        credentials: "same-origin",
      });
      body = await response.json().catch(() => null);
    } catch (error) {
      if (error.name === "AbortError") return;
      if (seq !== sequence) return;
      failSearch("Cannot reach the server: check your connection and try again.");
      return;
    }
    if (seq !== sequence) return; // a newer search started while this one was on the wire
    inFlight = null;
    if (!response.ok) {
      const message = body && body.error ? body.error : `HTTP ${response.status}`;
      // A 4xx is about this query (a blank drawing, an image too large): say it as the server does.
      const clientError = response.status >= 400 && response.status < 500;
      failSearch(clientError ? message.charAt(0).toUpperCase() + message.slice(1) : `The server could not search: ${message}`);
      return;
    }
    searchesDone += 1;
    document.body.dataset.searchCount = String(searchesDone);
    hideError();
    renderResults(body);
  }

  function failSearch(message) {
    ui.results.dataset.state = "error";
    ui.strip.dataset.state = "error";
    announce("Search failed.");
    showError(message);
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
    ui.stripStatus.textContent = message; // on a phone the error box is off screen: the strip says it too
    ui.stripStatus.classList.add("error-text");
  }

  function hideError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
    ui.stripStatus.classList.remove("error-text");
  }

  function announce(message) {
    ui.status.textContent = message;
    ui.stripStatus.textContent = message;
  }

  function resetResults(message) {
    if (inFlight) inFlight.abort();
    inFlight = null;
    sequence += 1; // any answer still on the wire is now stale
    ui.results.replaceChildren();
    ui.results.dataset.state = "idle";
    ui.stripList.replaceChildren();
    ui.strip.dataset.state = "idle";
    ui.stripMore.hidden = true;
    ui.filterChips.replaceChildren();
    ui.chips.hidden = true;
    renderPredictions([]);
    renderStats(null);
    hideError();
    announce(message);
  }

  function renderExample() {
    const example = state.example;
    ui.example.hidden = !example;
    if (!example) return;
    ui.exampleImg.src = example.url;
    ui.exampleText.textContent = `Searching with a ${example.label || "stored"} image (#${example.image_id}).`;
  }

  function formatScore(score) {
    return score.toFixed(3);
  }

  function searchWithExample(hit) {
    state.example = { image_id: hit.image_id, label: hit.label, url: hit.url };
    state.label = "";
    runSearch();
  }

  function renderStrip(hits) {
    // Presentational (the strip is aria-hidden): thumbnails that search by example on a tap, like the list's buttons.
    const items = hits.slice(0, STRIP_SIZE).map((hit) => {
      const li = document.createElement("li");
      li.setAttribute("data-testid", "strip-item");
      const img = document.createElement("img");
      img.src = hit.url;
      img.alt = "";
      const label = document.createElement("span");
      label.className = "strip-label";
      label.setAttribute("data-testid", "strip-label");
      label.textContent = hit.label || "unlabelled";
      label.title = label.textContent;
      li.append(img, label);
      li.addEventListener("click", () => searchWithExample(hit));
      return li;
    });
    ui.stripList.replaceChildren(...items);
    ui.strip.dataset.state = "done";
    ui.stripMore.hidden = hits.length === 0;
    ui.stripMore.textContent = `All ${hits.length} results and statistics`;
  }

  function renderResults(body) {
    const items = body.results.map((hit) => {
      const li = document.createElement("li");
      li.setAttribute("data-testid", "result-item");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.imageId = String(hit.image_id);
      const labelText = hit.label || "unlabelled";
      button.setAttribute(
        "aria-label",
        `${labelText}, similarity ${formatScore(hit.score)}, from ${hit.collection}. Search with this image.`,
      );
      const img = document.createElement("img");
      img.src = hit.url;
      img.alt = "";
      img.loading = "lazy";
      const label = document.createElement("span");
      label.className = "result-label";
      label.setAttribute("data-testid", "result-label");
      label.textContent = labelText;
      label.title = labelText; // shown in full on hover when the cell is too narrow for it
      const meta = document.createElement("span");
      meta.className = "result-meta";
      const score = document.createElement("span");
      score.textContent = formatScore(hit.score);
      score.title = "similarity: the cosine of the index's vectors (over the sketch head, near-ties ordered by how alike the drawings look)";
      const source = document.createElement("span");
      source.textContent = hit.collection;
      source.title = hit.collection;
      meta.append(score, source);
      button.append(img, label, meta);
      button.addEventListener("click", () => searchWithExample(hit));
      li.append(button);
      return li;
    });
    ui.results.replaceChildren(...items);
    ui.results.dataset.state = "done";
    renderStrip(body.results);
    if (!state.label) state.chipLabels = [...new Set(body.results.map((hit) => hit.label).filter(Boolean))];
    renderChips();
    renderPredictions(Array.isArray(body.predictions) ? body.predictions : []);
    renderStats(body);
    const n = body.results.length;
    const filter = state.label ? ` of class ${state.label}` : "";
    if (n) {
      announce(`${n} similar image${n === 1 ? "" : "s"}${filter}.`);
    } else if (ui.domain.value !== "both" && !body.stats.scan) {
      const kind = ui.domain.value === "photo" ? "photo" : "sketch";
      announce(`No ${kind}${filter} among the ${body.stats.candidates} candidates: try more extra probes or the exact scan.`);
    } else {
      announce(`No similar image found${filter}.`);
    }
  }

  // "Filter by class": the labels of the last unfiltered results (not a classifier's guess: see renderPredictions).
  function renderChips() {
    const labels = state.chipLabels;
    ui.chips.hidden = labels.length === 0;
    const make = (text, value) => {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = "filter-chip";
      chip.textContent = text;
      chip.setAttribute("aria-pressed", String(state.label === value));
      chip.setAttribute("data-testid", "label-chip");
      chip.addEventListener("click", () => {
        state.label = state.label === value ? "" : value;
        runSearch();
      });
      return chip;
    };
    ui.filterChips.replaceChildren(make("All classes", ""), ...labels.map((label) => make(label, label)));
  }

  // The fine-tuned classifier's top classes ("predictions": [{label, probability}, ...]) when the index's
  // extractor has one (e.g. mobilenet_v1-model4); an index on a plain backbone answers [] and nothing shows.
  // Guesses under 1% are left out (the first always shows): "sun 0%" beside "cat 100%" says nothing.
  function renderPredictions(predictions) {
    const shown = predictions.filter((p, i) => i === 0 || p.probability >= 0.01);
    ui.predictions.hidden = shown.length === 0;
    ui.predictionChips.replaceChildren(
      ...shown.map((p) => {
        const chip = document.createElement("button");
        chip.type = "button";
        chip.className = "prediction-chip";
        chip.setAttribute("data-testid", "prediction-chip");
        chip.title = "The classifier's guess for your drawing: show only this class";
        chip.textContent = `${p.label} ${(p.probability * 100).toFixed(0)}%`;
        chip.addEventListener("click", () => { state.label = p.label; runSearch(); });
        return chip;
      }),
    );
  }

  function renderStats(body) {
    if (!body) {
      ui.stats.replaceChildren(row("No query yet", ""));
      return;
    }
    const s = body.stats;
    const ie = (value) => (value === null ? "n/a (no candidate)" : `${value.toFixed(1)}×`);
    const stages = Object.entries(s.timings_ms)
      .filter(([stage]) => stage !== "total")
      .map(([stage, ms]) => `${stage} ${ms.toFixed(1)}`)
      .join(", ");
    ui.stats.replaceChildren(
      row("Index", `${body.index.name} v${body.index.version} (${body.index.family}, L=${body.index.num_tables}, K=${body.index.hashes_per_table}, ${body.index.extractor})`),
      row("Mode", s.scan ? "exact scan" : `LSH, ${s.probes} extra probe${s.probes === 1 ? "" : "s"}`),
      row("Candidates scored", `${s.candidates} of ${s.collection_size}`),
      row("Candidates (with repeats)", String(s.candidates_with_repeats)),
      row("IE", ie(s.ie)),
      row("IE (paper)", ie(s.ie_paper)),
      row("Time", `${s.timings_ms.total.toFixed(1)} ms`),
      row("Per stage (ms)", stages),
    );
  }

  function row(term, value) {
    const fragment = document.createDocumentFragment();
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    fragment.append(dt, dd);
    return fragment;
  }

  // --- "Search in": a choice the selected index cannot answer (no photo collection in it) is disabled, saying why ---
  const DOMAIN_KINDS = { sketch: "sketches", photo: "photos" };
  const DOMAIN_TEXT = {};
  for (const option of ui.domain.options) DOMAIN_TEXT[option.value] = option.textContent;

  function updateDomainChoices() {
    const selected = ui.index.options[ui.index.selectedIndex];
    const kinds = selected && selected.dataset.kinds !== undefined ? selected.dataset.kinds.split(",") : null;
    for (const option of ui.domain.options) {
      const kind = DOMAIN_KINDS[option.value];
      const missing = Boolean(kind && kinds && !kinds.includes(kind));
      option.disabled = missing;
      option.textContent = missing ? `${DOMAIN_TEXT[option.value]} (none in this index)` : DOMAIN_TEXT[option.value];
    }
    if (ui.domain.options[ui.domain.selectedIndex].disabled) ui.domain.value = "both";
  }

  async function fetchJson(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.json();
  }

  // --- index selector, filled from /api/indexes/ (and the collections' kinds from /api/collections/) ---
  async function loadIndexes() {
    try {
      const [indexes, collections] = await Promise.all([fetchJson(api.indexes), fetchJson(api.collections)]);
      const kindOf = new Map(collections.map((collection) => [collection.name, collection.kind]));
      const kindsOf = (index) => [...new Set(index.collections.map((name) => kindOf.get(name)))].join(",");
      const options = indexes
        .filter((index) => index.status === "ready" || index.is_active)
        .map((index) => {
          const option = document.createElement("option");
          option.value = String(index.id);
          option.dataset.kinds = kindsOf(index);
          option.textContent =
            `${index.name} v${index.version}${index.is_active ? " (active)" : ""}: ${index.family} ` +
            `L=${index.num_tables} K=${index.hashes_per_table}, ${index.extractor}, ${index.item_count} images`;
          return option;
        });
      const active = indexes.find((index) => index.is_default);  // what the server searches by default
      ui.index.options[0].textContent = active ? `Active index (${active.name} v${active.version})` : "Active index";
      if (active) ui.index.options[0].dataset.kinds = kindsOf(active);
      ui.index.append(...options);
      updateDomainChoices();
      if (!indexes.length) announce("No index has been built yet: searches will fail until one is.");
    } catch (error) {
      showError(`Could not load the list of indexes: ${error.message}`);
    }
  }

  renderCommitted();
  updateHistoryButtons();
  loadIndexes();

  // A small handle for tests and the browser console.
  window.sketchsearch = { runSearch, undo, redo, clear: clearCanvas, renderPredictions, state };
})();
