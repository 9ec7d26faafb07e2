// Monque dashboard: local times, the viewer's zone in forms, confirmations, live reloads.
// Everything the server sends is already escaped HTML; this script never builds markup.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.dateTime);
    if (!isNaN(when)) {
      el.textContent = when.toLocaleString();
      el.title = el.dateTime;
    }
  }
}

function pad(n) { return String(n).padStart(2, "0"); }

function localInputs(root) {
  // A datetime-local input shows a UTC bound from the server in the viewer's zone.
  for (const input of root.querySelectorAll("input.local-time[data-utc]")) {
    const when = new Date(input.dataset.utc);
    if (input.dataset.utc && !isNaN(when) && !input.value) {
      input.value = `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}` +
        `T${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
    }
  }
}

function utcOnSubmit(root) {
  // A local date and time goes to the server as UTC, converted with the offset of that very
  // date (not today's: a time across a daylight-saving change keeps its wall-clock meaning).
  for (const form of root.querySelectorAll("form")) {
    form.addEventListener("submit", () => {
      for (const input of form.querySelectorAll("input[type=datetime-local][name]")) {
        if (!input.value) continue;
        const when = new Date(input.value);
        if (isNaN(when)) continue;
        const hidden = document.createElement("input");
        hidden.type = "hidden";
        hidden.name = input.name;
        hidden.value = when.toISOString();
        input.removeAttribute("name");
        form.appendChild(hidden);
      }
    });
  }
}

function confirmations(root) {
  for (const form of root.querySelectorAll("form.confirm")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm || "Sure?")) event.preventDefault();
    });
  }
}

function prepare(root) {
  localTimes(root);
  localInputs(root);
  confirmations(root);
  utcOnSubmit(root);
}

function live() {
  const region = document.getElementById("live");
  const toggle = document.getElementById("live-toggle");
  const state = document.getElementById("live-state");
  if (!region || !window.EventSource) {
    if (state) state.textContent = "";
    return;
  }
  let busy = false;
  let again = false;
  async function reload() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Monque-Fragment": "1" }, credentials: "same-origin",
      });
      if (response.ok) {
        const html = await response.text();
        // Keep the reader's place: while a field inside is being edited, swap once it is left.
        const active = document.activeElement;
        if (active && region.contains(active) && active.matches("input, select, textarea")) {
          active.addEventListener("blur", () => reload(), { once: true });
        } else {
          region.innerHTML = html;
          prepare(region);
          document.body.dataset.updated = String(Date.now());
        }
      } else {
        state.textContent = `update failed (${response.status})`;
      }
    } catch (error) {
      state.textContent = "offline";
    } finally {
      busy = false;
      if (again) { again = false; reload(); }
    }
  }
  let source = null;
  let opened = 0;
  function connect(resumed) {
    const url = new URL(document.body.dataset.live, window.location.href);
    if (resumed) url.searchParams.set("resumed", "1");  // as Last-Event-ID says on a retry
    source = new EventSource(url);
    // "ready" comes once the server's change stream is open (headers alone come earlier).
    // After a reconnect, writes made while the stream was down were never announced: reload.
    source.addEventListener("ready", () => {
      state.textContent = "live";
      if (opened++ > 0 && toggle.checked) reload();
    });
    source.onerror = () => {
      // A closed source (the server refused /live) never retries: say so.
      state.textContent = source.readyState === EventSource.CLOSED
        ? "stopped (reload the page)" : "reconnecting…";
    };
    source.onmessage = () => { if (toggle.checked) reload(); };
  }
  toggle.addEventListener("change", () => {
    // Resuming reloads on the new stream's "ready" (it counts as a reconnect).
    if (toggle.checked) { state.textContent = "connecting…"; connect(true); }
    else { source.close(); state.textContent = "paused"; }
  });
  connect(false);
}

document.addEventListener("DOMContentLoaded", () => {
  prepare(document);
  live();
});
