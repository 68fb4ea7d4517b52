// prism serve: follows a launch live with EventSource and checks the quota form.
// The pages work without it; it only saves reloads.
"use strict";

// Errors and blocked content are recorded for the browser tests (and the console).
window.prismErrors = [];
window.addEventListener("error", (e) => window.prismErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.prismErrors.push(String(e.reason)));
document.addEventListener("securitypolicyviolation", (e) =>
  window.prismErrors.push("CSP blocked " + e.violatedDirective + " " + e.blockedURI));

const EVENTS = ["started", "queued", "rate_limited", "rate_changed", "launching", "retrying",
  "zone_full", "zone_unavailable", "zone_available", "type_fallback", "launched", "confirmed", "launched_elsewhere",
  "changed", "running", "stopped", "failed", "skipped", "waiting_for_quota", "quota_available",
  "interrupted", "summary", "message"];

const LABELS = {
  queued: "queued", waiting_for_limiter: "queued", launching: "launching",
  retrying: "launching (retrying)", launched: "launched", changed: "changed",
  running: "running", stopped: "stopped", failed: "failed", skipped: "skipped",
  waiting_for_quota: "waiting for quota", cancelled: "not launched",
  launched_elsewhere: "launched by another run",
};

const STATES = {
  queued: "Queued", running: "Running", cancelling: "Cancelling", succeeded: "Succeeded",
  failed: "Failed", cancelled: "Cancelled", interrupted: "Interrupted",
};

function human(s) {
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

function badge(el, state, text) {
  el.className = "badge " + state;
  setText(el, text);
}

function cell(tr, field) {
  return tr.querySelector('[data-field="' + field + '"]');
}

function row(tbody, w) {
  let tr = tbody.querySelector('tr[data-name="' + CSS.escape(w.name) + '"]');
  if (tr) return tr;
  tr = document.createElement("tr");
  tr.dataset.name = w.name;
  const th = document.createElement("th");
  th.scope = "row";
  th.textContent = w.name;
  const state = document.createElement("span");
  state.dataset.field = "state";
  const stateTd = document.createElement("td");
  stateTd.append(state);
  tr.append(th, stateTd);
  for (const f of ["instance", "zone", "retries", "error"]) {
    const td = document.createElement("td");
    td.dataset.field = f;
    tr.append(td);
  }
  // Rows stay in name order, as the server renders them.
  const after = [...tbody.children].find((r) => r.dataset.name > w.name);
  tbody.insertBefore(tr, after || null);
  return tr;
}

function render(root, launch) {
  const p = launch.progress || {};
  const total = p.total || 0;
  const done = p.completed || 0;
  setText(document.getElementById("done"), String(done));
  setText(document.getElementById("total"), String(total));
  const fill = document.querySelector("#launch-bar .fill");
  if (fill) fill.setAttribute("width", total ? ((done / total) * 100).toFixed(1) : "0");
  let rate = "";
  if (p.rate_per_minute != null) rate = "Rate limited to " + Math.round(p.rate_per_minute) + " per minute";
  if (p.rate_limited) rate += " · waiting for the rate limit";
  setText(document.getElementById("rate"), rate);
  const eta = p.estimated_time_remaining_s;
  setText(document.getElementById("eta"), eta != null && eta >= 1 ? "About " + human(eta) + " remaining" : "");
  const waiting = p.waiting_for_quota || 0;
  setText(document.getElementById("waiting"), waiting > 0
    ? waiting + " waiting for quota: " + (waiting === 1 ? "it launches" : "they launch") +
      " in name order as soon as the quota has room"
    : "");
  const state = document.getElementById("launch-state");
  if (state) badge(state, launch.state, STATES[launch.state] || launch.state);
  const queued = document.getElementById("queued-note");
  if (queued && launch.state !== "queued") queued.remove();
  const tbody = document.querySelector("#workspaces tbody");
  for (const w of launch.workspaces || []) {
    const tr = row(tbody, w);
    badge(cell(tr, "state"), w.state, LABELS[w.state] || w.state);
    const inst = cell(tr, "instance");
    if (w.instance_id && inst.textContent !== w.instance_id) {
      const code = document.createElement("code");
      code.textContent = w.instance_id;
      inst.replaceChildren(code);
    }
    setText(cell(tr, "zone"), w.availability_zone || "");
    setText(cell(tr, "retries"), String(Math.max(0, (w.attempts || 0) - 1)));
    const err = cell(tr, "error");
    if (w.error && w.error.title && !err.dataset.shown) {
      const strong = document.createElement("strong");
      strong.textContent = w.error.title;
      const more = document.createElement("span");
      more.className = "muted";
      more.textContent = w.error.what_you_can_do || "";
      err.replaceChildren(strong, document.createElement("br"), more);
      err.dataset.shown = "1";
    } else if (!w.error && err.textContent !== (w.skip_reason || "")) {
      // Why it was skipped or waits; cleared once a waiting workspace goes ahead.
      const span = document.createElement("span");
      span.className = "muted";
      span.textContent = w.skip_reason || "";
      err.replaceChildren(...(w.skip_reason ? [span] : []));
    }
  }
}

function follow(root) {
  const id = root.dataset.id;
  const api = "/api/v1/workspaces/bulk-launch/" + encodeURIComponent(id);
  let busy = false;
  let again = false;
  let over = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(api, { credentials: "same-origin", cache: "no-store" });
      if (r.ok) {
        const launch = await r.json();
        render(root, launch);
        if (!["queued", "running", "cancelling"].includes(launch.state) && !over) {
          over = true;
          source.close();
          // The finished page shows the summary.
          window.location.reload();
        }
      }
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  const source = new EventSource(api + "/events");
  for (const name of EVENTS) source.addEventListener(name, refresh);
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) refresh();
  });
  refresh();
}

function checkIncrease(form) {
  form.noValidate = true;
  const desired = form.querySelector("#desired");
  const reason = form.querySelector("#reason");
  const desiredError = form.querySelector("#desired-error");
  const reasonError = form.querySelector("#reason-error");
  form.addEventListener("submit", (e) => {
    const current = parseFloat(form.dataset.current);
    const value = parseFloat(desired.value);
    const tooLow = !(value > current);
    const noReason = reason.value.trim() === "";
    setText(desiredError, tooLow ? "The desired value must be above the current value (" + current + ")." : "");
    setText(reasonError, noReason ? "Say why the quota should be raised." : "");
    desired.setAttribute("aria-invalid", String(tooLow));
    reason.setAttribute("aria-invalid", String(noReason));
    if (tooLow || noReason) {
      e.preventDefault();
      (tooLow ? desired : reason).focus();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const launch = document.getElementById("launch");
  if (launch && launch.dataset.active === "true") follow(launch);
  const form = document.getElementById("increase");
  if (form) checkIncrease(form);
  const status = document.getElementById("status");
  if (status) status.addEventListener("change", () => status.form.submit());
  const opened = document.getElementById("request-form");
  if (opened && window.location.hash === "#request-form") document.getElementById("desired").focus();
});
