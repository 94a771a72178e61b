// The RAG appliance's web console: plain DOM, no framework, no build step, nothing from another origin.
//
// Safety rule of this file: every text that comes from the server or a user (sources, paths, error messages,
// space names) is inserted with textContent or text nodes, never as HTML. The one exception is a finished
// answer, rendered from Markdown: raw HTML in it stays text, and DOMPurify keeps only formatting tags
// (answerFragment).
// API calls use paths relative to the page, so the console also works behind a proxy under a prefix.

const STORE = {
  spaces: "rag-console.spaces",
  space: "rag-console.space",
  key: "rag-console.api-key",
  remember: "rag-console.remember-key",
};
const MAX_REMEMBERED_SPACES = 20;
const HEALTH_INTERVAL_MS = 30000;

const $ = (id) => document.getElementById(id);

/** An element with attributes/properties and children (strings become text nodes, never HTML). */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const api = (path) => new URL(path, document.baseURI).toString();

// ---------------------------------------------------------------------------------------------------
// Settings: space and API key (localStorage only for the remembered spaces, and the key when asked to).

const storage = {
  get(name) {
    try { return window.localStorage.getItem(name); } catch { return null; }
  },
  set(name, value) {
    try { window.localStorage.setItem(name, value); } catch { /* storage disabled: keep it in memory */ }
  },
  remove(name) {
    try { window.localStorage.removeItem(name); } catch { /* ignore */ }
  },
};

let currentSpace = "";

function rememberedSpaces() {
  try {
    const spaces = JSON.parse(storage.get(STORE.spaces) || "[]");
    return Array.isArray(spaces) ? spaces.filter((s) => typeof s === "string") : [];
  } catch {
    return [];
  }
}

function renderSpaceList() {
  $("spaces").replaceChildren(...rememberedSpaces().map((space) => h("option", { value: space })));
}

function rememberSpace(space) {
  const spaces = [space, ...rememberedSpaces().filter((s) => s !== space)].slice(0, MAX_REMEMBERED_SPACES);
  storage.set(STORE.spaces, JSON.stringify(spaces));
  storage.set(STORE.space, space);
  renderSpaceList();
}

function apiKey() {
  return $("api-key").value.trim();
}

function saveKeyChoice() {
  const remember = $("remember-key").checked;
  if (remember) {
    storage.set(STORE.remember, "1");
    storage.set(STORE.key, apiKey());
  } else {
    storage.remove(STORE.remember);
    storage.remove(STORE.key);
  }
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function applySettings() {
  const input = $("space");
  saveKeyChoice();
  if (!input.value.trim()) {
    currentSpace = "";
    refreshDocuments();
    return;
  }
  if (!input.checkValidity()) {
    input.reportValidity();
    return;
  }
  currentSpace = input.value.trim();
  rememberSpace(currentSpace);
  refreshDocuments();
}

// ---------------------------------------------------------------------------------------------------
// Errors: the API's JSON `{"error": {type, message}}`, a 401/403 explained next to the key field.

async function readError(response) {
  let text = "";
  try {
    text = await response.text();
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error === "object") {
      return { status: response.status, type: String(body.error.type || "error"), message: String(body.error.message || "") };
    }
  } catch { /* not JSON: a proxy's page, say */ }
  return { status: response.status, type: `http_${response.status}`, message: text.slice(0, 300) || response.statusText };
}

function describeError(err) {
  const status = err.status ? `${err.status} ` : "";
  return `${status}${err.type}: ${err.message}`;
}

function showAuthProblem(err) {
  const box = $("auth-message");
  if (err.status === 401) {
    box.textContent = apiKey()
      ? "The API key was refused (401 unauthorized). Check the key and press Use."
      : "This backend needs an API key (401 unauthorized). Enter it above and press Use.";
  } else if (err.status === 403) {
    box.textContent = `This API key does not cover space "${currentSpace}" (403 forbidden). ${err.message}`;
  } else {
    return;
  }
  box.hidden = false;
}

function clearAuthProblem() {
  $("auth-message").hidden = true;
  $("auth-message").textContent = "";
}

/** Note an answer's status for the key banner: a 401/403 explains itself, a success clears the banner. */
function noteAuth(err) {
  if (!err) clearAuthProblem();
  else showAuthProblem(err);
}

// ---------------------------------------------------------------------------------------------------
// Health badge: GET /health (no key needed).

