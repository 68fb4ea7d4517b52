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
  "interrupted", "summary", "message", "taken_over"];

const LABELS = {
  queued: "queued", waiting_for_limiter: "queued", launching: "launching",
  retrying: "launching (retrying)", launched: "launched", changed: "changed",
  running: "running", stopped: "stopped", failed: "failed", skipped: "skipped",
  waiting_for_quota: "waiting for quota", cancelled: "not launched",
  launched_elsewhere: "launched by another run",
};

const STATES = {
  queued: "Queued", running: "Running", cancelling: "Cancelling", succeeded: "Succeeded",
  partly_done: "Partly done", failed: "Failed", cancelled: "Cancelled", interrupted: "Interrupted",
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
  stateTd.dataset.label = "State";
  stateTd.append(state);
  tr.append(th, stateTd);
  for (const [f, label] of [["instance", "Instance"], ["zone", "Zone"], ["retries", "Retries"], ["error", "Problem"]]) {
    const td = document.createElement("td");
    td.dataset.field = f;
    td.dataset.label = label;
    tr.append(td);
  }
  // Rows stay in name order, as the server renders them.
  const after = [...tbody.children].find((r) => r.dataset.name > w.name);
  tbody.insertBefore(tr, after || null);
  return tr;
}

// The estimate of the time left, as of when it was read: it counts down between events.
const eta = { s: null, at: 0 };

function showEta() {
  const left = eta.s == null ? null : eta.s - (Date.now() - eta.at) / 1000;
  setText(document.getElementById("eta"), left != null && left >= 1 ? "About " + human(left) + " remaining" : "");
}

function render(root, launch) {
  const p = launch.progress || {};
  const skipped = p.skipped || 0;
  // Workspaces skipped before they began are not counted in what this launch makes.
  const total = Math.max(0, (p.total || 0) - skipped);
  const done = p.completed || 0;
  setText(document.getElementById("done"), String(done));
  setText(document.getElementById("total"), String(total));
  setText(document.getElementById("skipped"), skipped > 0 ? " · " + skipped + " skipped" : "");
  const bar = document.getElementById("launch-bar");
  if (bar) bar.setAttribute("aria-label", done + " of " + total + " launched");
  const fill = document.querySelector("#launch-bar .fill");
  if (fill) fill.setAttribute("width", total ? ((done / total) * 100).toFixed(1) : "0");
  let rate = "";
  if (p.rate_per_minute != null) rate = "Rate limited to " + Math.round(p.rate_per_minute) + " per minute";
  if (p.rate_limited) rate += " · waiting for the rate limit";
  setText(document.getElementById("rate"), rate);
  eta.s = p.estimated_time_remaining_s;
  eta.at = Date.now();
  showEta();
  const waiting = p.waiting_for_quota || 0;
  setText(document.getElementById("waiting"), waiting > 0
    ? waiting + " waiting for quota: " + (waiting === 1 ? "it launches" : "they launch") +
      " in name order as soon as the quota has room"
    : "");
  const state = document.getElementById("launch-state");
  if (state && state.className !== "badge " + launch.state) badge(state, launch.state, STATES[launch.state] || launch.state);
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
  const connection = document.getElementById("connection");
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
          // The finished (or interrupted) page shows the summary, or Resume.
          window.location.reload();
        }
      }
    } catch (e) {
      // The server is out of reach: the event stream says so and reconnects.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }
  // EventSource reconnects by itself after a drop, with the last event id it saw
  // (Last-Event-ID), so no event is missed or repeated.
  const source = new EventSource(api + "/events");
  for (const name of EVENTS) source.addEventListener(name, refresh);
  source.addEventListener("stopping", () =>
    setText(connection, "prism serve is stopping. This page reconnects when it is back."));
  source.addEventListener("open", () => {
    if (connection.textContent) {
      setText(connection, "");
      refresh();
    }
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      refresh();
    } else if (!over) {
      setText(connection, "Connection to prism serve lost. Reconnecting…");
      // What the page last heard may no longer hold: no estimate until it hears again.
      eta.s = null;
      showEta();
    }
  });
  setInterval(showEta, 1000);
  refresh();
}

// A form with data-confirm-title asks first, in a dialog (without the script, it is sent
// as is).
function confirmFirst(form) {
  let confirmed = false;
  form.addEventListener("submit", (e) => {
    if (confirmed) return;
    e.preventDefault();
    const submitter = e.submitter;
    const dialog = document.createElement("dialog");
    dialog.className = "confirm";
    dialog.setAttribute("aria-labelledby", "confirm-title");
    const title = document.createElement("h2");
    title.id = "confirm-title";
    title.textContent = form.dataset.confirmTitle;
    const text = document.createElement("p");
    text.textContent = form.dataset.confirmText || "";
    const actions = document.createElement("div");
    actions.className = "actions";
    const yes = document.createElement("button");
    yes.type = "button";
    yes.className = "button " + (form.id === "cancel-form" ? "danger" : "primary");
    yes.textContent = (submitter && submitter.name === "wait_for_quota" ? submitter.textContent.trim() : "") ||
      form.dataset.confirmButton || "Confirm";
    const no = document.createElement("button");
    no.type = "button";
    no.className = "button";
    no.textContent = form.dataset.confirmKeep || "Cancel";
    actions.append(yes, no);
    dialog.append(title, text, actions);
    document.body.append(dialog);
    dialog.addEventListener("close", () => dialog.remove());
    no.addEventListener("click", () => dialog.close());
    yes.addEventListener("click", () => {
      confirmed = true;
      dialog.close();
      form.requestSubmit(submitter || undefined);
    });
    dialog.showModal();
    no.focus();
  });
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
  for (const form of document.querySelectorAll("form[data-confirm-title]")) confirmFirst(form);
  const opened = document.getElementById("request-form");
  if (opened && window.location.hash === "#request-form") document.getElementById("desired").focus();
});
