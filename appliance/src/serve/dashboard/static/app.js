// The labboot dashboard: a single page over the appliance's API (/api/v1, see API.md).
//
// No framework and no build step. Views are chosen by the URL's fragment (#/boards,
// #/board/ID, #/jobs, #/job/N, #/submit, #/add-board) and built with DOM calls: every string
// from the server goes into the page as a text node or an attribute value, never as markup.
// The API token lives in this tab's sessionStorage and goes with every call as
// "Authorization: Bearer"; any 401 brings the login form back with the server's message.
"use strict";

const TOKEN_KEY = "labboot.token";
const REFRESH_MS = 3000;
const ARCHES = ["arm64", "arm", "x86_64", "x86", "riscv"];

// ---------------------------------------------------------------------------------------------
// DOM helpers

function $(id) {
  return document.getElementById(id);
}

// el("a", {href: "#/x", class: "c", onclick: f}, "text", child…): an element whose children are
// nodes or text (strings and numbers become text nodes; null, undefined and false are skipped).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      node.className = value;
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "value") {
      node.value = value;
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  appendChildren(node, children);
  return node;
}

function appendChildren(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) appendChildren(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

// A value for a table cell: "—" for nothing.
function show(value) {
  return value === null || value === undefined || value === "" ? "—" : String(value);
}

// A coloured label; the class is the value reduced to letters, digits and '-'.
function badge(value) {
  const text = show(value);
  return el("span", {class: "badge " + text.toLowerCase().replace(/[^a-z0-9-]/g, "")}, text);
}

function boardLink(id) {
  return id ? el("a", {href: "#/board/" + encodeURIComponent(id)}, id) : "—";
}

function jobLink(id, text) {
  return id === null || id === undefined ? "—" : el("a", {href: "#/job/" + encodeURIComponent(id)}, text || "job " + id);
}

// "2026-12-04T13:00:00Z" as "2026-12-04 13:00:00Z".
function when(iso) {
  return iso ? String(iso).replace("T", " ") : "—";
}

// "12 s ago" with the exact time as a tooltip.
function ago(iso) {
  if (!iso) return el("span", {class: "muted"}, "never");
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return show(iso);
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  const text = s < 90 ? `${s} s ago`
    : s < 5400 ? `${Math.round(s / 60)} min ago`
    : s < 172800 ? `${Math.round(s / 3600)} h ago`
    : `${Math.round(s / 86400)} d ago`;
  return el("span", {title: when(iso)}, text);
}

function size(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MiB` : `${bytes} bytes`;
}

// A <table> with a header row and body rows; `rows` are arrays of cells (nodes or text), each
// optionally {cells, dataset}.
function table(id, headers, rows, empty) {
  const body = el("tbody");
  for (const row of rows) {
    const cells = Array.isArray(row) ? row : row.cells;
    body.appendChild(el("tr", {dataset: Array.isArray(row) ? null : row.dataset},
      cells.map((c) => el("td", {}, c))));
  }
  if (rows.length === 0) {
    body.appendChild(el("tr", {}, el("td", {class: "empty", colspan: headers.length}, empty || "none")));
  }
  return el("table", {id}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), body);
}

// A <dl> of label/value pairs (pairs whose value is undefined are left out).
function fields(id, pairs) {
  const list = el("dl", {class: "fields", id});
  for (const [label, value] of pairs) {
    if (value === undefined) continue;
    list.append(el("dt", {}, label), el("dd", {}, value === null ? "—" : value));
  }
  return list;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// The server's one-line error: {"error": "…"} or the body's text.
async function errorText(resp) {
  const body = await resp.text().catch(() => "");
  try {
    const v = JSON.parse(body);
    if (v && typeof v.error === "string") return v.error;
  } catch (_) {
    // not JSON: the text itself
  }
  return body.trim() || `HTTP ${resp.status} ${resp.statusText}`;
}

// fetch() of an API path with the bearer token; a non-2xx answer throws an ApiError with the
// server's message, and a 401 also logs out.
async function apiFetch(path, options) {
  const opts = Object.assign({}, options || {});
  const headers = new Headers(opts.headers || {});
  headers.set("Authorization", "Bearer " + (token() || ""));
  opts.headers = headers;
  let resp;
  try {
    resp = await fetch("/api/v1" + path, opts);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "the appliance does not answer: " + e.message);
  }
  if (resp.ok) return resp;
  const message = await errorText(resp);
  if (resp.status === 401) loggedOut(message);
  throw new ApiError(resp.status, message);
}

const api = {
  get: (path, signal) => apiFetch(path, {signal}).then((r) => r.json()),
  text: (path, signal) => apiFetch(path, {signal}).then((r) => r.text()),
  post: (path, body) => apiFetch(path, {
    method: "POST",
    headers: body === undefined ? {} : {"Content-Type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then((r) => r.json()),
};

// ---------------------------------------------------------------------------------------------
// Login

function loggedOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin(message);
}

function showLogin(message) {
  leaveView();
  $("nav").hidden = true;
  $("banner").hidden = true;
  $("view").replaceChildren();
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-token").focus();
}

async function onLogin(event) {
  event.preventDefault();
  const typed = $("login-token").value.trim();
  if (!typed) return;
  sessionStorage.setItem(TOKEN_KEY, typed);
  $("login-error").textContent = "";
  try {
    await apiFetch("/boards");
  } catch (e) {
    // A 401 has already brought the form back with the server's message.
    if (e.status !== 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      $("login-error").textContent = e.message;
    }
    return;
  }
  $("login-token").value = "";
  $("login").hidden = true;
  if (!location.hash || location.hash === "#/") location.hash = "#/boards";
  else route();
}

// ---------------------------------------------------------------------------------------------
// Views: one at a time; leaving it stops its timers and aborts its requests.

let current = null;

function leaveView() {
  if (!current) return;
  current.controller.abort();
  current.timers.forEach(clearInterval);
  current.cleanups.forEach((f) => f());
  current = null;
}

function enterView() {
  leaveView();
  const controller = new AbortController();
  current = {controller, signal: controller.signal, timers: [], cleanups: []};
  return current;
}

function alive(ctx) {
  return current === ctx;
}

function showBanner(message) {
  $("banner").textContent = message;
  $("banner").hidden = !message;
}

// Shows a failed refresh in the banner (aborts and 401s say nothing more).
function report(ctx, e) {
  if (e.name === "AbortError" || e.status === 401 || !alive(ctx)) return;
  showBanner(e.message);
}

// Runs `fn` now and every `ms` while the view lives, never two at once.
function every(ctx, ms, fn) {
  let busy = false;
  const tick = async () => {
    if (busy || !alive(ctx)) return;
    busy = true;
    try {
      await fn();
      if (alive(ctx)) showBanner("");
    } catch (e) {
      report(ctx, e);
    } finally {
      busy = false;
    }
  };
  tick();
  ctx.timers.push(setInterval(tick, ms));
  return tick;
}

const routes = [
  [/^#\/boards$/, "boards", viewBoards],
  [/^#\/board\/([^/]+)$/, "boards", viewBoard],
  [/^#\/jobs$/, "jobs", viewJobs],
  [/^#\/job\/(\d+)$/, "jobs", viewJob],
  [/^#\/submit$/, "submit", viewSubmit],
  [/^#\/add-board$/, "add-board", viewAddBoard],
];

function route() {
  if (!token()) {
    showLogin("");
    return;
  }
  $("login").hidden = true;
  $("nav").hidden = false;
  showBanner("");
  const hash = location.hash || "#/boards";
  for (const [pattern, nav, view] of routes) {
    const m = pattern.exec(hash);
    if (!m) continue;
    let args;
    try {
      args = m.slice(1).map(decodeURIComponent);
    } catch (_) {
      break;
    }
    const ctx = enterView();
    for (const a of document.querySelectorAll("nav a[data-nav]")) {
      a.classList.toggle("current", a.dataset.nav === nav);
    }
    $("view").replaceChildren();
    view(ctx, ...args);
    return;
  }
  location.replace("#/boards");
}

// ---------------------------------------------------------------------------------------------
// Boards

// A reservation as text, whatever its shape: a string, or an object's non-empty fields.
function reservationText(r) {
  if (r === null || r === undefined || r === "") return "—";
  if (typeof r !== "object") return String(r);
  return Object.entries(r)
    .filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ") || "—";
}

// "on", "off" (switched off by the appliance: power saving or a release) or "unknown".
function powerBadge(p) {
  if (p === undefined || p === null) return "—";
  const b = badge(`power ${p}`);
  b.dataset.power = p;
  return b;
}

function boardsTable(boards) {
  const reservations = boards.some((b) => Object.prototype.hasOwnProperty.call(b, "reservation"));
  const headers = ["Board", "Device type", "State", "Health", "Power", "Last check-in", "Current job"];
  if (reservations) headers.push("Reservation");
  // A lab of several appliances (one shared database): which one serves each board.
  const several = new Set(boards.map((b) => b.appliance || "")).size > 1;
  if (several) headers.push("Appliance");
  const rows = boards.map((b) => {
    const cells = [
      [boardLink(b.id), b.cloned ? [" ", badge("cloned")] : null, b.approved ? null : [" ", badge("not approved")]],
      show(b.device_type),
      badge(b.state),
      badge(b.health),
      powerBadge(b.powered),
      ago(b.last_checkin),
      jobLink(b.current_job),
    ];
    if (reservations) cells.push(reservationText(b.reservation));
    if (several) cells.push(show(b.appliance));
    return {cells, dataset: {board: b.id}};
  });
  return table("boards", headers, rows, "no boards yet: add one, or name them in appliance.yaml");
}

function viewBoards(ctx) {
  const updated = el("span", {class: "muted", id: "boards-updated"});
  const summary = el("p", {id: "queue-summary", class: "muted"});
  const holder = el("div");
  $("view").append(el("h1", {}, "Boards"), summary, holder, el("p", {}, updated));
  every(ctx, REFRESH_MS, async () => {
    const [boards, health] = await Promise.all([
      api.get("/boards", ctx.signal),
      api.get("/health", ctx.signal),
    ]);
    if (!alive(ctx)) return;
    holder.replaceChildren(boardsTable(boards));
    summary.replaceChildren(`${health.boards} boards · `,
      el("a", {href: "#/jobs"}, `${health.queued} queued, ${health.running} running`),
      ` · labboot ${health.version}${health.appliance ? " on " + health.appliance : ""}`);
    updated.textContent = `updated ${new Date().toLocaleTimeString()}, every ${REFRESH_MS / 1000} s`;
  });
}

function viewBoard(ctx, id) {
  const path = "/boards/" + encodeURIComponent(id);
  const status = el("p", {id: "board-action-status", class: "muted"});
  const info = el("div");
  const events = el("div");
  const jobs = el("div");
  const maintenance = el("button", {id: "maintenance-toggle", type: "button", class: "secondary"}, "Maintenance");
  const approve = el("button", {id: "approve", type: "button", class: "secondary", hidden: true}, "Approve");
  let board = null;

  const act = async (button, what, actionPath) => {
    button.disabled = true;
    status.className = "muted";
    status.textContent = `${what}…`;
    try {
      await api.post(actionPath);
      if (!alive(ctx)) return;
      status.className = "ok";
      status.textContent = `${what}: done`;
      refresh();
    } catch (e) {
      if (e.status === 401 || !alive(ctx)) return;
      status.className = "error";
      status.textContent = `${what}: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  };
  const powerButtons = ["on", "off", "cycle"].map((action) => {
    const b = el("button", {type: "button", dataset: {power: action}, class: action === "on" ? "" : "secondary"},
      `Power ${action}`);
    b.addEventListener("click", () => act(b, `power ${action}`, `${path}/power/${action}`));
    return b;
  });
  maintenance.addEventListener("click", () => {
    const on = !(board && board.state === "maintenance");
    act(maintenance, `maintenance ${on ? "on" : "off"}`, `${path}/maintenance/${on ? "on" : "off"}`);
  });
  approve.addEventListener("click", () => act(approve, "approve", `${path}/approve`));

  $("view").append(
    el("h1", {}, "Board ", el("span", {id: "board-id"}, id)),
    el("div", {class: "buttons"}, powerButtons, maintenance, approve),
    status, info,
    consolePanel(ctx, id),
    el("h2", {}, "Recent events ", el("span", {class: "muted"}, "(newest first)")), events,
    el("h2", {}, "Recent jobs"), jobs);

  const refresh = every(ctx, REFRESH_MS, async () => {
    const [b, recent] = await Promise.all([
      api.get(path, ctx.signal),
      api.get("/jobs?limit=20&board=" + encodeURIComponent(id), ctx.signal),
    ]);
    if (!alive(ctx)) return;
    board = b;
    const i = b.info || {};
    const has = (k) => Object.prototype.hasOwnProperty.call(b, k);
    info.replaceChildren(fields("board-fields", [
      ["device type", show(b.device_type)],
      ["state", badge(b.state)],
      ["health", badge(b.health)],
      ["power", powerBadge(b.powered)],
      ["console", b.console ? [b.console.connected ? "connected" : "down (reconnecting)",
        `, ${b.console.reconnects} reconnect${b.console.reconnects === 1 ? "" : "s"}`] : "none configured"],
      ["approved", b.approved ? "yes" : "no"],
      ["from the config", b.from_config ? "yes" : "no (added or discovered)"],
      ["served by", show(b.appliance)],
      ["MAC", show(b.mac)],
      ["address", show(b.address)],
      ["cloned card", b.cloned ? [badge("cloned"), " second card from ", b.cloned] : "—"],
      ["current job", jobLink(b.current_job)],
      ["last check-in", b.last_checkin ? [ago(b.last_checkin), " (", when(b.last_checkin), ")"] : "never"],
      ["master boot", when(b.master_boot)],
      ["reservation", has("reservation") ? reservationText(b.reservation) : undefined],
      ["kernel", i.kernel === undefined ? undefined : show(i.kernel)],
      ["CPUs", i.cpus === undefined ? undefined : show(i.cpus)],
      ["memory", i.memory_kb === undefined ? undefined : `${Math.round(i.memory_kb / 1024)} MiB`],
      ["addresses", Array.isArray(i.addresses) ? show(i.addresses.join(", ")) : undefined],
    ]));
    maintenance.textContent = b.state === "maintenance" ? "Leave maintenance" : "Enter maintenance";
    approve.hidden = b.approved && !b.cloned;
    events.replaceChildren(table("board-events", ["Time", "Kind", "Message"],
      (b.events || []).map((e) => [when(e.time), e.kind, e.message]), "no events"));
    jobs.replaceChildren(jobsTable("board-jobs", recent, false));
  });
}

