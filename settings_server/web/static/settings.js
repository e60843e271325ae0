// The settings page's behaviour: every read and write goes through the JSON API that any client
// uses (session cookie + X-CSRFToken), writes carry If-Match, and the change feed (SSE) updates
// rows live. No framework, no build step.
"use strict";

(function () {
  const me = Number(document.body.dataset.userId);
  const rows = () => document.querySelectorAll("li.setting");

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // fetch() a JSON endpoint of this server: {status, body, headers}; body is null when empty.
  async function api(method, url, body, headers) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { Accept: "application/json", ...(headers || {}) },
    };
    if (method !== "GET") init.headers["X-CSRFToken"] = csrfToken();
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (error) {
      parsed = { detail: text };
    }
    return { status: response.status, body: parsed, headers: response.headers };
  }

  // The messages of a DRF error body, as one line.
  function messages(body) {
    if (!body) return "The server refused the change.";
    if (typeof body.detail === "string") return body.detail;
    return Object.values(body).flat().join(" ");
  }

  // -- one setting row ---------------------------------------------------------------------

  const control = (row) => row.querySelector(".control");

  function controlValue(row) {
    const input = control(row);
    return row.dataset.type === "bool" ? (input.checked ? "True" : "False") : input.value;
  }

  function setStatus(row, text) {
    row.querySelector(".status").textContent = text;
  }

  function setError(row, text) {
    row.querySelector(".error").textContent = text;
    if (text) control(row).setAttribute("aria-invalid", "true");
    else control(row).removeAttribute("aria-invalid");
  }

  // Show ``value`` (as served) and where it comes from.
  function show(row, value, source) {
    const protectedValue = row.dataset.protected === "true";
    const input = control(row);
    if (!protectedValue) {
      row.dataset.value = value;
      if (row.dataset.type === "bool") input.checked = value === "True";
      else input.value = value;
    } else {
      input.value = "";
      input.placeholder = "set (hidden)";
    }
    const differs = protectedValue ? source !== "default" : value !== row.dataset.default;
    row.classList.toggle("differs", differs);
    row.querySelector(".modified").hidden = !differs;
    const reset = row.querySelector(".reset");
    if (reset) reset.hidden = !differs || protectedValue;
    if (source) showSource(row, source);
  }

  function showSource(row, source) {
    const shown = source === "override" ? "pinned" : source;
    row.dataset.source = shown;
    const badge = row.querySelector(".source");
    badge.textContent = shown;
    badge.className = `source source-${shown}`;
    if (shown === "pinned") {
      control(row).disabled = true;
      badge.title = "Fixed by the server configuration; it cannot be changed here.";
      setStatus(row, "Pinned: fixed by the server configuration, read-only.");
    }
  }

  function sourceOf(response) {
    return response.headers.get("X-Setting-Source") || "stored";
  }

  // Write ``value``: first re-read the setting, so a page that is out of date never overwrites
  // someone else's change; then PATCH with that read's ETag (when the server gives one), so a
  // change in between is refused (412) rather than lost.
  async function save(row, value) {
    setError(row, "");
    setStatus(row, "Saving…");
    const url = row.dataset.url;
    const fresh = await api("GET", url);
    if (fresh.status !== 200) {
      setStatus(row, "");
      setError(row, messages(fresh.body));
      return;
    }
    if (row.dataset.protected !== "true" && fresh.body.value !== row.dataset.value) {
      changedElsewhere(row, fresh);
      return;
    }
    const etag = fresh.headers.get("ETag");
    const answer = await api("PATCH", url, { value }, etag ? { "If-Match": etag } : {});
    if (answer.status === 200) {
      show(row, answer.body.value, sourceOf(answer));
      setStatus(row, "Saved.");
    } else if (answer.status === 412) {
      changedElsewhere(row, await api("GET", url));
    } else {
      setStatus(row, "");
      setError(row, messages(answer.body));
    }
  }

  function changedElsewhere(row, fresh) {
    if (fresh.status === 200) show(row, fresh.body.value, sourceOf(fresh));
    setStatus(row, "");
    const now = row.dataset.protected === "true" ? "" : ` It is now “${fresh.body.value}”.`;
    setError(row, `Changed by someone else meanwhile; your change was not saved.${now}`);
  }

  function wireRow(row) {
    const input = control(row);
    if (row.dataset.writable === "true") {
      input.addEventListener("change", () => save(row, controlValue(row)));
      row.querySelector(".reset").addEventListener("click", () => save(row, row.dataset.default));
    }
    row.querySelector(".history-button").addEventListener("click", () => toggleHistory(row));
  }

  // -- history -----------------------------------------------------------------------------

  function historyUrl(row) {
    const params = new URLSearchParams({ kind: row.dataset.kind, key: row.dataset.key, limit: "20" });
    return `/api/settings/history/?${params}`;
  }

  async function toggleHistory(row) {
    const button = row.querySelector(".history-button");
    const panel = row.querySelector(".history");
    if (!panel.hidden) {
      panel.hidden = true;
      button.setAttribute("aria-expanded", "false");
      return;
    }
    panel.hidden = false;
    button.setAttribute("aria-expanded", "true");
    await loadHistory(row);
  }

  async function loadHistory(row) {
    const panel = row.querySelector(".history");
    panel.textContent = "Loading history…";
    const answer = await api("GET", historyUrl(row));
    panel.textContent = "";
    if (answer.status === 404) {
      panel.textContent = "This server keeps no history of settings.";
      return;
    }
    if (answer.status !== 200) {
      panel.textContent = messages(answer.body);
      return;
    }
    const entries = (answer.body.results || []).filter(
      (entry) => entry.kind !== "notification" || entry.user === me
    );
    if (!entries.length) {
      panel.textContent = "No changes recorded yet.";
      return;
    }
    const table = document.createElement("table");
    table.innerHTML =
      "<caption>History</caption><thead><tr><th scope='col'>When</th><th scope='col'>Who</th>" +
      "<th scope='col'>Change</th><th scope='col'>Source</th><th scope='col'>" +
      "<span class='visually-hidden'>Actions</span></th></tr></thead><tbody></tbody>";
    const body = table.querySelector("tbody");
    for (const entry of entries) {
      const line = document.createElement("tr");
      line.dataset.entryId = entry.id;
      for (const text of [
        new Date(entry.timestamp).toLocaleString(),
        entry.actor_name || "command line",
        `${entry.old} → ${entry.new}`,
        entry.source,
      ]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        line.append(cell);
      }
      const actions = document.createElement("td");
      if (row.dataset.writable === "true" && row.dataset.source !== "pinned") {
        const restore = document.createElement("button");
        restore.type = "button";
        restore.className = "restore";
        restore.textContent = "Restore";
        restore.setAttribute("aria-label", `Restore ${entry.old} (from before this change)`);
        restore.addEventListener("click", () => restoreEntry(row, entry));
        actions.append(restore);
      }
      line.append(actions);
      body.append(line);
    }
    panel.append(table);
  }

  async function restoreEntry(row, entry) {
    setError(row, "");
    const answer = await api("POST", `/api/settings/history/${entry.id}/restore/`);
    if (answer.status === 200) {
      show(row, answer.body.value, sourceOf(answer));
      setStatus(row, `Restored the value from before change ${entry.id}.`);
      await loadHistory(row);
    } else {
      setError(row, messages(answer.body));
    }
  }

  // -- live updates ------------------------------------------------------------------------

  function liveStatus(text) {
    document.getElementById("live-status").textContent = text;
  }

  function applyChange(entry) {
    if (entry.kind !== "global" && entry.user !== me) return;
    const row = document.querySelector(
      `li.setting[data-kind="${entry.kind}"][data-key="${CSS.escape(entry.key)}"]`
    );
    if (!row) return;
    if (entry.actor === me && (row.dataset.value === entry.new || row.dataset.protected === "true")) {
      return; // this page's own write, already shown
    }
    show(row, entry.new, "stored");
    setError(row, "");
    const who = entry.actor === me ? "you" : entry.actor_name || "the command line";
    setStatus(row, `Changed by ${who} just now.`);
    row.classList.remove("flash");
    void row.offsetWidth; // restart the highlight
    row.classList.add("flash");
    const panel = row.querySelector(".history");
    if (!panel.hidden) loadHistory(row);
  }

  function listen() {
    if (!window.EventSource) {
      liveStatus("Live updates: not supported by this browser.");
      return;
    }
    const source = new EventSource("/api/settings/events/");
    source.addEventListener("open", () => liveStatus("Live updates: on."));
    source.addEventListener("change", (event) => applyChange(JSON.parse(event.data)));
    source.addEventListener("error", () => {
      liveStatus(
        source.readyState === EventSource.CLOSED
          ? "Live updates: not available from this server; reload to see others' changes."
          : "Live updates: reconnecting…"
      );
    });
  }

  // -- search ------------------------------------------------------------------------------

  function search(text) {
    const terms = text.toLowerCase().split(/[\s,]+/).filter(Boolean);
    let shown = 0;
    for (const row of document.querySelectorAll("#global li.setting")) {
      const match = terms.every((term) => row.dataset.search.includes(term));
      row.hidden = !match;
      if (match) shown += 1;
    }
    for (const category of document.querySelectorAll("#global .category")) {
      category.hidden = !category.querySelector("li.setting:not([hidden])");
    }
    document.getElementById("search-count").textContent = terms.length
      ? `${shown} setting(s) match.`
      : "";
  }

  // -- tokens ------------------------------------------------------------------------------

  function tokenLine(token) {
    const line = document.createElement("tr");
    line.dataset.tokenId = token.id;
    const created = (token.created || new Date().toISOString()).slice(0, 10);
    for (const [text, className] of [
      [token.name || "—", ""],
      [created, ""],
      [token.expiry, ""],
      [token.status || "live", "token-status"],
    ]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      if (className) cell.className = className;
      line.append(cell);
    }
    const actions = document.createElement("td");
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "revoke";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-label", `Revoke token ${token.name}`);
    actions.append(revoke);
    line.append(actions);
    return line;
  }

  async function createToken(event) {
    event.preventDefault();
    const input = document.getElementById("token-name");
    const error = document.getElementById("token-error");
    error.textContent = "";
    const answer = await api("POST", "/api/user/tokens/", { name: input.value });
    if (answer.status !== 201) {
      error.textContent = messages(answer.body);
      return;
    }
    const token = answer.body;
    for (const line of document.querySelectorAll("#token-table tbody tr")) {
      // the server revoked the live token of the same name
      if (line.cells[0].textContent === token.name && line.querySelector(".revoke")) {
        markRevoked(line);
      }
    }
    document.querySelector("#token-table tbody").append(tokenLine(token));
    const secret = document.getElementById("new-secret");
    secret.querySelector(".secret-name").textContent = token.name;
    document.getElementById("secret-value").value = token.token;
    secret.hidden = false;
    document.getElementById("secret-value").select();
    input.value = "";
  }

  function markRevoked(line) {
    line.querySelector(".token-status").textContent = "revoked";
    const button = line.querySelector(".revoke");
    if (button) button.remove();
  }

  async function revokeToken(event) {
    const button = event.target.closest(".revoke");
    if (!button) return;
    const line = button.closest("tr");
    const answer = await api("DELETE", `/api/user/tokens/${line.dataset.tokenId}/`);
    const error = document.getElementById("token-error");
    if (answer.status === 204) {
      markRevoked(line);
      error.textContent = "";
    } else {
      error.textContent = messages(answer.body);
    }
  }

  // -- start -------------------------------------------------------------------------------

  rows().forEach(wireRow);
  document.getElementById("search").addEventListener("input", (event) => search(event.target.value));
  document.getElementById("new-token").addEventListener("submit", createToken);
  document.getElementById("token-table").addEventListener("click", revokeToken);
  listen();
})();
