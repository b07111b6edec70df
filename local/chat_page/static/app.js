// Chat page: streams answers from the front door's OpenAI-compatible API and manages sessions.
// Plain browser JavaScript with no dependencies, so that it loads offline and can be served
// from any origin that proxies the API. Query parameters: ?api=<base URL> points it at another
// API, ?max_tokens=<n> caps each answer (short answers keep small CPU models quick).
"use strict";

const pageParams = new URLSearchParams(location.search);
const apiBase = new URL(pageParams.get("api") || ".", location.href);
const maxTokens = Number.parseInt(pageParams.get("max_tokens") || "", 10);
const MODEL = "chatbot";
// The front door's answer while a model scaled to zero is starting (503 + Retry-After).
const WAKING_UP_CODE = "model_waking_up";
const DEFAULT_WAKE_RETRY_S = 30;

const els = {
  messages: document.getElementById("messages"),
  composer: document.getElementById("composer"),
  prompt: document.getElementById("prompt"),
  send: document.getElementById("send"),
  stop: document.getElementById("stop"),
  error: document.getElementById("error"),
  newChat: document.getElementById("new-chat"),
  sessionList: document.getElementById("session-list"),
  sessionListEmpty: document.getElementById("session-list-empty"),
  sessionLabel: document.getElementById("session-label"),
  useRetrieval: document.getElementById("use-retrieval"),
};

let currentSessionId = null;
let inFlight = null;

function apiUrl(path) {
  return new URL(path.replace(/^\//, ""), apiBase).toString();
}

function showError(message) {
  els.error.textContent = message;
  els.error.hidden = false;
}

function clearError() {
  els.error.textContent = "";
  els.error.hidden = true;
}

// Turns a failed response into one readable sentence, whatever shape the body has.
async function describeHttpError(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = (body && body.error && body.error.message) || JSON.stringify(body);
  } catch (_) {
    detail = response.statusText;
  }
  return `Request failed (HTTP ${response.status}): ${detail}`;
}

// Seconds to wait before asking again when the answer says a model is waking up, else null.
async function wakingUpRetrySeconds(response) {
  if (response.status !== 503) return null;
  let body = null;
  try {
    body = await response.clone().json();
  } catch (_) {
    return null;
  }
  if (!body || !body.error || body.error.code !== WAKING_UP_CODE) return null;
  const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return seconds > 0 ? seconds : DEFAULT_WAKE_RETRY_S;
}

function wakingUpText(seconds) {
  const minutes = Math.max(1, Math.ceil(seconds / 60));
  return `The model is waking up, about ${minutes} minute${minutes === 1 ? "" : "s"}. ` +
    "Your question will be sent again automatically.";
}

// Resolves after `ms`, or rejects with an AbortError when Stop is pressed meanwhile.
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("Stopped while waiting", "AbortError"));
    }, { once: true });
  });
}

function setSession(sessionId) {
  currentSessionId = sessionId;
  els.sessionLabel.textContent = sessionId ? `Session ${sessionId}` : "New chat";
  for (const item of els.sessionList.querySelectorAll("li")) {
    item.classList.toggle("active", item.dataset.sessionId === sessionId);
  }
}

function addMessage(role, text) {
  const box = document.createElement("div");
  box.className = `message ${role}`;
  box.dataset.role = role;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = text;
  box.append(label, content);
  els.messages.append(box);
  els.messages.scrollTop = els.messages.scrollHeight;
  return box;
}

function renderSources(box, sources) {
  if (!Array.isArray(sources) || sources.length === 0) return;
  let block = box.querySelector(".sources");
  if (!block) {
    block = document.createElement("div");
    block.className = "sources";
    box.append(block);
  }
  block.textContent = "Sources:";
  const list = document.createElement("ol");
  for (const source of sources) {
    const item = document.createElement("li");
    item.className = "source";
    const title = source.title || source.id || "untitled";
    const score = typeof source.score === "number" ? ` (score ${source.score.toFixed(2)})` : "";
    item.textContent = `${title}${score}`;
    list.append(item);
  }
  block.append(list);
}

function renderModeration(box, finishReason, moderation) {
  const blocked = finishReason === "content_filter";
  if (!blocked) return;
  let notice = box.querySelector(".moderation-notice");
  if (!notice) {
    notice = document.createElement("div");
    notice.className = "moderation-notice";
    box.append(notice);
  }
  const labels = [];
  if (typeof moderation === "string") {
    labels.push(moderation);
  } else if (moderation && typeof moderation === "object") {
    for (const [stage, label] of Object.entries(moderation)) {
      if (label) labels.push(`${stage}: ${typeof label === "string" ? label : JSON.stringify(label)}`);
    }
  }
  notice.textContent =
    "Moderation stopped this answer" + (labels.length ? ` (${labels.join(", ")})` : "") + ".";
}

// Reads an SSE body and calls onEvent with each parsed `data:` payload until [DONE].
async function readServerSentEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let boundary;
    while ((boundary = buffer.search(/\r?\n\r?\n/)) !== -1) {
      const rawEvent = buffer.slice(0, boundary);
      buffer = buffer.slice(boundary).replace(/^\r?\n\r?\n/, "");
      const data = rawEvent
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      onEvent(JSON.parse(data));
    }
  }
}