// A board's live console, read-only until "Take the keyboard": a WebSocket to
// /boards/ID/console with the token in the query (a browser cannot set headers on one). A plain
// GET first tells why a console is refused (426 means "upgrade": all is well).
const CONSOLE_KEEP = 200000;

function consolePanel(ctx, id) {
  const path = `/boards/${encodeURIComponent(id)}/console`;
  const screen = el("pre", {id: "console", class: "log console", tabindex: "0"});
  const status = el("span", {id: "console-status", class: "muted"}, "connecting…");
  const take = el("button", {id: "console-take", type: "button", class: "secondary", disabled: true},
    "Take the keyboard");
  const text = {rest: ""};
  let ws = null;
  let writer = false;
  let timer = null;

  const say = (message, cls) => {
    status.className = cls || "muted";
    status.textContent = message;
  };
  const setWriter = (on) => {
    writer = on;
    take.textContent = on ? "Give the keyboard back" : "Take the keyboard";
    screen.classList.toggle("typing", on);
    if (on) screen.focus();
  };
  const print = (chunk) => {
    const atEnd = screen.scrollTop + screen.clientHeight >= screen.scrollHeight - 4;
    screen.append(consoleText(text, chunk));
    if (screen.textContent.length > CONSOLE_KEEP) {
      screen.textContent = screen.textContent.slice(-CONSOLE_KEEP / 2);
    }
    if (atEnd) screen.scrollTop = screen.scrollHeight;
  };
  const retry = () => {
    if (alive(ctx)) timer = setTimeout(connect, 3000);
  };
  const connect = async () => {
    try {
      await apiFetch(path, {signal: ctx.signal});
    } catch (e) {
      if (e.name === "AbortError" || e.status === 401 || !alive(ctx)) return;
      if (e.status !== 426) {
        say(e.message, e.status === 409 ? "muted" : "error");
        if (e.status !== 404 && e.status !== 409) retry();
        return;
      }
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/api/v1${path}?token=${encodeURIComponent(token() || "")}`);
    const decoder = new TextDecoder();
    socket.binaryType = "arraybuffer";
    ws = socket;
    socket.onopen = () => {
      screen.replaceChildren();
      text.rest = "";
      take.disabled = false;
    };
    socket.onmessage = (m) => {
      if (typeof m.data !== "string") {
        print(decoder.decode(new Uint8Array(m.data), {stream: true}));
        return;
      }
      let v;
      try {
        v = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (v.board !== undefined) {
        say(!v.connected ? "the line is down (reconnecting)"
          : v.writer ? `connected; the keyboard is held by ${v.writer}` : "connected", v.connected ? "ok" : "muted");
      }
      if (v.writer === true || v.writer === false) {
        setWriter(v.writer);
        if (v.error === undefined) say(v.writer ? "you have the keyboard" : "connected", "ok");
      }
      if (typeof v.error === "string") say(v.error, "error");
      if (typeof v.lagged === "number") print(`\n[${v.lagged} chunks lost: this page fell behind]\n`);
    };
    socket.onclose = (e) => {
      if (ws === socket) ws = null;
      setWriter(false);
      take.disabled = true;
      if (!alive(ctx)) return;
      say(`disconnected${e.reason ? ": " + e.reason : ""}; reconnecting…`);
      retry();
    };
  };

  take.addEventListener("click", () => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(writer ? {release: true} : {take: true}));
  });
  const send = (s) => {
    if (writer && ws && ws.readyState === WebSocket.OPEN) ws.send(new TextEncoder().encode(s));
  };
  screen.addEventListener("keydown", (e) => {
    if (!writer || e.isComposing) return;
    const keys = keyBytes(e);
    if (keys === null) return;
    e.preventDefault();
    send(keys);
  });
  screen.addEventListener("paste", (e) => {
    if (!writer) return;
    e.preventDefault();
    send(e.clipboardData.getData("text").replace(/\r?\n/g, "\r"));
  });
  ctx.cleanups.push(() => {
    clearTimeout(timer);
    if (ws) ws.close();
  });
  connect();
  return el("div", {},
    el("h2", {}, "Console"), el("div", {class: "buttons"}, take, status), screen);
}

// What a key typed on the console sends, as a terminal would; null for keys it leaves alone.
function keyBytes(e) {
  if (e.metaKey) return null;
  const special = {Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A",
    ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F",
    Delete: "\x1b[3~"};
  if (e.ctrlKey && !e.altKey) {
    const c = e.key.length === 1 ? e.key.toUpperCase().charCodeAt(0) : 0;
    return c >= 64 && c <= 95 ? String.fromCharCode(c - 64) : null;
  }
  if (special[e.key]) return special[e.key];
  if (e.key.length === 1) return (e.altKey ? "\x1b" : "") + e.key;
  return null;
}

// Console text for the screen: escape sequences and control characters out (newline and tab
// kept); a sequence cut at the end of a chunk waits in state.rest for the next one.
function consoleText(state, chunk) {
  let t = state.rest + chunk;
  const cut = /\x1b(\[[\x20-\x3f]*|\][^\x07\x1b]*)?$/.exec(t);
  state.rest = cut && cut[0].length < 256 ? cut[0] : "";
  if (cut) t = t.slice(0, cut.index);
  return t
    .replace(/\x1b\[[\x20-\x3f]*[@-~]/g, "")
    .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)/g, "")
    .replace(/\x1b./g, "")
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
}

// ---------------------------------------------------------------------------------------------
// Jobs

function jobsTable(id, jobs, withBoard) {
  const headers = ["Job", "Name", "State", "Health", "Device type"];
  if (withBoard) headers.push("Board");
  headers.push("Priority", "Submitted", "Ended");
  const rows = jobs.map((j) => {
    const cells = [jobLink(j.id, String(j.id)), show(j.name), badge(j.state), badge(j.health), show(j.device_type)];
    if (withBoard) cells.push(boardLink(j.board));
    cells.push(show(j.priority), when(j.submitted), when(j.ended));
    return {cells, dataset: {job: String(j.id)}};
  });
  return table(id, headers, rows, "no jobs");
}

function viewJobs(ctx) {
  const filter = el("select", {id: "jobs-state"},
    ["", "queued", "running", "canceling", "finished"].map((s) => el("option", {value: s}, s || "any state")));
  const holder = el("div");
  $("view").append(
    el("h1", {}, "Jobs"),
    el("div", {class: "buttons"}, el("label", {for: "jobs-state"}, "Show"), filter,
      el("a", {href: "#/submit"}, "Submit a job")),
    holder);
  const refresh = every(ctx, REFRESH_MS, async () => {
    const state = filter.value;
    const jobs = await api.get("/jobs?limit=100" + (state ? "&state=" + encodeURIComponent(state) : ""), ctx.signal);
    if (alive(ctx) && filter.value === state) holder.replaceChildren(jobsTable("jobs", jobs, true));
  });
  filter.addEventListener("change", refresh);
}

// One logs.yaml line ("- {dt: …, lvl: …, msg: …}", JSON inside a YAML flow item) as the CLI
// prints it: "HH:MM:SS lvl msg". A line that does not parse is shown as it is.
function humanLogLine(line) {
  let item = line.trimStart();
  if (item.startsWith("-")) item = item.slice(1).trimStart();
  const entry = parseFlowItem(item);
  if (!entry || typeof entry !== "object" || (entry.msg === undefined && entry.lvl === undefined)) {
    return {lvl: "", text: stripControls(line)};
  }
  const dt = typeof entry.dt === "string" ? entry.dt : "";
  const time = dt.length >= 19 && "Tt ".includes(dt[10]) ? dt.slice(11, 19) : dt || "--:--:--";
  const lvl = typeof entry.lvl === "string" ? entry.lvl : "-";
  let msg = entry.msg;
  if (msg === null || msg === undefined) msg = "";
  else if (typeof msg === "object" && !Array.isArray(msg)) {
    msg = Object.keys(msg).sort()
      .map((k) => `${k}=${typeof msg[k] === "string" ? msg[k] : JSON.stringify(msg[k])}`)
      .join(" ");
  } else if (typeof msg !== "string") msg = JSON.stringify(msg);
  const text = `${stripControls(time)} ${stripControls(lvl).padEnd(8)} ${stripControls(msg)}`;
  return {lvl, text: text.trimEnd()};
}

// YAML double-quoted escapes that JSON lacks, rewritten for JSON.parse.
const YAML_ESCAPES = {e: "\\u001b", "0": "\\u0000", a: "\\u0007", v: "\\u000b", N: "\\u0085",
  _: "\\u00a0", L: "\\u2028", P: "\\u2029", " ": " ", "/": "/", "\t": "\\t"};

function parseFlowItem(text) {
  try {
    return JSON.parse(text);
  } catch (_) {
    const json = text.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (all, esc) => {
      if (esc[0] === "x" && esc.length === 3) return "\\u00" + esc.slice(1);
      return Object.prototype.hasOwnProperty.call(YAML_ESCAPES, esc) ? YAML_ESCAPES[esc] : all;
    });
    try {
      return JSON.parse(json);
    } catch (_) {
      return null;
    }
  }
}

// Text without terminal escape sequences and control characters (tab kept).
function stripControls(s) {
  return String(s)
    .replace(/\x1b\[[^@-~]*[@-~]?/g, "")
    .replace(/\x1b\][^\x07\x1b]*(\x07|\x1b\\)?/g, "")
    .replace(/\x1b./g, "")
    .replace(/[\x00-\x08\x0a-\x1f\x7f]/g, "");
}

// Reads a text/event-stream body and calls onEvent({event, id, data}) per event. Lines end
// with LF or CRLF (what the appliance sends); comments (keep-alives) are skipped.
async function readEventStream(body, onEvent) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = {event: "", id: undefined, data: []};
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let start = 0;
    let nl;
    while ((nl = buffer.indexOf("\n", start)) >= 0) {
      let line = buffer.slice(start, nl);
      start = nl + 1;
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (event.data.length > 0) {
          onEvent({event: event.event || "message", id: event.id, data: event.data.join("\n")});
        }
        event = {event: "", id: undefined, data: []};
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let v = colon < 0 ? "" : line.slice(colon + 1);
      if (v.startsWith(" ")) v = v.slice(1);
      if (field === "data") event.data.push(v);
      else if (field === "event") event.event = v;
      else if (field === "id") event.id = v;
    }
    buffer = buffer.slice(start);
  }
}

// Follows a job's live log (fetch + a stream reader: EventSource cannot send the bearer
// header), resuming after the last line seen when the connection drops, until the `end` event.
async function followLog(ctx, id, box, status, onEnd) {
  let lastId = null;
  while (alive(ctx)) {
    try {
      const headers = {Accept: "text/event-stream"};
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const resp = await apiFetch(`/jobs/${id}/logs/stream`, {headers, signal: ctx.signal});
      status.textContent = "live";
      let ended = false;
      await readEventStream(resp.body, (ev) => {
        if (ev.id !== undefined) lastId = ev.id;
        if (ev.event === "log") appendLogLine(box, ev.data);
        else if (ev.event === "end") {
          ended = true;
          let job = null;
          try {
            job = JSON.parse(ev.data);
          } catch (_) {
            // the job is read again below
          }
          onEnd(job);
        }
      });
      if (ended) {
        status.textContent = "the job has ended";
        return;
      }
      status.textContent = "the stream closed; reconnecting…";
    } catch (e) {
      if (e.name === "AbortError" || e.status === 401 || !alive(ctx)) return;
      if (e.status === 404) {
        status.textContent = e.message;
        return;
      }
      status.textContent = `the stream failed (${e.message}); reconnecting…`;
    }
    await sleep(2000);
  }
}

function appendLogLine(box, raw) {
  if (!raw.trim()) return;
  const {lvl, text} = humanLogLine(raw);
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  box.appendChild(el("div", {class: "line lvl-" + lvl.replace(/[^a-z0-9-]/gi, "")}, text));
  if (atBottom) box.scrollTop = box.scrollHeight;
}

// results.yaml (a list of flat mappings, LAVA's export) as rows; nested mappings (metadata)
// are skipped. null when the text is not that shape.
function parseResults(text) {
  const items = [];
  let item = null;
  for (const raw of text.split("\n")) {
    if (!raw.trim() || raw.startsWith("#")) continue;
    let line = raw;
    if (line.startsWith("- ")) {
      item = {};
      items.push(item);
      line = "  " + line.slice(2);
    } else if (line === "[]") {
      return [];
    }
    if (!item) return null;
    const m = /^ {2}([A-Za-z_][\w-]*):(?: (.*))?$/.exec(line);
    if (m) item[m[1]] = m[2] === undefined ? "" : yamlScalar(m[2]);
  }
  return items;
}

function yamlScalar(s) {
  if (s.length >= 2 && s.startsWith("'") && s.endsWith("'")) return s.slice(1, -1).replace(/''/g, "'");
  if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) {
    const v = parseFlowItem(s);
    return typeof v === "string" ? v : s;
  }
  if (s === "|" || s === "|-" || s === ">" || s === ">-") return "(several lines: see results.yaml)";
  return s;
}

function measurement(v) {
  if (v === undefined || v === "" || v === "None") return "";
  const n = Number(v);
  return Number.isFinite(n) ? String(n) : v;
}

function resultsView(text) {
  const items = parseResults(text);
  const raw = el("details", {}, el("summary", {}, "results.yaml"), el("pre", {class: "text"}, text));
  if (!items) return [el("pre", {class: "text", id: "results-text"}, text)];
  const rows = items.map((r) => ({
    cells: [show(r.suite), show(r.name), badge(r.result), measurement(r.measurement), r.unit || ""],
    dataset: {case: r.name || ""},
  }));
  return [table("results-table", ["Suite", "Test case", "Result", "Measurement", "Unit"], rows, "no results"), raw];
}

// The pipeline tree (`description.yaml`): one nested list item per action, with its level,
// name, timeout and retries; the description as the item's tooltip.
function pipelineList(nodes) {
  const list = el("ul", {class: "pipeline"});
  for (const n of nodes || []) {
    const meta = [];
    if (n.timeout != null) meta.push(`timeout ${n.timeout} s`);
    if (n.max_retries > 1) meta.push(`${n.max_retries} tries`);
    const item = el("li", {title: n.description || ""},
      el("span", {class: "level"}, show(n.level)), " ",
      el("span", {class: "action"}, show(n.name)),
      meta.length ? el("span", {class: "muted"}, ` (${meta.join(", ")})`) : "");
    if (n.pipeline && n.pipeline.length) item.append(pipelineList(n.pipeline));
    list.append(item);
  }
  return list;
}

async function loadPipeline(ctx, id, box) {
  try {
    const t = await api.get(`/jobs/${id}/pipeline`, ctx.signal);
    if (!alive(ctx)) return;
    const note = t.agent
      ? "runs through the board's agent in the master image (no deploy or boot)"
      : `built for ${t.board}'s device`;
    box.replaceChildren(el("p", {class: "muted"}, note), pipelineList(t.pipeline));
  } catch (e) {
    if (e.status === 401) return report(ctx, e);
    if (alive(ctx)) box.replaceChildren(el("p", {class: "muted"}, e.message));
  }
}

function viewJob(ctx, id) {
  const title = el("span", {id: "job-name", class: "muted"});
  const cancel = el("button", {id: "job-cancel", type: "button", class: "danger", hidden: true}, "Cancel the job");
  const status = el("span", {id: "job-action-status", class: "muted"});
  const info = el("div");
  const logStatus = el("span", {id: "log-status", class: "muted"}, "connecting…");
  const log = el("pre", {id: "job-log", class: "log"});
  const results = el("div", {id: "job-results"}, el("p", {class: "muted"}, "no results yet"));
  const yaml = el("pre", {id: "job-yaml", class: "text"});
  const tree = el("div", {id: "job-pipeline"}, el("p", {class: "muted"}, "loading…"));
  $("view").append(
    el("h1", {}, `Job ${id} `, title),
    el("div", {class: "buttons"}, cancel, status),
    info,
    el("h2", {}, "Log ", logStatus), log,
    el("h2", {}, "Results"), results,
    el("h2", {}, "Pipeline"), tree,
    el("h2", {}, "Job definition"), yaml);

  let finished = false;
  const render = (job) => {
    title.textContent = job.name || "";
    finished = job.state === "finished";
    cancel.hidden = finished || job.state === "canceling";
    info.replaceChildren(fields("job-fields", [
      ["state", badge(job.state)],
      ["health", badge(job.health)],
      ["device type", show(job.device_type)],
      ["board", boardLink(job.board)],
      ["appliance", show(job.appliance)],
      ["priority", show(job.priority)],
      ["submitted", when(job.submitted)],
      ["started", when(job.started)],
      ["ended", when(job.ended)],
      ["error type", job.error_type ? el("span", {class: "error"}, job.error_type) : "—"],
      ["error", job.error ? el("span", {class: "error"}, job.error) : "—"],
    ]));
  };
  const loadResults = async () => {
    // The results are stored before the job finishes; a few tries cover a slow store.
    for (let attempt = 0; attempt < 5 && alive(ctx); attempt++) {
      try {
        const text = await api.text(`/jobs/${id}/results`, ctx.signal);
        if (alive(ctx)) results.replaceChildren(...resultsView(text));
        return;
      } catch (e) {
        if (e.status !== 404) return report(ctx, e);
        if (alive(ctx)) results.replaceChildren(el("p", {class: "muted"}, e.message));
      }
      await sleep(2000);
    }
  };
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      render(await api.post(`/jobs/${id}/cancel`));
      status.textContent = "cancel requested";
    } catch (e) {
      if (e.status !== 401) status.textContent = e.message;
    } finally {
      cancel.disabled = false;
    }
  });

  (async () => {
    try {
      const job = await api.get(`/jobs/${id}`, ctx.signal);
      if (!alive(ctx)) return;
      render(job);
      yaml.textContent = job.yaml || "";
      loadPipeline(ctx, id, tree);
      if (finished) loadResults();
      // The fields follow the job until it ends (the log stream's end event ends it too).
      const poll = every(ctx, REFRESH_MS, async () => {
        if (finished) return;
        const j = await api.get(`/jobs/${id}`, ctx.signal);
        if (alive(ctx)) render(j);
      });
      followLog(ctx, id, log, logStatus, (endJob) => {
        if (endJob && endJob.state) render(endJob);
        else poll();
        loadResults();
      });
    } catch (e) {
      if (e.status === 404) info.replaceChildren(el("p", {class: "error"}, e.message));
      else report(ctx, e);
    }
  })();
}

