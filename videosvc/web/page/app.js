// The page at /: upload (tus), browse, play, resize with live progress, delete.
// Plain JavaScript, no build step. It speaks only the public API.
"use strict";

const CONFIG = JSON.parse(document.getElementById("config").textContent);
const PAGE_SIZE = 20;
const CHUNK_BYTES = 8 * 1024 * 1024;
const KEY_STORAGE = "videosvc.apiKey"; // sessionStorage: this tab only
const PRESET_HEIGHTS = [2160, 1440, 1080, 720, 540, 480, 360, 240, 144];

const $ = (id) => document.getElementById(id);

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || "",
  videos: new Map(), // id -> the GET shape, for the videos listed
  next: null, // the cursor of the next page
  selected: null, // the id shown in the detail panel
  stream: null, // the EventSource of the selected video
  hls: null, // the hls.js player of the selected video, when it plays adaptively
  hlsFailed: new Set(), // videos whose adaptive playback failed in this tab: the MP4 plays
  storyboard: null, // { url, tiles: [{ start, end, src, x, y, w, h }] } of the selected video
};

// -- talking to the API ----------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  return state.key ? { Authorization: `Bearer ${state.key}` } : {};
}

async function api(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, "The server cannot be reached. Check the connection and try again.");
  }
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    askForKey(state.key ? "That key was refused: type the right one." : "");
  }
  if (!response.ok) {
    throw new ApiError(response.status, data.error || `The server answered ${response.status}.`);
  }
  return data;
}

// -- messages ----------------------------------------------------------------------

function showMessage(text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

function report(error) {
  if (error instanceof ApiError && error.status === 401) return; // the key panel says it
  showMessage(error.message || String(error));
}

// -- the API key -------------------------------------------------------------------

function askForKey(why) {
  $("key-panel").hidden = false;
  $("app").hidden = true;
  if (why) showMessage(why);
  $("key-input").focus();
}

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  state.key = $("key-input").value.trim();
  sessionStorage.setItem(KEY_STORAGE, state.key);
  $("key-input").value = "";
  hideMessage();
  $("key-panel").hidden = true;
  $("app").hidden = false;
  $("key-change").hidden = false;
  await loadVideos(true);
});

$("key-change").addEventListener("click", () => askForKey(""));

// -- formatting ----------------------------------------------------------------------

function formatBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i += 1;
  }
  return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
}

function formatDuration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/** What a person wants to know of a video's state, in a few words. */
function statusOf(video) {
  const job = video.job;
  if (video.processing) {
    if (job && job.state === "queued") return { text: "Waiting for a worker", kind: "busy" };
    const pct = video.progress === null ? "" : ` ${video.progress}%`;
    return { text: `Resizing to ${job.width}×${job.height}…${pct}`, kind: "busy", progress: video.progress };
  }
  if (job && job.state === "failed") return { text: `Resize failed: ${job.error}`, kind: "failed" };
  if (job && job.state === "cancelled") return { text: "Resize cancelled", kind: "" };
  if (job && job.state === "succeeded") return { text: `Resized to ${job.width}×${job.height}`, kind: "ok" };
  return { text: "Ready", kind: "ok" };
}

/** When a video was uploaded, as people say it: "5 min ago", "yesterday", "3 Dec 2026". */
function formatDate(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  const seconds = (Date.now() - when.getTime()) / 1000;
  if (seconds < 60) return "just now";
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  if (seconds < 2 * 86400) return "yesterday";
  return when.toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" });
}

function facts(video) {
  const parts = [`${video.width}×${video.height}`, formatDuration(video.duration), formatBytes(video.size)];
  if (video.originalWidth && (video.originalWidth !== video.width || video.originalHeight !== video.height)) {
    parts.push(`original ${video.originalWidth}×${video.originalHeight}`);
  }
  return parts.filter(Boolean).join(" · ");
}

// -- the catalogue -------------------------------------------------------------------

async function loadVideos(fromStart) {
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (!fromStart && state.next) params.set("cursor", state.next);
  let page;
  try {
    page = await api("GET", `/file/?${params}`);
  } catch (e) {
    report(e);
    return;
  }
  if (fromStart) {
    state.videos.clear();
    $("videos").replaceChildren();
  }
  for (const video of page.items) {
    state.videos.set(video.id, video);
    $("videos").append(videoItem(video));
  }
  state.next = page.next;
  $("more").hidden = !page.next;
  $("empty").hidden = state.videos.size > 0;
}

