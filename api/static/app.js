// Sluice observer page: submit a chat, follow any message's stream live, cancel or delete it.
//
// Why fetch() and not EventSource: EventSource cannot send headers, so with auth on it could
// only carry the key in the URL, where it lands in logs and history. This page reads the SSE
// response with fetch() and a small parser, sends the key as `x-api-key` and
// `Authorization: Bearer`, and sends `Last-Event-ID` itself when it reconnects after a drop.
// The key is typed once and kept in sessionStorage: it lives as long as the tab, never in a
// URL or a cookie, and the page's Content-Security-Policy lets no other script or host near it.

const KEY_STORAGE = "sluice.apiKey";
const ASYNC = "/v1/messages/async";
const TERMINAL = new Set(["message_stop", "error"]);
const FINAL_STATUSES = new Set(["completed", "cancelled", "error"]);
const STATUS_POLL_MS = 1000;
const MAX_BACKOFF_MS = 5000;

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class ApiError extends Error {
  constructor(status, body) {
    const error = body && body.error;
    super(error ? `${status} ${error.type}: ${error.message}` : `HTTP ${status}`);
    this.status = status;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { "x-api-key": key, Authorization: `Bearer ${key}` } : {};
}

async function api(method, path, body) {
  const init = { method, headers: authHeaders(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** An SSE parser: feed it text chunks, it calls onFrame({id, event, data}) per complete frame. */
export function sseParser(onFrame) {
  let buffer = "";
  let fields = {};
  let data = [];
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (let line of lines) {
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) onFrame({ id: fields.id ?? null, event: fields.event || "message", data: data.join("\n") });
        fields = {};
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") data.push(value);
      else fields[name] = value;
    }
  };
}

/** Milliseconds of server time in a stream position (a Redis stream id is `<ms>-<seq>`). */
function positionMs(id) {
  const ms = Number.parseInt(String(id).split("-")[0], 10);
  return Number.isFinite(ms) ? ms : null;
}

function fmtMs(value) {
  return value == null ? "–" : `${Math.round(Number(value))} ms`;
}

/** One followed message: its stream reader, its status poller and what the viewer shows. */
class Watch {
  constructor(messageId) {
    this.id = messageId;
    this.lastId = null;
    this.done = false;
    this.stopped = false;
    this.controller = new AbortController();
    this.block = null;
    this.deltas = 0;
    this.firstDeltaMs = null;
    this.lastDeltaMs = null;
    this.status = null;
  }

  start() {
    $("viewer").hidden = false;
    $("message-id").textContent = this.id;
    $("output").replaceChildren();
    $("viewer-error").textContent = "";
    for (const id of ["m-model", "m-queue", "m-ttft", "m-rate", "m-tokens", "m-stop"]) $(id).textContent = "–";
    this.showStatus("…");
    this.read();
    this.poll();
  }

  stop() {
    this.stopped = true;
    this.controller.abort();
  }

  async read() {
    let attempt = 0;
    while (!this.done && !this.stopped) {
      try {
        const headers = authHeaders();
        if (this.lastId) headers["Last-Event-ID"] = this.lastId;
        const response = await fetch(`${ASYNC}/${encodeURIComponent(this.id)}/stream`, {
          headers,
          cache: "no-store",
          signal: this.controller.signal,
        });
        if (!response.ok) {
          let body = null;
          try {
            body = await response.json();
          } catch {
            body = null;
          }
          const error = new ApiError(response.status, body);
          if (response.status < 500) return this.fail(error);
          throw error;
        }
        this.showConnection("live");
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        const feed = sseParser((frame) => {
          attempt = 0;
          this.onFrame(frame);
        });
        while (!this.done) {
          const { value, done } = await reader.read();
          if (done) break;
          feed(value);
        }
        if (this.done) {
          reader.cancel().catch(() => {});
          break;
        }
        throw new Error("the stream ended before its last event");
      } catch (error) {
        if (this.stopped) return;
        attempt += 1;
        this.showConnection(`connection lost; resuming (attempt ${attempt})…`);
        await sleep(Math.min(250 * 2 ** (attempt - 1), MAX_BACKOFF_MS));
      }
    }
    if (this.done) this.showConnection("ended");
  }

  async poll() {
    while (!this.stopped) {
      try {
        this.showMetadata(await api("GET", `${ASYNC}/${encodeURIComponent(this.id)}/status`));
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) return this.fail(error);
      }
      if (this.status && FINAL_STATUSES.has(this.status) && this.done) return;
      await sleep(STATUS_POLL_MS);
    }
  }

  fail(error) {
    // Only the first failure speaks: stopping aborts the other request in flight (stream or
    // status poll), whose own failure would otherwise replace this message with a bare "HTTP 404".
    if (this.stopped) return;
    this.done = true;
    this.stop();
    if (error.status === 404) this.showStatus("not found");
    $("viewer-error").textContent = error.message;
    this.showConnection("");
    this.setButtons();
  }

  onFrame(frame) {
    if (frame.event === "ping") return;
    const event = JSON.parse(frame.data);
    if (frame.id) this.lastId = frame.id;
    switch (event.type) {
      case "message_start":
        $("m-model").textContent = event.message.model;
        if (!this.status || this.status === "pending") this.showStatus("processing");
        break;
      case "content_block_start":
        this.openBlock(event.content_block);
        break;
      case "content_block_delta":
        this.addDelta(event.delta, frame.id);
        break;
      case "content_block_stop":
        if (this.block) this.block.root.classList.remove("streaming");
        this.block = null;
        break;
      case "message_delta":
        $("m-stop").textContent = event.delta.stop_reason ?? "–";
        if (event.usage && event.usage.output_tokens != null) $("m-tokens").textContent = event.usage.output_tokens;
        break;
      case "error":
        $("viewer-error").textContent = `${event.error.type}: ${event.error.message}`;
        break;
    }
    if (TERMINAL.has(event.type)) {
      this.done = true;
      this.refreshSoon();
    }
  }

  openBlock(block) {
    const output = $("output");
    let root;
    let body;
    if (block.type === "thinking") {
      root = document.createElement("details");
      root.open = true;
      const summary = document.createElement("summary");
      summary.textContent = "thinking";
      body = document.createElement("div");
      root.append(summary, body);
    } else if (block.type === "tool_use") {
      root = document.createElement("div");
      const name = document.createElement("div");
      name.className = "tool-name";
      name.textContent = `tool call: ${block.name}`;
      body = document.createElement("pre");
      root.append(name, body);
    } else {
      root = document.createElement("div");
      body = root;
    }
    root.className = `block ${block.type} streaming`;
    output.append(root);
    this.block = { root, body };
  }

  addDelta(delta, id) {
    const text = delta.text ?? delta.thinking ?? delta.partial_json ?? "";
    if (this.block && text) this.block.body.append(text);
    this.deltas += 1;
    const ms = positionMs(id);
    if (ms != null) {
      this.firstDeltaMs ??= ms;
      this.lastDeltaMs = ms;
    }
    $("m-tokens").textContent = this.deltas;
    if (this.deltas > 1 && this.lastDeltaMs > this.firstDeltaMs) {
      const rate = (this.deltas - 1) / ((this.lastDeltaMs - this.firstDeltaMs) / 1000);
      $("m-rate").textContent = `${rate.toFixed(1)}`;
    }
  }

  async refreshSoon() {
    try {
      this.showMetadata(await api("GET", `${ASYNC}/${encodeURIComponent(this.id)}/status`));
    } catch {
      // the poller reports errors
    }
  }

  showMetadata(body) {
    if (this.stopped) return;
    const meta = body.metadata || {};
    this.showStatus(body.status);
    if (meta.queue_wait_ms != null) $("m-queue").textContent = fmtMs(meta.queue_wait_ms);
    if (meta.ttft_ms != null) $("m-ttft").textContent = fmtMs(meta.ttft_ms);
    if (meta.tokens_per_second != null) $("m-rate").textContent = Number(meta.tokens_per_second).toFixed(1);
    if (meta.output_tokens != null && FINAL_STATUSES.has(body.status)) $("m-tokens").textContent = meta.output_tokens;
    if (body.error_message) $("viewer-error").textContent = body.error_message;
  }

  showStatus(status) {
    this.status = status;
    const badge = $("status");
    badge.textContent = status;
    badge.className = `badge ${status.replace(/\W+/g, "-")}`;
    this.setButtons();
  }

  showConnection(text) {
    $("connection").textContent = text;
  }

  setButtons() {
    const gone = this.status === "deleted" || this.status === "not found";
    $("cancel").disabled = gone || FINAL_STATUSES.has(this.status);
    $("delete").disabled = gone;
  }
}

let current = null;

function follow(messageId) {
  if (current) current.stop();
  current = new Watch(messageId);
  if (location.hash.slice(1) !== encodeURIComponent(messageId)) {
    history.replaceState(null, "", `#${encodeURIComponent(messageId)}`);
  }
  current.start();
}

function numberField(id) {
  const raw = $(id).value.trim();
  return raw === "" ? undefined : Number(raw);
}

async function onSubmit(event) {
  event.preventDefault();
  $("submit-error").textContent = "";
  const body = {
    model: $("model").value || "default",
    messages: [{ role: "user", content: $("prompt").value }],
  };
  const optional = {
    system: $("system").value.trim() || undefined,
    max_tokens: numberField("max-tokens"),
    temperature: numberField("temperature"),
    priority: numberField("priority"),
  };
  for (const [name, value] of Object.entries(optional)) if (value !== undefined) body[name] = value;
  $("submit").disabled = true;
  try {
    const answer = await api("POST", ASYNC, body);
    follow(answer.message_id);
  } catch (error) {
    $("submit-error").textContent = error.message;
  } finally {
    $("submit").disabled = false;
  }
}

async function onCancel() {
  if (!current) return;
  try {
    const answer = await api("POST", `${ASYNC}/${encodeURIComponent(current.id)}/cancel`);
    current.showStatus(answer.status);
  } catch (error) {
    $("viewer-error").textContent = error.message;
  }
}

async function onDelete() {
  if (!current) return;
  const watch = current;
  try {
    await api("DELETE", `${ASYNC}/${encodeURIComponent(watch.id)}/delete`);
    watch.stop();
    watch.showStatus("deleted");
    watch.showConnection("");
  } catch (error) {
    $("viewer-error").textContent = error.message;
  }
}

const BATCHES = "/v1/messages/batches";
const BATCH_PAGE = 100;
let batchShown = { id: null, offset: 0 };

/** The batch's state line and a page of its requests, each with a button that follows its message live. */
async function showBatch(batchId, offset) {
  $("batch-error").textContent = "";
  try {
    const id = encodeURIComponent(batchId);
    const batch = await api("GET", `${BATCHES}/${id}`);
    const counts = Object.entries(batch.request_counts).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`);
    $("batch-state").textContent = `${batch.processing_status}: ${counts.join(", ") || "empty"}`;
    const page = await api("GET", `${BATCHES}/${id}/requests?offset=${offset}&limit=${BATCH_PAGE}`);
    const list = $("batch-requests");
    if (offset === 0) list.replaceChildren();
    for (const item of page.data) {
      const row = document.createElement("li");
      const name = document.createElement("code");
      name.textContent = item.custom_id;
      const badge = document.createElement("span");
      badge.className = `badge ${item.status}`;
      badge.textContent = item.status;
      const open = document.createElement("button");
      open.type = "button";
      open.textContent = "Open";
      open.disabled = item.status === "waiting";
      open.addEventListener("click", () => follow(item.message_id));
      row.append(name, badge, open);
      list.append(row);
    }
    batchShown = { id: batchId, offset: offset + page.data.length };
    $("batch-more").hidden = batchShown.offset >= page.total;
  } catch (error) {
    $("batch-error").textContent = error.message;
  }
}

/** The model picker: ids from GET /v1/models, or just "default" when that is missing or refused. */
async function loadModels() {
  let ids = [];
  try {
    const answer = await api("GET", "/v1/models");
    const items = Array.isArray(answer) ? answer : answer.data || answer.models || [];
    ids = items.map((item) => (typeof item === "string" ? item : item.id)).filter(Boolean);
  } catch {
    ids = [];
  }
  if (!ids.includes("default")) ids.unshift("default");
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(...ids.map((id) => new Option(id, id)));
  if (ids.includes(chosen)) select.value = chosen;
}

function showKeyState() {
  $("key-state").textContent = apiKey() ? "key set for this tab" : "no key";
  $("api-key").value = "";
}

function init() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    showKeyState();
    loadModels();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    showKeyState();
  });
  $("submit-form").addEventListener("submit", onSubmit);
  $("follow-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("follow-id").value.trim();
    if (id) follow(id);
  });
  $("batch-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("batch-id").value.trim();
    if (id) showBatch(id, 0);
  });
  $("batch-more").addEventListener("click", () => showBatch(batchShown.id, batchShown.offset));
  $("cancel").addEventListener("click", onCancel);
  $("delete").addEventListener("click", onDelete);
  showKeyState();
  loadModels();
  const fromHash = decodeURIComponent(location.hash.slice(1));
  if (fromHash) follow(fromHash);
}

init();