async function sendMessage(text) {
  clearError();
  addMessage("user", text);
  const box = addMessage("assistant", "");
  box.classList.add("streaming");
  const content = box.querySelector(".content");
  const body = {
    model: MODEL,
    stream: true,
    messages: [{ role: "user", content: text }],
    retrieval: els.useRetrieval.checked,
  };
  if (currentSessionId) body.session_id = currentSessionId;
  if (maxTokens > 0) body.max_tokens = maxTokens;

  inFlight = new AbortController();
  els.send.disabled = true;
  els.stop.hidden = false;
  let finishReason = null;
  let moderation = null;
  try {
    let response;
    // A model scaled to zero refuses until it is up: show it, wait as told, ask again.
    for (;;) {
      response = await fetch(apiUrl("v1/chat/completions"), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: inFlight.signal,
      });
      const retryAfter = await wakingUpRetrySeconds(response);
      if (retryAfter === null) break;
      box.dataset.state = "waking";
      content.textContent = wakingUpText(retryAfter);
      await pause(retryAfter * 1000, inFlight.signal);
    }
    if (box.dataset.state === "waking") {
      delete box.dataset.state;
      content.textContent = "";
    }
    if (!response.ok) throw new Error(await describeHttpError(response));
    await readServerSentEvents(response, (chunk) => {
      // Our additions live under one key, `chatbot`, so they shadow no OpenAI field.
      const extension = chunk.chatbot || {};
      if (extension.session_id && extension.session_id !== currentSessionId) {
        setSession(extension.session_id);
      }
      if (chunk.error) throw new Error(`The answer stopped with an error: ${chunk.error.message}`);
      if (extension.sources) renderSources(box, extension.sources);
      if (extension.moderation) moderation = extension.moderation;
      for (const choice of chunk.choices || []) {
        if (choice.delta && typeof choice.delta.content === "string") {
          content.textContent += choice.delta.content;
          els.messages.scrollTop = els.messages.scrollHeight;
        }
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
    });
    box.dataset.finishReason = finishReason || "";
    renderModeration(box, finishReason, moderation);
  } catch (err) {
    if (err.name === "AbortError") {
      if (box.dataset.state === "waking") {
        delete box.dataset.state;
        content.textContent = "";
      }
      box.dataset.finishReason = "stopped";
    } else {
      showError(err.message || String(err));
      box.dataset.finishReason = "error";
    }
  } finally {
    box.classList.remove("streaming");
    inFlight = null;
    els.send.disabled = false;
    els.stop.hidden = true;
    refreshSessions();
  }
}

async function refreshSessions() {
  try {
    const response = await fetch(apiUrl("v1/sessions"));
    if (!response.ok) throw new Error(await describeHttpError(response));
    const page = await response.json();
    renderSessionList(page.data || []);
  } catch (err) {
    showError(`Could not list sessions. ${err.message || err}`);
  }
}

function renderSessionList(sessions) {
  els.sessionList.replaceChildren();
  for (const session of sessions) {
    const sessionId = session.session_id;
    const item = document.createElement("li");
    item.dataset.sessionId = sessionId;
    item.classList.toggle("active", sessionId === currentSessionId);
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open-session";
    open.textContent = session.title || sessionId;
    open.title = `${session.title || sessionId} (updated ${session.updated_at || "?"})`;
    open.addEventListener("click", () => openSession(sessionId));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete-session";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Delete session ${session.title || sessionId}`);
    remove.addEventListener("click", () => deleteSession(sessionId));
    item.append(open, remove);
    els.sessionList.append(item);
  }
  els.sessionListEmpty.hidden = sessions.length > 0;
}

async function openSession(sessionId) {
  clearError();
  try {
    const response = await fetch(apiUrl(`v1/sessions/${encodeURIComponent(sessionId)}`));
    if (!response.ok) throw new Error(await describeHttpError(response));
    const session = await response.json();
    els.messages.replaceChildren();
    for (const message of session.messages || []) {
      const box = addMessage(message.role, message.content || "");
      if (message.role === "assistant") {
        renderSources(box, message.sources);
        renderModeration(box, message.finish_reason, message.moderation);
      }
    }
    setSession(sessionId);
  } catch (err) {
    showError(`Could not open the session. ${err.message || err}`);
  }
}

async function deleteSession(sessionId) {
  clearError();
  try {
    const response = await fetch(apiUrl(`v1/sessions/${encodeURIComponent(sessionId)}`), {
      method: "DELETE",
    });
    if (!response.ok && response.status !== 404) throw new Error(await describeHttpError(response));
    if (sessionId === currentSessionId) startNewChat();
  } catch (err) {
    showError(`Could not delete the session. ${err.message || err}`);
  }
  refreshSessions();
}

function startNewChat() {
  if (inFlight) inFlight.abort();
  els.messages.replaceChildren();
  clearError();
  setSession(null);
  els.prompt.focus();
}

els.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = els.prompt.value.trim();
  if (!text || inFlight) return;
  els.prompt.value = "";
  sendMessage(text);
});

els.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    els.composer.requestSubmit();
  }
});

els.stop.addEventListener("click", () => inFlight && inFlight.abort());
els.newChat.addEventListener("click", startNewChat);

setSession(null);
refreshSessions();