// ---------------------------------------------------------------------------------------------
// Submit a job

function viewSubmit(ctx) {
  const text = el("textarea", {id: "job-definition", spellcheck: "false",
    placeholder: "device_type: …\njob_name: …\ntimeouts: …\nactions: …"});
  const file = el("input", {id: "job-file", type: "file", accept: ".yaml,.yml,text/yaml"});
  const error = el("pre", {id: "submit-error", class: "error"});
  const button = el("button", {id: "job-submit", type: "submit"}, "Submit");
  let fileName = null;
  file.addEventListener("change", async () => {
    const f = file.files[0];
    if (!f) return;
    fileName = f.name;
    text.value = await f.text();
  });
  const form = el("form", {id: "submit-form"},
    el("label", {for: "job-definition"}, "Job definition (LAVA YAML)"), text,
    el("div", {class: "buttons"}, el("label", {for: "job-file"}, "or load a file"), file),
    button, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      const query = fileName ? "?file=" + encodeURIComponent(fileName) : "";
      const resp = await apiFetch("/jobs" + query, {
        method: "POST",
        headers: {"Content-Type": "application/yaml"},
        body: text.value,
      });
      const job = await resp.json();
      if (alive(ctx)) location.hash = "#/job/" + job.id;
    } catch (e) {
      // The server's error line, as it is (file:line: key: reason).
      if (e.status !== 401 && alive(ctx)) error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  $("view").append(el("h1", {}, "Submit a job"), form);
  text.focus();
}

// ---------------------------------------------------------------------------------------------
// Add a board

function viewAddBoard(ctx) {
  const id = el("input", {id: "new-board-id", required: true, maxlength: 64, placeholder: "rpi4-07", autocomplete: "off"});
  const types = el("datalist", {id: "device-types"});
  const type = el("input", {id: "new-board-type", required: true, list: "device-types", placeholder: "labboot-qemu-arm64",
    autocomplete: "off"});
  const arch = el("select", {id: "new-board-arch"}, ARCHES.map((a) => el("option", {value: a}, a)));
  const mac = el("input", {id: "new-board-mac", placeholder: "optional, e.g. 02:00:00:00:00:07", autocomplete: "off"});
  const error = el("p", {id: "add-board-error", class: "error"});
  const button = el("button", {id: "new-board-submit", type: "submit"}, "Add the board");
  const result = el("section", {id: "new-board"});
  const form = el("form", {id: "add-board-form"},
    el("label", {for: "new-board-id"}, "Board id (letters, digits, '.', '_', '-')"), id,
    el("label", {for: "new-board-type"}, "Device type"), type, types,
    el("label", {for: "new-board-arch"}, "Architecture of the card's boot script"), arch,
    el("label", {for: "new-board-mac"}, "MAC address the card sets (for boards whose MAC is not unique)"), mac,
    button, error);
  $("view").append(el("h1", {}, "Add a board"),
    el("p", {class: "note"}, "The appliance creates the board (approved) and a card token for it. ",
      "The token is shown once; the appliance keeps only its hash."),
    form, result);

  api.get("/boards", ctx.signal).then((boards) => {
    const known = [...new Set(boards.map((b) => b.device_type).filter(Boolean))].sort();
    types.replaceChildren(...known.map((t) => el("option", {value: t})));
  }).catch((e) => report(ctx, e));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      const board = await api.post("/boards", {id: id.value.trim(), device_type: type.value.trim()});
      if (!alive(ctx)) return;
      result.replaceChildren(...newBoardView(ctx, board, arch.value, mac.value.trim()));
      form.reset();
    } catch (e) {
      if (e.status !== 401 && alive(ctx)) error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
}

// The board's SD-card image as a blob. A download that breaks off half-way (the body's
// stream fails, not the request) is asked for once more: the image is the same every time.
async function cardImage(board, arch, mac, status) {
  for (let attempt = 1; ; attempt++) {
    const resp = await apiFetch(`/boards/${encodeURIComponent(board.id)}/sdcard`, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token: board.token, arch, mac: mac || null}),
    });
    try {
      return await resp.blob();
    } catch (e) {
      if (attempt >= 2) throw new Error(`the card image's download broke off twice: ${e.message}`);
      console.warn(`card image: download broke off (${e.message}); asking again`);
      status.textContent = "the download broke off; asking again…";
    }
  }
}