function videoItem(video) {
  const item = document.createElement("li");
  item.dataset.id = video.id;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "video";
  button.addEventListener("click", () => select(video.id));
  item.append(button);
  fillVideoItem(item, video);
  return item;
}

function fillVideoItem(item, video) {
  const status = statusOf(video);
  const button = item.querySelector("button");
  button.replaceChildren();
  // The poster once it is made; until then a plain box of the same size.
  const poster = document.createElement(video.posterUrl ? "img" : "span");
  poster.className = "poster";
  if (video.posterUrl) {
    poster.src = video.posterUrl;
    poster.alt = "";
    poster.loading = "lazy";
  }
  const when = document.createElement("time");
  when.className = "when";
  when.dateTime = video.createdAt;
  when.textContent = formatDate(video.createdAt);
  when.title = new Date(video.createdAt).toLocaleString();
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = video.filename;
  const details = document.createElement("span");
  details.className = "details";
  details.textContent = facts(video);
  details.append(" · ", when);
  const badge = document.createElement("span");
  badge.className = `status ${status.kind}`;
  badge.textContent = status.text;
  button.append(poster, name, details, badge);
  button.setAttribute("aria-current", String(video.id === state.selected));
}

function updateListed(video) {
  state.videos.set(video.id, video);
  const item = $("videos").querySelector(`li[data-id="${video.id}"]`);
  if (item) fillVideoItem(item, video);
}

function removeListed(id) {
  state.videos.delete(id);
  const item = $("videos").querySelector(`li[data-id="${id}"]`);
  if (item) item.remove();
  $("empty").hidden = state.videos.size > 0;
}

$("more").addEventListener("click", () => loadVideos(false));

// -- one video: player, live state, resize, delete ----------------------------------

async function select(id) {
  let video;
  try {
    video = await api("GET", `/file/${id}/`);
  } catch (e) {
    report(e);
    if (e.status === 404) removeListed(id);
    return;
  }
  const changed = state.selected !== id;
  state.selected = id;
  for (const button of $("videos").querySelectorAll("button.video")) {
    button.setAttribute("aria-current", String(button.parentElement.dataset.id === id));
  }
  $("detail").hidden = false;
  showVideo(video, changed);
  follow(video);
  if (changed) $("detail-title").focus();
}

function showVideo(video, newVideo) {
  $("detail-title").textContent = video.filename;
  $("detail-title").tabIndex = -1;
  $("facts").textContent = facts(video);
  const status = statusOf(video);
  $("job-text").textContent = status.text;
  $("job").className = `job ${status.kind}`;
  const progress = $("job-progress");
  progress.hidden = !video.processing;
  if (video.progress === null) progress.removeAttribute("value");
  else progress.value = video.progress;
  $("resize").disabled = video.processing;
  $("download").href = downloadUrl(video.contentUrl);
  $("download").setAttribute("download", video.filename);
  play(video, newVideo);
  showStoryboard(video);
  if (newVideo) fillPresets(video);
  updateListed(video);
}

/**
 * What the player loads: the contentUrl (signed when keys are set: a <video> sends no header),
 * named for this rendition. The contentUrl stays the same across resizes, and the browser's
 * media cache, kept by URL, would go on playing the old rendition. A fragment makes a new URL
 * for each rendition (updatedAt changes with each) and leaves the request as it was: the server
 * refuses query parameters it does not know. Downloads need no such thing: the server answers
 * "Cache-Control: no-cache" and its ETag changes with the file, so the HTTP cache asks again.
 */
function renditionUrl(video) {
  return `${video.contentUrl}#v=${encodeURIComponent(video.updatedAt)}`;
}

// -- playing: adaptive (HLS) once a rendition is ready, else the MP4 ----------------------

/**
 * The player plays the HLS package (GET's playbackUrl) through hls.js, or natively where the
 * browser has HLS (Safari); the MP4 until the package has a rendition, and if HLS fails. The
 * package is built once, from the upload: a resize changes the MP4, not what HLS plays.
 */