async function refreshHealth() {
  const badge = $("health");
  let body;
  try {
    const response = await fetch(api("health"), { cache: "no-store" });
    body = await response.json();
  } catch {
    badge.className = "badge badge-down";
    badge.textContent = "backend unreachable";
    badge.title = "GET /health failed";
    return;
  }
  const components = (body && body.components) || {};
  const llm = components.llm || {};
  const engine = [llm.engine, llm.model].filter(Boolean).join(" · ") || "engine";
  const down = Object.entries(components).filter(([, c]) => c && c.status !== "ok");
  if (body.status === "ok") {
    badge.className = "badge badge-ok";
    badge.textContent = `${engine}: ok`;
  } else {
    badge.className = "badge badge-degraded";
    badge.textContent = `${engine}: degraded (${down.map(([name]) => name).join(", ") || "unknown"} down)`;
  }
  badge.title = down.length
    ? down.map(([name, c]) => `${name}: ${c.error_type || c.status} ${c.error || ""}`.trim()).join("\n")
    : `version ${body.version || "?"}; every component ok`;
}

// ---------------------------------------------------------------------------------------------------
// Documents: list, upload (one request per file, with progress), delete.

function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function formatDate(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function setDocumentsMessage(text, kind = "") {
  const box = $("documents-message");
  box.textContent = text;
  box.className = kind ? `message message-${kind}` : "message";
}

let documentsRequest = 0;

async function refreshDocuments() {
  const request = ++documentsRequest;
  const space = currentSpace;
  const table = $("documents-table");
  if (!space) {
    table.hidden = true;
    setDocumentsMessage("Choose a space above to see its documents.");
    return;
  }
  setDocumentsMessage(`Loading the documents of "${space}"…`);
  let response;
  try {
    response = await fetch(api(`documents?space_id=${encodeURIComponent(space)}`), { headers: authHeaders(), cache: "no-store" });
  } catch (exc) {
    if (request === documentsRequest) setDocumentsMessage(`The backend cannot be reached: ${exc.message}`, "error");
    return;
  }
  if (request !== documentsRequest) return; // the space changed meanwhile
  if (!response.ok) {
    const err = await readError(response);
    noteAuth(err);
    table.hidden = true;
    setDocumentsMessage(`Cannot list the documents: ${describeError(err)}`, "error");
    return;
  }
  noteAuth(null);
  const body = await response.json();
  if (request !== documentsRequest) return;
  const documents = Array.isArray(body.documents) ? body.documents : [];
  $("documents").replaceChildren(...documents.map((doc) => documentRow(space, doc)));
  $("documents-caption").textContent = `${documents.length} document${documents.length === 1 ? "" : "s"} in "${space}"`;
  table.hidden = documents.length === 0;
  setDocumentsMessage(documents.length ? "" : `No documents in "${space}" yet: upload some.`);
}

function documentRow(space, doc) {
  const path = String(doc.path ?? "");
  return h("tr", { "data-doc-id": String(doc.doc_id ?? "") },
    h("td", { class: "path" }, path),
    h("td", { class: "num" }, String(doc.chunks ?? doc.chunk_count ?? "—")),
    h("td", { class: "num" }, formatBytes(doc.size_bytes)),
    h("td", {}, h("time", { datetime: String(doc.indexed_at ?? "") }, formatDate(doc.indexed_at))),
    h("td", {}, h("button", {
      type: "button", class: "danger", "aria-label": `Delete ${path}`,
      onclick: () => deleteDocument(space, doc),
    }, "Delete")),
  );
}

async function deleteDocument(space, doc) {
  const path = String(doc.path ?? doc.doc_id);
  if (!window.confirm(`Delete "${path}" and its chunks from space "${space}"?`)) return;
  let response;
  try {
    response = await fetch(api(`documents/${encodeURIComponent(doc.doc_id)}`), { method: "DELETE", headers: authHeaders() });
  } catch (exc) {
    setDocumentsMessage(`The backend cannot be reached: ${exc.message}`, "error");
    return;
  }
  if (!response.ok) {
    const err = await readError(response);
    noteAuth(err);
    setDocumentsMessage(`Cannot delete ${path}: ${describeError(err)}`, "error");
    return;
  }
  noteAuth(null);
  await refreshDocuments();
  setDocumentsMessage(`Deleted ${path}.`, "ok");
}

function uploadItem(file) {
  const progress = h("progress", { max: 1, value: 0, "aria-label": `Upload progress of ${file.name}` });
  const status = h("span", { class: "upload-status" }, "queued");
  const item = h("li", { class: "upload", "data-state": "queued" },
    h("span", { class: "upload-name" }, file.name), progress, status);
  return { item, progress, status, file };
}

function setUploadState(entry, state, text) {
  entry.item.dataset.state = state;
  entry.status.textContent = text;
}

/** POST one file to /documents with XMLHttpRequest (fetch has no upload progress); never rejects. */
function uploadOne(entry, space) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", api("documents"));
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      entry.progress.max = event.total;
      entry.progress.value = event.loaded;
      setUploadState(entry, "uploading", `uploading ${Math.round((100 * event.loaded) / event.total)}%`);
    });
    xhr.upload.addEventListener("load", () => {
      entry.progress.value = entry.progress.max;
      setUploadState(entry, "indexing", "indexing…");
    });
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* handled below */ }
      if ((xhr.status === 200 || xhr.status === 201) && body) {
        noteAuth(null);
        const chunks = typeof body.chunks === "number" ? ` (${body.chunks} chunk${body.chunks === 1 ? "" : "s"})` : "";
        setUploadState(entry, "ok", `${body.status}${chunks}`);
      } else if (xhr.status === 202) {
        noteAuth(null); // queued by the backend (an ingestion job): the list shows it once it is indexed
        setUploadState(entry, "ok", "accepted: indexing in the background (refresh the list later)");
      } else {
        const error = body && body.error && typeof body.error === "object" ? body.error : {};
        const err = {
          status: xhr.status,
          type: String(error.type || `http_${xhr.status}`),
          message: String(error.message || xhr.statusText || "no message"),
        };
        noteAuth(err);
        setUploadState(entry, "error", describeError(err));
      }
      resolve();
    });
    xhr.addEventListener("error", () => {
      setUploadState(entry, "error",
        "network error: the upload did not complete (the backend may have refused a file over its size limit)");
      resolve();
    });
    xhr.addEventListener("abort", () => { setUploadState(entry, "error", "aborted"); resolve(); });
    const form = new FormData();
    form.append("space_id", space);
    form.append("file", entry.file, entry.file.name);
    setUploadState(entry, "uploading", "uploading 0%");
    xhr.send(form);
  });
}