// The new board's identity, its one-time token and the card download.
function newBoardView(ctx, board, arch, mac) {
  const status = el("p", {id: "card-status", class: "muted"});
  const link = el("a", {id: "card-link", hidden: true}, "");
  const download = el("button", {id: "card-download", type: "button"}, "Download the SD-card image");
  let url = null;
  download.addEventListener("click", async () => {
    download.disabled = true;
    status.className = "muted";
    status.textContent = "building the card image…";
    try {
      const blob = await cardImage(board, arch, mac, status);
      if (!alive(ctx)) return;
      if (url) URL.revokeObjectURL(url);
      url = URL.createObjectURL(blob);
      ctx.cleanups.push(() => URL.revokeObjectURL(url));
      const name = `${board.id}-sdcard.img`;
      link.href = url;
      link.download = name;
      link.textContent = `Save ${name} again`;
      link.hidden = false;
      link.click();
      status.className = "ok";
      status.textContent = `${name} (${size(blob.size)}) downloaded: write it to the board's SD card ` +
        `(dd if=${name} of=/dev/sdX bs=4M conv=fsync).`;
    } catch (e) {
      if (e.status !== 401 && alive(ctx)) {
        status.className = "error";
        status.textContent = e.message;
      }
    } finally {
      download.disabled = false;
    }
  });
  return [
    el("h2", {}, "Board ", boardLink(board.id), " added"),
    fields("new-board-fields", [
      ["board id", el("code", {id: "new-board-created-id"}, board.id)],
      ["device type", show(board.device_type)],
      ["card architecture", arch],
      ["card MAC", show(mac)],
      ["card token", el("code", {id: "new-board-token", class: "secret"}, board.token)],
    ]),
    el("p", {class: "note"}, "Copy the token now if you want to write the card later with ",
      el("code", {}, `labboot sdcard --board-id ${board.id} --token TOKEN --arch ${arch}` +
        (mac ? ` --mac ${mac}` : "") + " -o card.img"), ": it is not shown again."),
    el("div", {class: "buttons"}, download, link),
    status,
  ];
}

// ---------------------------------------------------------------------------------------------
// Start

$("login-form").addEventListener("submit", onLogin);
$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin("");
});
window.addEventListener("hashchange", route);
route();