function play(video, newVideo) {
  const player = $("player");
  const adaptive = Boolean(video.playbackUrl) && !state.hlsFailed.has(video.id) && hlsSupport(player) !== "";
  const version = adaptive ? `${video.id}:hls` : `${video.id}:${video.updatedAt}`;
  if (!newVideo && player.dataset.version === version) {
    if (state.hls) fillQuality(video);
    return;
  }
  player.dataset.version = version;
  if (video.posterUrl) player.poster = video.posterUrl;
  else player.removeAttribute("poster");
  stopHls();
  if (adaptive && hlsSupport(player) === "hls.js") {
    startHls(player, video);
  } else if (adaptive) {
    player.src = video.playbackUrl;
  } else {
    player.src = renditionUrl(video);
    player.load();
  }
  $("streaming").textContent = adaptive ? "Adaptive (HLS)" : "";
}

function hlsSupport(player) {
  if (window.Hls && window.Hls.isSupported()) return "hls.js";
  return player.canPlayType("application/vnd.apple.mpegurl") ? "native" : "";
}

function startHls(player, video) {
  // No worker: the page's CSP allows scripts from this server only, not blob: workers.
  const hls = new window.Hls({ enableWorker: false });
  state.hls = hls;
  hls.on(window.Hls.Events.MANIFEST_PARSED, () => fillQuality(video));
  hls.on(window.Hls.Events.LEVEL_SWITCHED, (_, data) => {
    player.dataset.level = String(data.level);
  });
  hls.on(window.Hls.Events.ERROR, (_, data) => {
    if (!data.fatal || state.hls !== hls) return;
    // The MP4 still plays: fall back to it, and say why.
    state.hlsFailed.add(video.id);
    showMessage(`Adaptive playback failed (${data.details}); playing the MP4.`);
    play(video, true);
  });
  hls.loadSource(video.playbackUrl);
  hls.attachMedia(player);
}

function stopHls() {
  if (state.hls) state.hls.destroy();
  state.hls = null;
  $("quality-row").hidden = true;
  delete $("player").dataset.level;
}

/** Auto, and one entry per rendition hls.js knows of (largest first). */
function fillQuality(video) {
  const hls = state.hls;
  const select = $("quality");
  const levels = hls.levels.map((level, index) => ({ index, height: level.height, width: level.width }));
  levels.sort((a, b) => b.height - a.height);
  const wanted = ["-1", ...levels.map((l) => String(l.index))].join(",");
  if (select.dataset.levels !== wanted) {
    select.dataset.levels = wanted;
    const options = levels.map((l) => new Option(`${l.width}×${l.height}`, String(l.index)));
    select.replaceChildren(new Option("Auto", "-1"), ...options);
    select.value = String(hls.manualLevel ?? -1);
  }
  const ready = video.renditions.filter((r) => r.state === "ready").length;
  $("streaming").textContent = `Adaptive (HLS): ${ready} of ${video.renditions.length} renditions ready`;
  $("quality-row").hidden = false;
}

$("quality").addEventListener("change", () => {
  // -1: automatic; else this rendition from now on (the next segment is fetched from it).
  if (state.hls) state.hls.currentLevel = Number($("quality").value);
});

// -- the storyboard: previews over a seek bar of the page's own (hover, touch, keys) --------

/** The storyboard's cues: which tile of which sprite shows each stretch of time. */
function parseStoryboard(text, base) {
  const tiles = [];
  const cue = /(\d+):(\d+):(\d+(?:\.\d+)?) --> (\d+):(\d+):(\d+(?:\.\d+)?)\s*\n(\S+?)#xywh=(\d+),(\d+),(\d+),(\d+)/g;
  const seconds = (h, m, s) => Number(h) * 3600 + Number(m) * 60 + Number(s);
  for (const m of text.matchAll(cue)) {
    tiles.push({
      start: seconds(m[1], m[2], m[3]),
      end: seconds(m[4], m[5], m[6]),
      src: new URL(m[7], base).href,
      x: Number(m[8]), y: Number(m[9]), w: Number(m[10]), h: Number(m[11]),
    });
  }
  return tiles;
}

async function showStoryboard(video) {
  const scrub = $("scrub");
  if (!video.storyboardUrl || !video.duration) {
    scrub.hidden = true;
    state.storyboard = null;
    return;
  }
  scrub.hidden = false;
  const url = new URL(video.storyboardUrl, location.href).href;
  if (state.storyboard && state.storyboard.id === video.id) return;
  state.storyboard = { id: video.id, url, tiles: [] };
  try {
    // No header: with keys, storyboardUrl is signed, and the sprite's URI in it inherits that.
    const response = await fetch(url);
    if (!response.ok) return;
    const tiles = parseStoryboard(await response.text(), url);
    if (state.storyboard && state.storyboard.url === url) state.storyboard.tiles = tiles;
  } catch (e) {
    // No previews: the seek bar still seeks.
  }
}

