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

/** Each [n] that names a source (in the text, not in code or a link) becomes a link that opens it. */
function linkCitations(root, byNumber) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) => (node.parentElement && node.parentElement.closest("code, pre, a")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const text = node.nodeValue;
    const parts = [];
    let last = 0;
    for (const match of text.matchAll(/\[(\d+)\]/g)) {
      const n = Number(match[1]);
      const source = byNumber.get(n);
      if (!source) continue;
      parts.push(text.slice(last, match.index));
      parts.push(h("a", {
        href: `#source-${n}`, class: "cite", "data-n": String(n),
        "aria-label": `Source ${n}: ${source.path ?? ""}`,
        onclick: (event) => { event.preventDefault(); openSource(n); },
      }, `[${n}]`));
      last = match.index + match[0].length;
    }
    if (!parts.length) continue;
    parts.push(text.slice(last));
    node.replaceWith(...parts.map((p) => (p instanceof Node ? p : document.createTextNode(p))));
  }
}

/** The answer rendered from Markdown, with each [n] that names a source turned into a link that opens it. */
function renderAnswer(text, sources) {
  const fragment = answerFragment(text);
  linkCitations(fragment, new Map(sources.map((s) => [Number(s.n), s])));
  $("answer").replaceChildren(fragment);
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
      source.cited ? h("span", { class: "tag" }, "cited") : null,
    )));
  // When the model cited none of them (small models often do not), they are still the sources it was given.
  $("sources-title").textContent = sources.some((s) => s.cited) ? "Sources" : "Sources consulted";
  $("sources-title").hidden = sources.length === 0;
}

function openSource(n) {
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
  $("source-text").textContent = String(source.text ?? "");
  for (const item of $("sources").children) item.classList.toggle("selected", item.id === `source-item-${n}`);
  $("source-panel").hidden = false;
  $("source-text").focus({ preventScroll: true });
  $("source-panel").scrollIntoView({ block: "nearest" });
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
    renderAnswer(String(done.answer ?? text), answerSources);
    renderSources(answerSources);
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