let uploading = false;

async function uploadFiles(files) {
  if (uploading || !files.length) return;
  if (!currentSpace) {
    setDocumentsMessage("Choose a space above before uploading.", "error");
    $("space").focus();
    return;
  }
  uploading = true;
  $("upload-button").disabled = true;
  const space = currentSpace;
  const entries = files.map(uploadItem);
  $("uploads").replaceChildren(...entries.map((entry) => entry.item));
  try {
    for (const entry of entries) await uploadOne(entry, space); // one by one: the backend indexes one at a time anyway
  } finally {
    uploading = false;
    $("upload-button").disabled = false;
    $("files").value = "";
  }
  await refreshDocuments();
}

// ---------------------------------------------------------------------------------------------------
// Ask: POST /ask with stream=true, Server-Sent Events read from fetch's ReadableStream (EventSource cannot POST).

/** The events of a text/event-stream body: {event, data} objects (the SSE rules for lines and fields). */
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event without its closing blank line is incomplete: dropped, as the spec says
      buffer += decoder.decode(value, { stream: true });
      for (;;) {
        const end = buffer.search(/[\r\n]/);
        if (end < 0) break;
        if (buffer[end] === "\r" && end === buffer.length - 1) break; // maybe half of a \r\n: wait
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { event: event || "message", data: data.join("\n") };
          event = "";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? "" : line.slice(colon + 1);
          if (value.startsWith(" ")) value = value.slice(1);
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

let askController = null;
let answerSources = [];

function setAnswerState(state, text) {
  $("answer-box").dataset.state = state;
  $("answer-state").textContent = text;
  $("answer").classList.toggle("interrupted", state === "interrupted" || state === "stopped");
}

function showAnswerError(err) {
  const box = $("answer-error");
  box.textContent = describeError(err);
  box.hidden = false;
}

function resetAnswer() {
  answerSources = [];
  answerClaims = [];
  $("answer-checks").hidden = true;
  $("answer-notice").hidden = true;
  $("answer-box").hidden = false;
  $("answer").textContent = "";
  $("answer-error").hidden = true;
  $("answer-meta").hidden = true;
  $("answer-meta").replaceChildren();
  $("sources").replaceChildren();
  $("sources-title").hidden = true;
  closeSource();
}

// Answers are Markdown (lists, code blocks, tables): marked renders them, with raw HTML kept as text, and
// DOMPurify (both vendored, backend/web/vendor/) keeps only the tags below from what marked made, as a DOM
// fragment (no HTML string is ever assigned here). Links open in a new tab, without a referrer.
const MARKDOWN_TAGS = ["p", "br", "strong", "em", "del", "code", "pre", "blockquote", "ul", "ol", "li", "hr",
  "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "a"];
const MARKDOWN_ATTRS = ["href", "title", "start", "align"];
const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
let markdown = null;

function markdownParser() {
  if (markdown || !globalThis.marked || !globalThis.DOMPurify) return markdown;
  markdown = new globalThis.marked.Marked({
    gfm: true,
    async: false,
    renderer: {
      html: (token) => escapeHtml(token.text), // the model's (or a document's) HTML is shown, never parsed
      image: (token) => escapeHtml(token.text || token.href || ""), // no request to anywhere
    },
  });
  globalThis.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
  return markdown;
}

/** The answer as a DOM fragment: Markdown made safe, or plain text when the libraries are missing. */
function answerFragment(text) {
  const parser = markdownParser();
  const purify = globalThis.DOMPurify;
  if (!parser || !purify.isSupported) {
    const fragment = document.createDocumentFragment();
    fragment.append(document.createTextNode(text));
    return fragment;
  }
  return purify.sanitize(parser.parse(text), {
    ALLOWED_TAGS: MARKDOWN_TAGS, ALLOWED_ATTR: MARKDOWN_ATTRS, RETURN_DOM_FRAGMENT: true,
  });
}

// ---------------------------------------------------------------------------------------------------
// Claim checks (issue 19): the `done` event's `citations` is one entry per sentence of the answer, with the
// sentence's character offsets into the raw answer text, the sources it cites, the checker's verdict and the
// supporting span (character offsets into that source's text). Older backends send {cited, invalid}
// instead: then there are no claims, and the answer is rendered as before (each [n] a link).

const CLAIM_STATUSES = new Set(["supported", "unsupported", "uncited", "no_claim"]);
const CLAIM_TITLES = {
  unsupported: "Not supported by the cited source",
  uncited: "No source cited",
};
let answerClaims = [];

/** The UTF-16 index of code point `offset` in `text` (the backend counts code points), -1 past the end. */
function utf16Index(text, offset) {
  let index = 0;
  for (let k = 0; k < offset; k += 1) {
    if (index >= text.length) return -1;
    const code = text.charCodeAt(index);
    index += code >= 0xd800 && code <= 0xdbff && index + 1 < text.length ? 2 : 1;
  }
  return index;
}

/** [start, end) of `text` as UTF-16 indices for the backend's code-point offsets, or null when they do not fit. */
function codePointRange(text, start, end) {
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start) return null;
  const from = utf16Index(text, start);
  const to = from < 0 ? -1 : utf16Index(text, end);
  return to < 0 ? null : [from, to];
}

/** The claims of an answer: each checked sentence with its place in `text` (null when it is not found there). */
function readClaims(citations, text) {
  if (!Array.isArray(citations)) return [];
  const claims = [];
  let from = 0;
  for (const entry of citations) {
    if (!entry || typeof entry !== "object") continue;
    const sentence = String(entry.sentence ?? "");
    let range = codePointRange(text, entry.start, entry.end);
    if (!range || text.slice(range[0], range[1]) !== sentence) {
      // Offsets that do not fit this text: look for the sentence itself, after the previous one.
      const at = sentence ? text.indexOf(sentence, from) : -1;
      range = at < 0 ? null : [at, at + sentence.length];
    }
    if (range && !entry.dropped) from = range[1];
    const verdict = entry.supported === true ? "supported" : entry.supported === false ? "unsupported" : "no_claim";
    const span = entry.span && typeof entry.span === "object" ? entry.span : null;
    claims.push({
      sentence, span,
      range: entry.dropped ? null : range, // removed from the answer (CITATION_CHECK=drop): counted, not shown
      status: CLAIM_STATUSES.has(entry.status) ? entry.status : verdict,
      missing: Array.isArray(entry.missing) ? entry.missing.map(String) : [],
      attributed: entry.attributed === true && span !== null, // uncited, but the checker found it in source span.n
      dropped: entry.dropped === true,
    });
  }
  return claims;
}

// The answer's Markdown is rendered by marked, so offsets into the raw text say nothing about the DOM. To know
// which rendered [n] belongs to which sentence, and where each sentence begins and ends, the raw text gets
// sentinels before rendering: a private-use character for the kind (sentence start, sentence end, [n])
// followed by one for its index. They pass through Markdown as ordinary text and are taken out of every text
// node afterwards. An answer that already holds private-use characters gets none (they could be confused).
const SENTINEL = { marker: "\uE000", start: "\uE001", end: "\uE002" };
const SENTINEL_INDEX = 0xe100;
const MAX_SENTINELS = 0xf8ff - SENTINEL_INDEX;
// [n] or [n, m] (the checker's markers); a backslash-escaped [ is Markdown's, not a citation.
const CITE = /(?<!\\)\[(\d+(?:\s*,\s*\d+)*)\]/g;
const tag = (kind, index) => kind + String.fromCharCode(SENTINEL_INDEX + index);

/** `text` with sentinels, and for each [n] (in order) the index of the claim it belongs to (-1: none). */
function withSentinels(text, claims) {
  if (!claims.length || /[\uE000-\uF8FF]/.test(text)) return { text, markerClaims: [] };
  const inserts = []; // [index, order at the same index, sentinel]
  claims.forEach((claim, i) => {
    if (!claim.range || i >= MAX_SENTINELS) return;
    const sentence = text.slice(claim.range[0], claim.range[1]);
    // Start at the first letter or digit and end before trailing Markdown syntax: a sentinel before a
    // heading's # or after a table row's last | would change what marked makes of the line. A bare URL stays
    // outside the sentence's sentinels: one right before it stops it being a link, one right after joins it.
    let first = sentence.search(/[\p{L}\p{N}]/u);
    const url = first < 0 ? null : sentence.slice(first).match(/^(?:https?:\/\/|www\.)\S*/i);
    if (url) {
      const after = sentence.slice(first + url[0].length).search(/[\p{L}\p{N}]/u);
      first = after < 0 ? -1 : first + url[0].length + after;
    }
    let last = sentence.search(/[\s|*_~`#>]*$/);
    const tail = sentence.slice(0, last).match(/(?:https?:\/\/|www\.)\S*$/i);
    if (tail) last = sentence.slice(0, tail.index).trimEnd().length;
    if (first < 0 || last <= first) return;
    inserts.push([claim.range[0] + first, 1, tag(SENTINEL.start, i)], [claim.range[0] + last, 0, tag(SENTINEL.end, i)]);
  });
  const markerClaims = [];
  for (const match of text.matchAll(CITE)) {
    if (markerClaims.length >= MAX_SENTINELS) break;
    inserts.push([match.index, 2, tag(SENTINEL.marker, markerClaims.length)]);
    markerClaims.push(claims.findIndex((c) => c.range && c.range[0] <= match.index && match.index < c.range[1]));
  }
  inserts.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let out = "";
  let last = 0;
  for (const [index, , sentinel] of inserts) {
    out += text.slice(last, index) + sentinel;
    last = index;
  }
  return { text: out + text.slice(last), markerClaims };
}

const SENTINEL_OR_CITE = /([\uE000-\uE002])([\uE100-\uF8FF])|\[(\d+(?:\s*,\s*\d+)*)\]/g;
const SENTINELS = /[\uE000-\uE002][\uE100-\uF8FF]/g;
const BLOCKS = "p, li, td, th, h1, h2, h3, h4, h5, h6, blockquote, pre";

function citeLink(n, source, claimIndex, label = `[${n}]`) {
  const claim = answerClaims[claimIndex];
  const attributed = Boolean(claim && claim.attributed);
  return h("a", {
    href: `#source-${n}`, class: claim ? `cite cite-${attributed ? "attributed" : claim.status}` : "cite",
    "data-n": String(n), "data-sentence": claim ? String(claimIndex) : undefined,
    title: attributed ? `Not cited by the model: the checker found this in source [${n}]` : undefined,
    "aria-label": `${attributed ? "Found in source" : "Source"} ${n}: ${source.path ?? ""}`,
    onclick: (event) => { event.preventDefault(); openSource(n, claim); },
  }, label);
}

/** The nodes for one marker: [n] is one link; in [n, m] each number is a link, brackets and commas text. */
function markerNodes(marker, byNumber, claimIndex) {
  const numbers = marker.match(/\d+/g).map(Number);
  if (numbers.length === 1) {
    const n = numbers[0];
    return [byNumber.has(n) ? citeLink(n, byNumber.get(n), claimIndex) : document.createTextNode(marker)];
  }
  return marker.split(/(\d+)/).filter(Boolean).map((part) => {
    const n = Number(part);
    return /^\d+$/.test(part) && byNumber.has(n) ? citeLink(n, byNumber.get(n), claimIndex, part)
      : document.createTextNode(part);
  });
}

function claimMark(claimIndex, nodes) {
  const claim = answerClaims[claimIndex];
  let title = CLAIM_TITLES[claim.status];
  if (claim.status === "unsupported" && claim.missing.length) title += ` (not found there: ${claim.missing.join(", ")})`;
  return h("span", { class: `claim claim-${claim.status}`, "data-sentence": String(claimIndex), title }, nodes);
}

/**
 * Walks the rendered answer's text nodes in document order: takes the sentinels out, turns each [n] that
 * names a source (outside code and links) into a link that opens it, and wraps the text of unsupported and
 * uncited sentences (outside code blocks) in a marked span.
 */
function decorateAnswer(root, byNumber, markerClaims) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  let open = -1; // the claim whose sentence is being walked
  let block = null;
  for (const node of nodes) {
    const parent = node.parentElement;
    const here = parent ? parent.closest(BLOCKS) : null;
    if (here !== block) { block = here; open = -1; } // a sentence never spans two blocks (a lost end sentinel)
    const linkable = !(parent && parent.closest("code, pre, a"));
    const markable = !(parent && parent.closest("pre"));
    const text = node.nodeValue;
    const pieces = []; // [node, claim index]
    let last = 0;
    let markerEnd = -1;
    let markerClaim = -1;
    for (const match of text.matchAll(SENTINEL_OR_CITE)) {
      if (match.index > last) pieces.push([document.createTextNode(text.slice(last, match.index)), open]);
      last = match.index + match[0].length;
      if (match[1]) {
        const index = match[2].charCodeAt(0) - SENTINEL_INDEX;
        if (match[1] === SENTINEL.start) open = index;
        else if (match[1] === SENTINEL.end) {
          // A sentence the model left uncited but the checker found in a source gets that source's link.
          const claim = answerClaims[index];
          if (claim && claim.attributed && linkable && byNumber.has(Number(claim.span.n))) {
            const n = Number(claim.span.n);
            pieces.push([document.createTextNode(" "), open], [citeLink(n, byNumber.get(n), index), open]);
          }
          if (open === index) open = -1;
        }
        else { markerEnd = last; markerClaim = markerClaims[index] ?? -1; }
        continue;
      }
      const claim = markerEnd === match.index ? markerClaim : -1;
      const made = linkable ? markerNodes(match[0], byNumber, claim) : [document.createTextNode(match[0])];
      pieces.push(...made.map((piece) => [piece, open]));
    }
    if (last < text.length) pieces.push([document.createTextNode(text.slice(last)), open]);
    const marked = (i) => markable && i >= 0 && CLAIM_TITLES[answerClaims[i].status] !== undefined;
    if (pieces.length === 1 && pieces[0][0].nodeValue === text && !marked(pieces[0][1])) continue; // unchanged
    const out = [];
    for (let i = 0; i < pieces.length;) {
      let j = i + 1;
      while (j < pieces.length && pieces[j][1] === pieces[i][1]) j += 1;
      const run = pieces.slice(i, j).map(([piece]) => piece);
      if (marked(pieces[i][1])) out.push(claimMark(pieces[i][1], run));
      else out.push(...run);
      i = j;
    }
    node.replaceWith(...out);
  }
  // Sentinels that landed in an attribute (an autolink's href) are taken out there too.
  for (const link of root.querySelectorAll("a[href]")) {
    const href = link.getAttribute("href");
    const clean = href.replace(SENTINELS, "").replace(/%EE%80%8[0-2]%E[EF]%[89AB][0-9A-F]%[89AB][0-9A-F]/gi, "");
    if (clean !== href) link.setAttribute("href", clean);
  }
}

/** The answer rendered from Markdown: [n] links to the sources, unsupported and uncited sentences marked. */
function renderAnswer(text, sources, citations) {
  answerClaims = readClaims(citations, text);
  const marked = withSentinels(text, answerClaims);
  const fragment = answerFragment(marked.text);
  decorateAnswer(fragment, new Map(sources.map((s) => [Number(s.n), s])), marked.markerClaims);
  $("answer").replaceChildren(fragment);
  renderChecks(answerClaims);
}

/** The line under the answer: how many of its claims the checker found supported by the sources they cite. */
function renderChecks(claims) {
  const shown = claims.filter((c) => !c.dropped);
  const count = (status) => shown.filter((c) => c.status === status).length;
  const supported = count("supported");
  const unsupported = count("unsupported");
  const uncited = count("uncited");
  const attributed = shown.filter((c) => c.attributed).length;
  const dropped = claims.length - shown.length;
  const total = supported + unsupported + uncited;
  const box = $("answer-checks");
  box.hidden = total + dropped === 0;
  if (box.hidden) return;
  if (!total) { // CITATION_CHECK=drop removed every sentence
    box.textContent = `${dropped} unsupported sentence${dropped === 1 ? "" : "s"} removed from the answer`;
    box.className = "checks checks-warn";
    return;
  }
  const details = [];
  if (unsupported) details.push(`${unsupported} not supported by the cited source`);
  if (uncited) details.push(`${uncited} with no source cited`);
  if (attributed) details.push(`${attributed} found by the checker in a source the model did not cite`);
  if (dropped) details.push(`${dropped} unsupported removed from the answer`);
  box.textContent = `${supported} of ${total} sentence${total === 1 ? "" : "s"} supported`
    + (details.length ? ` (${details.join(", ")})` : "");
  box.dataset.supported = String(supported);
  box.dataset.total = String(total);
  box.className = unsupported || uncited || dropped ? "checks checks-warn" : "checks checks-ok";
}

/** grounded: false is said in words: the answer is not (or not shown to be) drawn from the documents. */
function renderGrounding(done, sources) {
  const box = $("answer-notice");
  box.hidden = done.grounded !== false;
  box.textContent = sources.length
    ? "Not grounded: the checker did not find this answer supported by the sources it was given. Verify it against them before relying on it."
    : "Not grounded: no document in this space was relevant enough, so this answer does not come from your documents.";
}

function formatMs(ms) {
  return typeof ms === "number" && Number.isFinite(ms) ? `${Math.round(ms)} ms` : "—";
}

function renderMeta(done) {
  const timings = done.timings || {};
  const usage = done.usage || {};
  const rows = [
    ["Engine", done.engine || "—"],
    ["Model", done.model || "—"],
    ["Retrieval", formatMs(timings.retrieval_ms)],
    ["TTFT", formatMs(timings.ttft_ms)],
    ["Total", formatMs(timings.total_ms)],
  ];
  if (typeof usage.completion_tokens === "number") rows.push(["Tokens", String(usage.completion_tokens)]);
  const meta = $("answer-meta");
  meta.replaceChildren(...rows.map(([name, value]) =>
    h("div", { class: "meta-item", "data-field": name.toLowerCase() }, h("dt", {}, name), h("dd", {}, value))));
  meta.hidden = false;
}

function sourceLabel(source) {
  const parts = [String(source.path ?? source.doc_id ?? "?")];
  if (source.page !== null && source.page !== undefined) parts.push(`page ${source.page}`);
  if (source.heading) parts.push(String(source.heading));
  return parts.join(" · ");
}

function renderSources(sources) {
  $("sources").replaceChildren(...sources.map((source) =>
    h("li", { id: `source-item-${source.n}`, class: source.cited ? "source cited" : "source" },
      h("button", { type: "button", class: "source-button", onclick: () => openSource(Number(source.n)) },
        h("span", { class: "source-n" }, `[${source.n}]`), " ", sourceLabel(source)),
      source.cited ? h("span", { class: "tag" }, "cited") : h("span", { class: "tag tag-muted" }, "consulted"),
    )));
  // When the model cited none of them (small models often do not), they are still the sources it was given.
  $("sources-title").textContent = sources.some((s) => s.cited) ? "Sources" : "Sources consulted";
  $("sources-title").hidden = sources.length === 0;
}

/** Source n's text in the panel, with the span of `claim` (a sentence citing n) highlighted when it lies in n. */
function showSourceText(n, text, claim) {
  const note = $("source-note");
  const span = claim && claim.span;
  const range = span && Number(span.n) === n ? codePointRange(text, span.start, span.end) : null;
  // The sentence as read, quoted: without its [n] markers and Markdown's emphasis and code marks.
  const plain = claim ? claim.sentence.replace(/\s*\[\d+(?:\s*,\s*\d+)*\]/g, "").replace(/\*+|`+/g, "").trim() : "";
  const sentence = `“${plain}”`;
  note.hidden = !claim;
  note.className = claim ? `source-note source-note-${claim.status}` : "source-note";
  if (!range || range[0] === range[1]) {
    $("source-text").textContent = text;
    if (claim) {
      note.textContent = span && Number(span.n) !== n
        ? `The passage closest to ${sentence} is in source [${span.n}]`
        : `No passage of this source was found to support ${sentence}`;
    }
    return null;
  }
  // Text nodes around one <mark>: the source's text is never parsed as HTML.
  const mark = h("mark", { class: `span span-${claim.status}` }, text.slice(range[0], range[1]));
  $("source-text").replaceChildren(text.slice(0, range[0]), mark, text.slice(range[1]));
  if (claim.status === "supported") {
    note.textContent = `Highlighted: the passage that supports ${sentence}`;
  } else {
    const missing = claim.missing.length ? ` (not found in the source: ${claim.missing.join(", ")})` : "";
    note.textContent = `Highlighted: the closest passage, which does not support ${sentence}${missing}`;
  }
  return mark;
}

function openSource(n, claim = null) {
  const source = answerSources.find((s) => Number(s.n) === n);
  if (!source) return;
  const rows = [
    ["File", source.path ?? "—"],
    ["Page", source.page ?? "—"],
    ["Heading", source.heading || "—"],
    ["Chunk", source.chunk_index ?? "—"],
    ["Score", typeof source.score === "number" ? source.score.toFixed(3) : "—"],
    ["Cited", source.cited ? "yes" : "no"],
  ];
  $("source-title").textContent = `Source [${n}]`;
  $("source-meta").replaceChildren(...rows.map(([name, value]) =>
    h("div", { class: "meta-item", "data-field": name.toLowerCase() }, h("dt", {}, name), h("dd", {}, String(value)))));
  const mark = showSourceText(n, String(source.text ?? ""), claim);
  for (const item of $("sources").children) item.classList.toggle("selected", item.id === `source-item-${n}`);
  $("source-panel").hidden = false;
  $("source-text").focus({ preventScroll: true });
  $("source-panel").scrollIntoView({ block: "nearest" });
  if (mark) mark.scrollIntoView({ block: "nearest" }); // a long chunk: its highlighted part in view
}

function closeSource() {
  $("source-panel").hidden = true;
  for (const item of $("sources").children) item.classList.remove("selected");
}

async function ask(question) {
  if (askController) return;
  if (!currentSpace) {
    $("answer-box").hidden = false;
    setAnswerState("failed", "Choose a space above first.");
    $("space").focus();
    return;
  }
  resetAnswer();
  const controller = new AbortController();
  askController = controller;
  $("ask-button").disabled = true;
  $("stop-button").disabled = false;
  const answer = $("answer");
  answer.setAttribute("aria-busy", "true");
  setAnswerState("retrieving", "Searching the documents…");

  const body = { q: question, space_id: currentSpace, stream: true };
  const topK = Number($("top-k").value);
  if (Number.isInteger(topK) && topK > 0) body.top_k = topK;
  if ($("mode").value) body.mode = $("mode").value;

  let text = "";
  let done = null;
  let failure = null;
  let stopped = false;
  try {
    const response = await fetch(api("ask"), {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) {
      failure = await readError(response);
      noteAuth(failure);
    } else {
      noteAuth(null);
      setAnswerState("streaming", "Answering…");
      for await (const event of sseEvents(response.body)) {
        let data;
        try {
          data = JSON.parse(event.data);
        } catch {
          failure = { type: "bad_event", message: `unreadable ${event.event} event from the backend` };
          break;
        }
        if (event.event === "token") {
          text += String(data.text ?? "");
          answer.textContent = text;
        } else if (event.event === "done") {
          done = data;
        } else if (event.event === "error") {
          const error = (data && data.error) || {};
          failure = { type: String(error.type || "error"), message: String(error.message || "") };
        }
      }
    }
  } catch (exc) {
    if (exc && exc.name === "AbortError") stopped = true;
    else failure = { type: "network_error", message: String((exc && exc.message) || exc) };
  } finally {
    askController = null;
    $("ask-button").disabled = false;
    $("stop-button").disabled = true;
    answer.setAttribute("aria-busy", "false");
  }

  if (done) { // complete, even if Stop came after the last event
    answerSources = Array.isArray(done.sources) ? done.sources : [];
    renderAnswer(String(done.answer ?? text), answerSources, done.citations);
    renderSources(answerSources);
    renderGrounding(done, answerSources);
    renderMeta(done);
    setAnswerState("done", answerSources.length ? "Answered." : "Answered (no source was relevant enough).");
    return;
  }
  answer.textContent = text; // whatever arrived is kept
  if (stopped) {
    setAnswerState("stopped", text ? "Stopped: the answer above is incomplete." : "Stopped before the answer started.");
  } else if (failure && !text) {
    setAnswerState("failed", "The question could not be answered.");
  } else {
    setAnswerState("interrupted", "Interrupted: the answer above is incomplete.");
  }
  if (failure) showAnswerError(failure);
  else if (!stopped) showAnswerError({ type: "stream_ended", message: "the connection closed before the answer finished" });
}

// ---------------------------------------------------------------------------------------------------
// Wiring.

function init() {
  renderSpaceList();
  if (storage.get(STORE.remember) === "1") {
    $("remember-key").checked = true;
    $("api-key").value = storage.get(STORE.key) || "";
  }
  const space = storage.get(STORE.space) || "";
  $("space").value = space;
  currentSpace = space;

  $("settings").addEventListener("submit", (event) => { event.preventDefault(); applySettings(); });
  $("space").addEventListener("change", applySettings);
  $("api-key").addEventListener("change", saveKeyChoice);
  $("remember-key").addEventListener("change", saveKeyChoice);

  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (question) ask(question);
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("stop-button").addEventListener("click", () => { if (askController) askController.abort(); });
  $("source-close").addEventListener("click", closeSource);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("source-panel").hidden) closeSource();
  });

  $("upload-form").addEventListener("submit", (event) => {
    event.preventDefault();
    uploadFiles(Array.from($("files").files || []));
  });
  $("refresh-button").addEventListener("click", refreshDocuments);

  refreshHealth();
  setInterval(() => { if (!document.hidden) refreshHealth(); }, HEALTH_INTERVAL_MS);
  refreshDocuments();
}

init();