/** The time under a pointer (or a finger) at clientX on the seek bar. */
function timeAt(clientX) {
  const bar = $("scrub").getBoundingClientRect();
  const fraction = Math.min(1, Math.max(0, (clientX - bar.left) / bar.width));
  const video = state.videos.get(state.selected);
  return { fraction, time: fraction * (video ? video.duration || 0 : 0) };
}

function preview(clientX) {
  const { fraction, time } = timeAt(clientX);
  const box = $("preview");
  const board = state.storyboard;
  const tile = board && board.tiles.find((t) => time >= t.start && time < t.end) || (board && board.tiles.at(-1));
  $("preview-time").textContent = formatDuration(time);
  const image = $("preview-image");
  if (tile) {
    image.hidden = false;
    image.style.width = `${tile.w}px`;
    image.style.height = `${tile.h}px`;
    image.style.backgroundImage = `url("${tile.src}")`;
    image.style.backgroundPosition = `-${tile.x}px -${tile.y}px`;
  } else {
    image.hidden = true;
  }
  box.hidden = false;
  box.style.left = `${fraction * 100}%`;
}

function seekTo(clientX) {
  const { time } = timeAt(clientX);
  $("player").currentTime = time;
}

$("scrub").addEventListener("pointermove", (event) => preview(event.clientX));
$("scrub").addEventListener("pointerdown", (event) => preview(event.clientX));
$("scrub").addEventListener("pointerleave", () => { $("preview").hidden = true; });
$("scrub").addEventListener("pointerup", (event) => {
  seekTo(event.clientX);
  if (event.pointerType !== "mouse") $("preview").hidden = true;
});
$("scrub").addEventListener("keydown", (event) => {
  const player = $("player");
  const step = { ArrowLeft: -5, ArrowRight: 5 }[event.key];
  if (step) {
    player.currentTime = Math.max(0, player.currentTime + step);
    event.preventDefault();
  }
});
$("player").addEventListener("timeupdate", () => {
  const player = $("player");
  const video = state.videos.get(state.selected);
  const duration = (video && video.duration) || player.duration || 0;
  const done = duration ? Math.min(100, (player.currentTime / duration) * 100) : 0;
  $("scrub-done").style.width = `${done}%`;
  $("scrub").setAttribute("aria-valuenow", String(Math.round(player.currentTime)));
});

function downloadUrl(contentUrl) {
  return contentUrl + (contentUrl.includes("?") ? "&" : "?") + "download=true";
}

/** Live changes of the selected video, by server-sent events (progress, the end of a job). */
function follow(video) {
  if (state.stream) state.stream.close();
  const stream = new EventSource(video.eventsUrl);
  state.stream = stream;
  stream.addEventListener("video", (event) => {
    const latest = JSON.parse(event.data);
    if (latest.id === state.selected) showVideo(latest, false);
    else updateListed(latest);
  });
  stream.addEventListener("deleted", () => {
    stream.close();
    removeListed(video.id);
    if (state.selected === video.id) closeDetail();
  });
  stream.addEventListener("error", () => {
    // The browser reconnects by itself; a closed stream (an expired signed link) needs a fresh URL.
    if (stream.readyState === EventSource.CLOSED && state.stream === stream && state.selected === video.id) {
      setTimeout(() => state.selected === video.id && select(video.id), 2000);
    }
  });
}

function closeDetail() {
  if (state.stream) state.stream.close();
  state.stream = null;
  const id = state.selected;
  state.selected = null;
  $("detail").hidden = true;
  const player = $("player");
  stopHls();
  delete player.dataset.version;
  state.storyboard = null;
  player.removeAttribute("poster");
  player.removeAttribute("src");
  player.load();
  for (const button of $("videos").querySelectorAll("button.video")) button.setAttribute("aria-current", "false");
  const item = id && $("videos").querySelector(`li[data-id="${id}"] button`);
  if (item) item.focus();
}

$("close").addEventListener("click", closeDetail);

// -- resize ----------------------------------------------------------------------------

/** Sizes that keep the original's aspect ratio, each side even and over 20. */
function presets(video) {
  const width = video.originalWidth || video.width;
  const height = video.originalHeight || video.height;
  const sizes = [];
  for (const h of PRESET_HEIGHTS) {
    if (h > height) continue;
    const w = 2 * Math.round((h * width) / height / 2);
    if (w > 20 && h > 20 && w <= CONFIG.maxDimension && h <= CONFIG.maxDimension) sizes.push([w, h, `${h}p`]);
  }
  const even = (n) => 2 * Math.floor(n / 2);
  const original = [even(width), even(height)];
  if (!sizes.some(([w, h]) => w === original[0] && h === original[1])) {
    sizes.unshift([original[0], original[1], "original"]);
  } else {
    sizes[0][2] += ", original";
  }
  return sizes;
}

function fillPresets(video) {
  const select = $("preset");
  select.replaceChildren();
  for (const [w, h, label] of presets(video)) {
    const option = new Option(`${w}×${h} (${label})`, `${w}x${h}`);
    select.append(option);
  }
  select.append(new Option("Exact size…", "exact"));
  const current = `${video.width}x${video.height}`;
  const next = [...select.options].find((o) => o.value !== current && o.value !== "exact");
  select.value = next ? next.value : "exact";
  $("width").value = video.width;
  $("height").value = video.height;
  $("exact").hidden = select.value !== "exact";
  $("resize-error").textContent = "";
}

$("preset").addEventListener("change", () => {
  // No focus jump: arrowing through the options must not leave the list.
  $("exact").hidden = $("preset").value !== "exact";
});

/** The rules of the API (even, over 20, at most max_dimension each and max_output_pixels together). */
function checkSize(width, height) {
  for (const [name, value] of [["Width", width], ["Height", height]]) {
    if (!Number.isInteger(value)) return `${name} must be a whole number.`;
    if (value <= 20) return `${name} must be greater than 20.`;
    if (value % 2) return `${name} must be even (H.264 needs it).`;
    if (value > CONFIG.maxDimension) return `${name} must be at most ${CONFIG.maxDimension}.`;
  }
  if (width * height > CONFIG.maxOutputPixels) {
    return `At most ${CONFIG.maxOutputPixels.toLocaleString("en")} pixels (width × height).`;
  }
  return "";
}

$("resize-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = state.selected;
  let width;
  let height;
  if ($("preset").value === "exact") {
    width = Number($("width").value);
    height = Number($("height").value);
  } else {
    [width, height] = $("preset").value.split("x").map(Number);
  }
  const problem = checkSize(width, height);
  $("resize-error").textContent = problem;
  if (problem) return;
  $("resize").disabled = true;
  try {
    await api("PATCH", `/file/${id}/`, { width, height });
    $("job-text").textContent = `Queued: ${width}×${height}`;
  } catch (e) {
    $("resize-error").textContent = e.message;
    $("resize").disabled = false;
  }
});

// -- delete -----------------------------------------------------------------------------

$("delete").addEventListener("click", () => {
  const video = state.videos.get(state.selected);
  $("confirm-name").textContent = video ? video.filename : "This video";
  $("confirm-delete").showModal();
});

$("confirm-delete").addEventListener("close", async () => {
  if ($("confirm-delete").returnValue !== "delete") return;
  const id = state.selected;
  try {
    await api("DELETE", `/file/${id}/`);
  } catch (e) {
    if (e.status !== 404) {
      report(e);
      return;
    }
  }
  removeListed(id);
  closeDetail();
  $("pick").focus();
});

// -- uploads (tus: resumable) ---------------------------------------------------------------

function uploadRow(file) {
  const item = document.createElement("li");
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = file.name;
  const progress = document.createElement("progress");
  progress.max = 100;
  progress.value = 0;
  progress.setAttribute("aria-label", `Upload of ${file.name}`);
  const text = document.createElement("span");
  text.className = "details";
  const pause = document.createElement("button");
  pause.type = "button";
  pause.className = "quiet";
  pause.textContent = "Pause";
  const cancel = document.createElement("button");
  cancel.type = "button";
  cancel.className = "quiet";
  cancel.textContent = "Cancel";
  item.append(name, progress, text, pause, cancel);
  $("uploads").prepend(item);
  return { item, progress, text, pause, cancel };
}

/** The API's own message from a failed tus request, else tus-js-client's. */
function uploadError(error) {
  const response = error.originalResponse;
  if (response) {
    try {
      const body = JSON.parse(response.getBody());
      if (body.error) return body.error;
    } catch (e) {
      // not JSON: fall through
    }
    return `The server answered ${response.getStatus()}.`;
  }
  return "The connection was lost and the upload could not resume; pick the file again to resume it.";
}

/** What a retry can fix: no answer, 5xx, 409/423 (a stale offset or a busy upload), 429. */
function retryable(error) {
  const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
  return status === 0 || status >= 500 || [409, 423, 429].includes(status);
}

function percent(part, total) {
  return total ? Math.floor((part / total) * 100) : 0;
}

/** Why this file is refused before a byte is sent (the server would refuse it at creation), or "". */
function refusal(file) {
  if (file.size === 0) return `${file.name} is empty: pick a video file.`;
  if (file.size > CONFIG.maxUploadBytes) {
    return `This file is ${formatBytes(file.size)}; the server takes at most ${formatBytes(CONFIG.maxUploadBytes)}.`;
  }
  return "";
}

function startUpload(file) {
  const row = uploadRow(file);
  const refused = refusal(file);
  if (refused) {
    row.item.classList.add("failed");
    row.text.textContent = refused;
    row.progress.hidden = true; // nothing was sent
    row.pause.remove();
    row.cancel.textContent = "Dismiss";
    row.cancel.addEventListener("click", () => row.item.remove());
    return;
  }
  row.text.textContent = `0% of ${formatBytes(file.size)}`;
  // Bytes the server confirmed; the bar runs ahead of them while a chunk is on its way.
  let confirmed = 0;
  const upload = new tus.Upload(file, {
    endpoint: "/uploads/",
    chunkSize: CHUNK_BYTES,
    retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
    metadata: { filename: file.name, filetype: file.type || "video/mp4" },
    headers: authHeaders(),
    removeFingerprintOnSuccess: true,
    onShouldRetry(error) {
      const retry = retryable(error);
      // tus-js-client now waits (retryDelays), then asks the server where to resume: the row says
      // so until bytes flow again (onProgress), or until the retries run out (onError).
      if (retry) row.text.textContent = "Reconnecting…";
      return retry;
    },
    onProgress(sent, total) {
      const pct = percent(sent, total);
      row.progress.value = pct;
      row.text.textContent = sent === total ? "Checking the video…" : `${pct}% of ${formatBytes(total)}`;
    },
    onChunkComplete(chunkSize, accepted) {
      confirmed = accepted;
    },
    onSuccess() {
      const id = upload.url.split("/").pop();
      row.item.classList.add("ok");
      row.progress.value = 100;
      row.text.textContent = "Stored";
      row.pause.remove();
      row.cancel.remove();
      loadVideos(true).then(() => select(id));
    },
    onError(error) {
      // Back to what the server confirmed: a chunk sent whole may still be refused or lost.
      row.progress.value = percent(confirmed, file.size);
      row.item.classList.add("failed");
      row.text.textContent = uploadError(error);
      row.pause.remove();
      row.cancel.textContent = "Dismiss";
    },
  });
  let running = true;
  row.pause.addEventListener("click", () => {
    if (running) {
      upload.abort();
      row.pause.textContent = "Resume";
      row.text.textContent = `Paused at ${row.progress.value}%`;
    } else {
      upload.start();
      row.pause.textContent = "Pause";
    }
    running = !running;
  });
  row.cancel.addEventListener("click", () => {
    if (!row.item.classList.contains("failed")) upload.abort(true).catch(() => {});
    row.item.remove();
  });
  // A file picked again after a reload or a closed tab resumes where it stopped.
  upload
    .findPreviousUploads()
    .then((previous) => {
      if (previous.length) {
        upload.resumeFromPreviousUpload(previous[0]);
        row.text.textContent = "Resuming…";
      }
    })
    .finally(() => upload.start());
}

function startUploads(files) {
  hideMessage();
  for (const file of files) startUpload(file);
}

$("pick").addEventListener("click", () => $("file-input").click());
$("file-input").addEventListener("change", () => {
  startUploads([...$("file-input").files]);
  $("file-input").value = "";
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  startUploads([...event.dataTransfer.files]);
});

$("message-close").addEventListener("click", hideMessage);

// -- start ---------------------------------------------------------------------------------

if (CONFIG.apiKeys && !state.key) {
  askForKey("");
} else {
  $("key-change").hidden = !CONFIG.apiKeys;
  loadVideos(true);
}
