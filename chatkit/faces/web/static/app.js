// chatkit's chat page: plain JavaScript, no build step, no library.
// It speaks the JSON protocol (docs/protocol.md), one frame per WebSocket text message.
// Rule: whatever comes from the server (messages, nicks, room names) is inserted with
// textContent, never as HTML.
"use strict";

const NICK_KEY = "chatkit.nick";
const VIEWS_KEY = "chatkit.views"; // {nick, rooms, privates}: where that nick was, for the next login
const BACKOFF_FIRST = 500; // ms before the first reconnect; doubles up to BACKOFF_MAX
const BACKOFF_MAX = 30000;
const PAGE = 50; // messages asked for per scroll-back page
const HEARTBEAT = 20000; // ms between the page's pings (state.heartbeat; tests shorten it)
const PONG_WAIT = 10000; // ms a pong may take before the connection counts as lost (state.pongWait)
const MAX_LINES = 2000; // lines a view keeps (state.maxLines; older ones come back by scrolling)
const LOCAL_COMMANDS = [
  { name: "query", usage: "/query NICK", help: "open a private conversation with NICK" },
  { name: "close", usage: "/close", help: "close this private conversation (or a room you were removed from)" },
];
// A short heading per error code (docs/protocol.md, "Error codes"); the server's own
// text follows it. Codes a plugin adds get "error".
const ERRORS = {
  bad_frame: "Bad frame", too_many_lines: "Too many lines", bad_text: "Text refused",
  bad_encoding: "Bad encoding", line_too_long: "Too long", not_logged_in: "Not logged in",
  bad_nick: "Bad nick", nick_taken: "Nick taken", bad_room: "Bad room name",
  not_in_room: "Not in that room", no_such_room: "No such room", no_such_nick: "No such nick",
  unknown_command: "Unknown command", bad_usage: "Usage", forbidden: "Refused",
  dropped: "Not sent", not_stored: "Not stored, try again", internal_error: "Server error",
  rate_limited: "Slow down", login_timeout: "Login timed out", server_busy: "Server busy",
  server_full: "Server full", too_many_connections: "Too many connections",
  nick_registered: "Nick registered", bad_password: "Wrong password",
  auth_throttled: "Too many tries", not_identified: "Not identified", no_account: "No such account",
  registration_closed: "Registration closed", not_invited: "Not invited",
  no_accounts: "No accounts here", not_room_operator: "Not a room operator",
  not_server_operator: "Not a server operator", banned: "Banned", muted: "Muted",
  invite_only: "Invite only", room_locked: "Room locked",
};
// What the top of a private conversation says when its history cannot be shown.
const NO_PRIVATE_HISTORY = "This server does not keep private messages: earlier ones cannot be shown.";
const NO_HISTORY = "This server keeps no history: earlier messages cannot be shown.";
const IDENTIFY_FOR_HISTORY = "Earlier messages show once you identify: /identify PASSWORD (or /register PASSWORD).";

const $ = (id) => document.getElementById(id);
const state = {
  ws: null,
  listening: null, // the AbortController of state.ws's listeners (hangUp removes them)
  nick: null, // as the server keeps it, once welcomed
  password: null, // the login form's, for reconnects; never stored
  resume: null, // the welcome's resume secret: a reconnect takes the nick back from a dead connection
  loggedIn: false,
  everWelcomed: false,
  quitting: false,
  backoff: BACKOFF_FIRST,
  timer: null,
  lastId: 0, // the greatest message id seen: `since` when reconnecting
  resumed: false, // whether this connection's hello had `since`: its rooms replay only newer
  helloRooms: [], // the rooms (folded) this connection's hello named: not joined again
  maxLine: 8192, // bytes of a frame the server takes (the welcome's max_line)
  views: new Map(), // "#room" or "@nick" -> view
  current: null,
  joined: [], // rooms to be in again after a reconnect
  switchTo: null,
  commands: [],
  helpPending: false,
  whoPending: new Set(), // rooms whose /who is the page's own (not shown)
  away: new Map(), // fold(nick) -> away message, of members seen away (marked in the list)
  asked: [], // private conversations' history requests awaiting their page: {view, kind}
  passwordTyped: null, // {command, password} of a /register, /identify or /passwd sent
  auto: [], // the page's own commands after a (re)connect, paced under flood control
  autoTimer: null,
  autoTokens: 0, // how many of them may go now (sendAuto)
  autoAt: 0,
  sent: [],
  sentAt: 0,
  tab: null, // a Tab's cycle through commands: {typed, at}
  refusals: 0, // this reconnect's hellos refused so far
  maxLines: MAX_LINES,
  heartbeat: HEARTBEAT,
  pongWait: PONG_WAIT,
  beatTimer: null,
  countdown: null, // the interval that counts a reconnect's wait down, each second
  // The user's messages the server has not sent back yet (it sends each to its room, the
  // sender included, and a private one to both sides: docs/protocol.md), oldest first:
  // {view, text, action, line, mark, lost}. Lost: refused, or its connection went first.
  unconfirmed: [],
  refilled: null, // the one of them whose text notSent put back into the box
  restored: false, // whether the first login looked for the rooms remembered
  chosen: null, // the nick the user last asked for (keepNick)
  myAway: null, // the user's away message (/away), set again after a reconnect
};

// -- helpers --------------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// As the server compares names (NFKC, case folded), for each character: upper then lower
// case folds "ß" and "ẞ" to "ss" and "ς" to "σ", as Unicode's case folding does; a
// dotless "ı" stays itself (its upper case is "I"), as it does there.
function fold(name) {
  let folded = "";
  for (const ch of String(name).normalize("NFKC")) {
    folded += ch === "ı" ? ch : ch.toUpperCase().toLowerCase();
  }
  return folded.replaceAll("ß", "ss").normalize("NFKC");
}

// A nick's colour: one of twelve hues 30° apart, at the theme's lightness (--nick-l: 4.5:1
// on either background, whatever the hue), picked by the nick's FNV-1a hash. The hues go
// round the wheel in steps of 150°, so that nicks a character apart ("filler0",
// "filler1"), whose hashes differ by little, get hues far apart (a hash modulo 360 gave
// them neighbours, all but the same colour).
const NICK_HUES = [0, 150, 300, 90, 240, 30, 180, 330, 120, 270, 60, 210];

function nickColour(nick) {
  let hash = 0x811c9dc5; // FNV-1a, 32 bits, over the folded nick's UTF-8
  for (const byte of new TextEncoder().encode(fold(nick))) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return `hsl(${NICK_HUES[hash % NICK_HUES.length]} 65% var(--nick-l))`;
}

// A nick as shown: a message's wrapped, "<alice>", its brackets hidden from screen readers
// and a colon for them alone (read "alice: hello", not "less than alice greater than").
function nickEl(nick, wrap) {
  const span = el("bdi", "nick", wrap ? "" : String(nick));
  if (wrap) {
    const bracket = (text) => {
      const node = el("span", "", text);
      node.setAttribute("aria-hidden", "true");
      return node;
    };
    span.append(bracket("<"), String(nick), bracket(">"), el("span", "visually-hidden", ":"));
  }
  span.style.color = nickColour(nick);
  return span;
}

function timeEl(ts) {
  const when = ts ? new Date(ts) : new Date();
  const node = el("time", "", shortTime(when));
  node.dateTime = when.toISOString();
  node.title = when.toLocaleString([], { dateStyle: "full", timeStyle: "medium" });
  return node;
}

// A line's time as shown: the hour and minute if it is from today, the date too if not
// (a replay holds other days'), the year too if not from this year.
function shortTime(when) {
  const now = new Date();
  const hm = { hour: "2-digit", minute: "2-digit" };
  if (when.toDateString() === now.toDateString()) return when.toLocaleTimeString([], hm);
  const day = { day: "numeric", month: "short", ...hm };
  if (when.getFullYear() !== now.getFullYear()) day.year = "numeric";
  return when.toLocaleString([], day);
}

// Once the day changes (the page left open overnight), yesterday's lines say so.
let shownDay = new Date().toDateString();
function refreshTimes() {
  const today = new Date().toDateString();
  if (today === shownDay) return;
  shownDay = today;
  for (const node of document.querySelectorAll("#log time")) {
    node.textContent = shortTime(new Date(node.dateTime));
  }
}

// The bytes of `frame` as sent, if more than the server takes (it would close the
// connection): then nothing is sent, and the caller says so.
function tooLong(frame) {
  const size = new TextEncoder().encode(JSON.stringify(frame)).length;
  return size > state.maxLine ? size : 0;
}

function send(frame) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) {
    state.ws.send(JSON.stringify(frame));
    return true;
  }
  return false;
}

// The page's own commands (rejoining rooms, their /who) go out paced: a burst, then a
// few a second, under the server's flood control (20 at once, then 5 a second): a
// bucket of AUTO_BURST frames, refilled with one every AUTO_EVERY ms.
const AUTO_BURST = 10;
const AUTO_EVERY = 250; // ms
// `sent`, if given, is called once the frame has gone (a request's answer is expected from
// then on).
function sendAuto(frame, sent) {
  state.auto.push({ frame, sent });
  if (state.autoTimer === null) drainAuto();
}

function drainAuto() {
  state.autoTimer = null;
  const now = Date.now();
  state.autoTokens = Math.min(AUTO_BURST, state.autoTokens + (now - state.autoAt) / AUTO_EVERY);
  state.autoAt = now;
  while (state.autoTokens >= 1 && state.auto.length) {
    state.autoTokens -= 1;
    const { frame, sent } = state.auto.shift();
    if (send(frame) && sent) sent();
  }
  if (state.auto.length) state.autoTimer = setTimeout(drainAuto, AUTO_EVERY);
}

function setStatus(text, bad) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("bad", Boolean(bad));
}

// -- views: one per room and per private conversation -----------------------------------

function viewKey(kind, name) {
  return (kind === "room" ? "" : "@") + fold(name);
}

function getView(kind, name, create = true) {
  const key = viewKey(kind, name);
  let view = state.views.get(key);
  if (!view && create) {
    const pane = el("div", "pane");
    pane.hidden = true;
    pane.tabIndex = 0; // scrollable with the keyboard
    pane.setAttribute("role", "region"); // (not "log": that is live, and a replay is long)
    pane.setAttribute("aria-label", `Messages of ${name}`);
    pane.dataset.view = key;
    const older = el("div", "older", "");
    pane.append(older);
    view = { key, kind, name, pane, older, ids: new Set(), unread: 0, more: false,
             loading: false, oldest: null, members: new Set(), topic: "", joining: false,
             requests: [], atBottom: true };
    pane.addEventListener("scroll", () => {
      // (Where the reader is: at the bottom, a resize keeps it there. A scroll that a
      // resize made, before the resize is handled, says nothing of it.)
      if (view.seenHeight === undefined || pane.clientHeight === view.seenHeight) view.atBottom = nearBottom(pane);
      if (view.atBottom && view === state.current) $("jump").hidden = true;
      if (pane.scrollTop < 40) loadOlder(view);
    });
    $("log").append(pane);
    state.views.set(key, view);
    renderSidebar();
    if (kind === "private") loadLatest(view);
  }
  return view;
}

function dropView(view) {
  view.pane.remove();
  state.views.delete(view.key);
  if (state.current === view) {
    const next = state.views.values().next().value;
    state.current = null;
    if (next) show(next);
  }
  renderSidebar();
}

function show(view) {
  if (state.current) state.current.pane.hidden = true;
  state.current = view;
  view.pane.hidden = false;
  view.unread = 0;
  $("title").textContent = view.kind === "room" ? view.name : `private: ${view.name}`;
  // Focus stays in the box: say where what is typed now goes.
  if (state.loggedIn) announce(`Now in ${$("title").textContent}`);
  renderTopic();
  renderMembers();
  renderSidebar();
  toBottom(view);
  if (view.pane.scrollHeight <= view.pane.clientHeight) loadOlder(view);
}

// The view scrolled to its newest line (and no "new messages" control: nothing is below).
function toBottom(view) {
  view.pane.scrollTop = view.pane.scrollHeight;
  view.atBottom = true;
  view.seenHeight = view.pane.clientHeight;
  if (view === state.current) $("jump").hidden = true;
}

function renderTopic() {
  const view = state.current;
  const topic = view && view.kind === "room" ? view.topic || "" : "";
  $("topic").replaceChildren();
  linked($("topic"), topic);
  $("topic").title = topic;
}

function setAway(nick, text) {
  if (text) state.away.set(fold(nick), String(text));
  else state.away.delete(fold(nick));
}

// The members list: each a list item (a screen reader says how many), the commas between
// them for sight alone; sorted as the server compares names (ignoring case), as /who's
// are, joins and renames too.
function renderMembers() {
  const view = state.current;
  const members = $("members");
  members.replaceChildren();
  if (!view || view.kind !== "room") return;
  const sorted = [...view.members].map((n) => [fold(n), n])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [i, [, n]] of sorted.entries()) {
    if (i) {
      const comma = el("span", "", ", ");
      comma.setAttribute("aria-hidden", "true");
      members.append(comma);
    }
    const item = el("span", "", state.away.has(fold(n)) ? `${n} (away)` : String(n));
    item.setAttribute("role", "listitem");
    members.append(item);
  }
}

function renderSidebar() {
  // A button with the keyboard's focus is made anew: the new one takes the focus (it
  // fell back to the page's top, at every unread message).
  const focused = document.activeElement && document.activeElement.dataset
    ? document.activeElement.dataset.view : undefined;
  for (const [kind, list] of [["room", $("rooms")], ["private", $("privates")]]) {
    list.replaceChildren();
    for (const view of state.views.values()) {
      if (view.kind !== kind) continue;
      const button = el("button", "", "");
      button.type = "button";
      button.dataset.view = view.key;
      const name = el("span", "name", view.name);
      if (kind === "private") {
        // Seen as private where the "Private" heading is not (a phone's strip); a
        // screen reader has the heading.
        const at = el("span", "at", "@");
        at.setAttribute("aria-hidden", "true");
        name.prepend(at);
      }
      button.append(name);
      button.title = view.name; // (a long one is cut short)
      if (view.left) {
        // Removed from it (a kick, a refusal at a reconnect): the view stays until closed.
        button.classList.add("left");
        button.append(el("span", "left-mark", "removed"));
        button.title = `${view.name}: you are no longer in it`;
      }
      if (view.unread) {
        const badge = el("span", "unread", "");
        badge.append(el("span", "visually-hidden", "unread: "), String(view.unread));
        button.append(badge);
      }
      button.setAttribute("aria-current", String(view === state.current));
      button.addEventListener("click", () => {
        show(view);
        $("input").focus();
      });
      const item = el("li");
      item.append(button);
      list.append(item);
    }
  }
  if (focused !== undefined) {
    const again = document.querySelector(`#sidebar button[data-view="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
  remember();
  let unread = 0;
  for (const view of state.views.values()) unread += view.unread;
  document.title = unread ? `(${unread}) chatkit` : "chatkit";
  // On a phone's strip (CSS shows it there alone), at its edge: the badges scrolled out
  // of sight, counted; a click goes to the first conversation with unread messages.
  const total = $("unread-total");
  total.textContent = `${unread} unread`;
  total.hidden = !unread;
  $("me").textContent = state.nick ? `You are ${state.nick}` : "";
}

// The rooms the page is in and its private conversations, kept in the browser beside the
// nick: a login as that nick after a reload goes back to them (restore).
function remember() {
  if (!state.loggedIn || !state.nick) return;
  const privates = [...state.views.values()].filter((v) => v.kind === "private").map((v) => v.name);
  const nick = state.chosen || state.nick; // (the nick offered next time, restore's key)
  localStorage.setItem(VIEWS_KEY, JSON.stringify({ nick, rooms: state.joined, privates }));
}

// At the first login, as `nick`: what remember() kept for it, as if the page had been
// there all along (its hello names the rooms, as a reconnect's does; the conversations
// ask for their last page once welcomed).
function restore(nick) {
  let saved = null;
  try {
    saved = JSON.parse(localStorage.getItem(VIEWS_KEY) || "null");
  } catch {
    return;
  }
  if (!saved || typeof saved.nick !== "string" || fold(saved.nick) !== fold(nick)) return;
  if (Array.isArray(saved.rooms)) state.joined = saved.rooms.filter((r) => typeof r === "string");
  for (const name of Array.isArray(saved.privates) ? saved.privates : []) {
    if (typeof name === "string") getView("private", name);
  }
}

// The nick to offer at the next visit: the one the user chose (the login form's, a /nick
// or /identify NICK typed), when the server gives it; never one it renamed the page to
// unasked (GuestNN, another tab having logged in to the account).
function keepNick(nick) {
  if (state.chosen && fold(nick) === fold(state.chosen)) localStorage.setItem(NICK_KEY, nick);
}

function nearBottom(pane) {
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 30;
}

// Lines with an id (messages) are kept in id order, so a replay, a scroll-back page and a
// resume all land in place, and none twice; other lines go at the end.
function addLine(view, line, id) {
  const pane = view.pane;
  if (id !== undefined && id !== null) {
    if (view.ids.has(id)) return false;
    view.ids.add(id);
    line.dataset.id = String(id);
    if (view.oldest === null || id < view.oldest) view.oldest = id;
    if (id > state.lastId) state.lastId = id;
    let before = null;
    if (view.newest === undefined || id > view.newest) {
      view.newest = id; // live traffic and resumes: at the end, no search
    } else {
      for (const other of pane.querySelectorAll(".line[data-id]")) {
        if (Number(other.dataset.id) > id) {
          before = other;
          break;
        }
      }
    }
    if (before) {
      const height = pane.scrollHeight;
      const top = pane.scrollTop;
      pane.insertBefore(line, before);
      pane.scrollTop = top + (pane.scrollHeight - height); // what was shown stays put
      return true;
    }
  }
  const stick = nearBottom(pane);
  pane.append(line);
  if (stick || view !== state.current) {
    if (pane.childElementCount > state.maxLines + 1) trim(view);
    pane.scrollTop = pane.scrollHeight;
  } else {
    $("jump").hidden = false; // (scrolled up: a line arrived below, unseen)
  }
  return true;
}

// A view keeps its last state.maxLines lines (a busy room's page would grow for as long as
// it stays open): the oldest go while the reader is at the bottom, and scrolling back
// fetches them again where the server keeps history.
function trim(view) {
  const pane = view.pane;
  while (pane.childElementCount > state.maxLines + 1) {
    const first = view.older.nextElementSibling;
    if (first.dataset.id) view.ids.delete(Number(first.dataset.id));
    first.remove();
  }
  const oldest = pane.querySelector(".line[data-id]");
  view.oldest = oldest ? Number(oldest.dataset.id) : null;
  // (A room's history is there to fetch if the server has the history plugin: its /history
  // command; a conversation's, if a page of it came.)
  const kept = view.kind === "room" ? state.commands.some((c) => c.name === "history") : view.paged;
  if (kept && !view.unavailable && view.oldest !== null) {
    view.more = true;
    view.older.textContent = "Scroll up for earlier messages";
  }
}

function lineEl(kind, ts) {
  const line = el("div", `line ${kind}`);
  line.append(timeEl(ts));
  const body = el("span", "body");
  body.dir = "auto"; // right-to-left text reads from the right
  line.append(body);
  return [line, body];
}

// For screen readers (the panes are not live regions: a joined room's replay would be
// read out whole): each announcement is a node of its own, added to the live region, so
// that lines arriving together are all read (a text replaced within one frame was read
// once, the last), and the same text twice is read twice. The last few are kept.
const ANNOUNCED = 5;

function announce(text) {
  const region = $("announce");
  region.append(el("p", "", text));
  while (region.childElementCount > ANNOUNCED) region.firstElementChild.remove();
}

// `text`: a string, or a list of strings and nodes (names in their own bdi: see named).
function eventLine(view, text, ts, kind = "event") {
  if (!view) return null;
  const [line, body] = lineEl(kind, ts);
  if (Array.isArray(text)) body.append(...text);
  else body.textContent = text;
  addLine(view, line);
  // The open conversation's events, and errors wherever they are shown, are read out
  // as its messages are (a role=log would read them all).
  if (view === state.current || kind === "error") announce(body.textContent);
  return line;
}

// A nick, a room name or someone's text within a line of the page's: isolated (bdi), so
// that a right-to-left one neither turns the line around ("→ דוד joined #general") nor
// moves the words beside it.
function named(name) {
  return el("bdi", "", String(name));
}

// /help's answer as a table, a command and what it does on each row: its text is padded
// with spaces for a monospace font, whose columns zig-zag in the page's. The page's own
// commands (/query, /close) are there too.
function helpLine(view, commands) {
  if (!view) return;
  const [line, body] = lineEl("notice help");
  const table = el("table", "commands");
  table.append(el("caption", "", "Commands"));
  const head = table.createTHead().insertRow();
  for (const title of ["Command", "What it does"]) {
    const th = el("th", "", title);
    th.scope = "col";
    head.append(th);
  }
  const rows = table.createTBody();
  const sorted = [...commands].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const command of sorted) {
    const row = rows.insertRow();
    const name = el("th", "");
    name.scope = "row";
    name.append(el("code", "", usageOf(command)));
    const what = el("td", "", String(command.help || ""));
    what.dir = "auto";
    row.append(name, what);
  }
  body.append(table);
  addLine(view, line);
  announce(`Commands: ${sorted.length}, in a table in the conversation`);
}

// A message's text: its own direction (a Hebrew line reads from the right whoever wrote
// it), and each line after the first marked as the message's, so that none passes for a
// line of the page's own ("→ admin joined").
function textEl(text) {
  const [first, ...rest] = String(text).split("\n");
  const node = linked(el("span", "text"), first);
  node.dir = "auto";
  for (const more of rest) {
    const next = linked(el("span", "more"), more);
    next.dir = "auto";
    node.append("\n", next); // (the line break for a copy; the block breaks the line)
  }
  return node;
}

// Web addresses in a text: http and https ones, and www. ones (as https). Punctuation
// at the end (a sentence's full stop, a closing bracket) is not the address's, unless it
// closes a bracket the address opened: "(see wikipedia.org/wiki/A_(b))".
const URL_START = /\b(?:https?:\/\/|www\.)[^\s<>"]+/gi;
const CLOSING = { ")": "(", "]": "[", "}": "{" };
const WWW_SCHEME = "https:"; // (a www. address's)

function urlEnd(url) {
  while (url) {
    const last = url.charAt(url.length - 1);
    if (CLOSING[last]) {
      const opened = url.split(CLOSING[last]).length - 1;
      const closed = url.split(last).length - 1;
      if (closed <= opened) break; // (balanced: the address's own)
    } else if (!".,;:!?'*".includes(last)) {
      break;
    }
    url = url.slice(0, -1);
  }
  return url;
}

// Appends `text` to `node` as text, its web addresses as links (made as nodes, the
// address as text: never HTML); returns `node`.
function linked(node, text) {
  let at = 0;
  for (const match of String(text).matchAll(URL_START)) {
    const shown = urlEnd(match[0]);
    const href = /^www\./i.test(shown) ? `${WWW_SCHEME}//${shown}` : shown;
    let url = null;
    try {
      url = new URL(href);
    } catch {
      url = null;
    }
    if (!url || !/^https?:$/.test(url.protocol) || !url.hostname || /^www\.$/i.test(shown)) continue;
    if (match.index > at) node.append(text.slice(at, match.index));
    const link = el("a", "", shown);
    link.href = url.href;
    link.rel = "noopener noreferrer nofollow";
    link.target = "_blank";
    node.append(link);
    at = match.index + shown.length;
  }
  if (at < text.length) node.append(text.slice(at));
  return node;
}

function messageLine(view, frame, nick) {
  const kind = frame.action ? "message action" : frame.notice ? "message notice" : "message";
  const [line, body] = lineEl(kind + (frame.history ? " history" : ""), frame.ts);
  body.removeAttribute("dir"); // (the text has its own; the nick's must not set it)
  if (frame.action) {
    body.append("* ", nickEl(nick, false), " ", textEl(frame.text));
  } else {
    body.append(nickEl(nick, true), " ", textEl(frame.text));
  }
  const added = addLine(view, line, frame.id);
  if (added && !frame.history && (view === state.current || view.kind === "private")) {
    // For screen readers: the live message alone, said as it is shown (an action, a
    // notice); a private one in another view too, named so (it is addressed to you).
    const where = view === state.current ? "" : `(private, ${view.name}) `;
    const said = frame.action ? `* ${nick} ${frame.text}`
      : frame.notice ? `notice from ${nick}: ${frame.text}` : `${nick}: ${frame.text}`;
    announce(where + said);
  }
  if (frame.history && view.filling !== undefined && frame.id > view.gapTop) view.gapTop = frame.id;
  if (added && !frame.history && nick !== state.nick) {
    if (view !== state.current || document.hidden) {
      view.unread += 1;
      renderSidebar();
    }
  }
}

// A message the user sent (typed: as typed, a command's too), shown at once as
// "sending…" until the server's copy comes.
function pendingLine(view, text, action, typed) {
  const [line, body] = lineEl(action ? "message action pending" : "message pending");
  body.removeAttribute("dir"); // (as a message's)
  if (action) body.append("* ", nickEl(state.nick, false), " ", textEl(text));
  else body.append(nickEl(state.nick, true), " ", textEl(text));
  const mark = el("span", "sending", "sending…");
  body.append(" ", mark);
  addLine(view, line);
  toBottom(view); // (one's own message is seen sent, wherever the reader was)
  state.unconfirmed.push({ view, text, action: Boolean(action), typed, line, mark, lost: false });
}

// The server's copy (frame) of one of the user's messages: its "sending…" line goes (the
// copy is shown instead). Matched by its text, else (a filter changed it) the oldest
// waiting; a replayed one (history) by its text only. One marked not sent that arrived
// after all (a resume's replay brings it) goes too, and its text from the box.
function confirmed(view, frame) {
  const mine = state.unconfirmed.filter((u) => u.view === view && u.action === Boolean(frame.action));
  const same = mine.filter((u) => u.text === frame.text);
  const entry = frame.history ? same.find((u) => u.lost)
    : same.find((u) => !u.lost) || same[0] || mine.find((u) => !u.lost);
  if (entry) forget(entry);
  if (entry && entry.lost && $("input").value === entry.typed) {
    $("input").value = "";
    fitInput();
  }
}

function forget(entry) {
  state.unconfirmed.splice(state.unconfirmed.indexOf(entry), 1);
  entry.line.remove();
  if (state.refilled === entry) state.refilled = null;
}

// A message that did not reach its room (why: a few words): its line says so, and its
// text goes back into the box (refill) if the box is empty and the message was the open
// view's. True if it went back.
function notSent(entry, why, refill = true) {
  entry.lost = true;
  entry.line.classList.add("unsent");
  entry.mark.textContent = `not sent (${why})`;
  const input = $("input");
  if (refill && !input.value && entry.view === state.current) {
    state.refilled = entry; // (sent again from the box: its new line replaces this one)
    input.value = entry.typed;
    fitInput();
    return true;
  }
  return false;
}

function currentOrFirst() {
  return state.current || state.views.values().next().value || null;
}

function loadOlder(view) {
  if (view.kind === "private" && view.oldest === null && view.more && !view.loading) {
    loadLatest(view); // (its latest page failed: scrolling up asks for it again)
    return;
  }
  if (!view.more || view.loading || view.oldest === null || view.rejoining || view.left) return;
  view.loading = true;
  view.older.textContent = "Loading earlier messages…";
  const frame = { type: "history", before: view.oldest, limit: PAGE };
  if (view.kind === "room") {
    frame.room = view.name;
    if (!send(frame)) view.loading = false;
    else view.requests.push("older");
  } else {
    // Paced with the page's other requests, as its latest page is: one refused by
    // flood control would leave its answer expected, and the next taken for it.
    frame.with = view.name;
    sendAuto(frame, () => state.asked.push({ view, kind: "older" }));
  }
}

// Ask for what a room's view missed (a reconnect's, beyond its replay page; a kicked
// view's): the messages after view.filling, oldest first, a page at a time (the
// answer's highest id, view.gapTop, is where the next page starts). It walks up to
// the newest, filling every hole on the way; the ids already shown are not shown twice.
function fillGap(view) {
  view.gapTop = view.filling;
  view.loading = true;
  const frame = { type: "history", room: view.name, after: view.filling, oldest: true, limit: PAGE };
  if (send(frame)) {
    view.requests.push("gap");
  } else {
    view.loading = false;
    view.filling = undefined;
  }
}

// A private conversation's last page (rooms get theirs on joining): when it opens,
// after a reconnect, and after identifying. The page then scrolls back with loadOlder.
// Paced with the page's other own requests: thirty conversations opening at once (after
// a reconnect, or thirty people writing) would be refused by flood control.
function loadLatest(view) {
  if (view.kind !== "private" || view.loading || !state.loggedIn) return;
  view.loading = true;
  view.older.textContent = "Loading earlier messages…";
  sendAuto({ type: "history", with: view.name, limit: PAGE }, () => {
    state.asked.push({ view, kind: "latest" });
  });
}

// The page's own history request was refused (accounts: not identified; no history
// plugin): say so at the top of the conversation instead of as an error line.
function historyRefused(f) {
  if (f.code === "internal_error" && f.request === "history" && (f.room || f.with)) {
    // The store failed to read a page (it names which): that request is answered, and
    // scrolling up asks again.
    const view = f.room ? getView("room", f.room, false) : getView("private", f.with, false);
    if (!view) return false;
    if (f.room) view.requests.shift();
    else {
      const at = state.asked.findIndex((a) => a.view === view);
      if (at >= 0) state.asked.splice(at, 1);
    }
    view.loading = false;
    view.older.textContent = String(f.text);
    if (view.kind === "private" && view.oldest === null) view.more = true; // (asked again)
    return true;
  }
  if (!state.asked.length) return false;
  const text = String(f.text);
  const identify = f.code === "not_identified" && /history/.test(text);
  const none = f.code === "bad_frame" && text.includes("'history'");
  const nobody = f.code === "bad_usage" && text.startsWith("no such room or nick");
  if (!identify && !none && !nobody) return false;
  const { view } = state.asked.shift();
  view.loading = false;
  view.more = false;
  view.unavailable = identify ? "identify" : "none";
  view.older.textContent = identify ? IDENTIFY_FOR_HISTORY : none ? NO_HISTORY : text;
  return true;
}

// -- frames from the server -----------------------------------------------------------

const handlers = {
  welcome(f) {
    const again = state.everWelcomed; // a reconnect, not the first login
    state.nick = f.nick;
    state.loggedIn = true;
    state.away = new Map(); // (a new session is here; each room's /who says who is away)
    if (Number.isInteger(f.max_line)) state.maxLine = f.max_line;
    state.resume = typeof f.resume === "string" ? f.resume : null;
    state.everWelcomed = true;
    state.backoff = BACKOFF_FIRST;
    state.refusals = 0;
    keepNick(f.nick);
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    setStatus("connected");
    state.helpPending = true;
    clearTimeout(state.autoTimer);
    state.autoTimer = null;
    state.auto = [];
    // (The hello went already, at a line for itself and one for every four rooms it named.)
    state.autoTokens = Math.max(0, AUTO_BURST - 1 - Math.ceil(state.helloRooms.length / 4));
    state.autoAt = Date.now();
    sendAuto({ type: "say", text: "/help" });
    // Away is the connection's: a new one is back until told again (its reply says so).
    if (again && state.myAway) sendAuto({ type: "say", text: `/away ${state.myAway}` });
    const rooms = (f.rooms || []).map(fold);
    for (const room of state.joined) {
      // (One the hello named and the server refused is refused: its error says why.)
      if (rooms.includes(fold(room)) || (state.helloRooms || []).includes(fold(room))) continue;
      sendAuto({ type: "say", text: `/join ${room}` });
    }
    if (again) {
      // A room it had left (the default one, which a login joins): left again.
      for (const room of f.rooms || []) {
        if (!state.joined.some((r) => fold(r) === fold(room))) {
          sendAuto({ type: "say", text: `/part ${room}` });
        }
      }
    }
    for (const view of state.views.values()) {
      // (A room it was kicked from stays left: it is not rejoined, so not "rejoining".)
      if (view.kind !== "room" || !state.resumed || view.left) continue;
      // From where to fetch what it missed, if its replay says it missed more than a
      // page (or a fill was under way: from where that one had got to).
      view.unfilled = view.filling !== undefined;
      view.resumeFrom = view.unfilled ? view.filling : view.newest ?? 0;
      view.rejoining = true; // (no scroll-back until it is in the room again)
    }
    state.asked = [];
    for (const view of state.views.values()) {
      view.loading = false; // requests of a lost connection are never answered
      view.requests = [];
      view.filling = undefined;
      if (view.kind === "private") loadLatest(view);
    }
    // In no room (a login that restored private conversations only): the first of them.
    if (!state.current && !(f.rooms || []).length && state.views.size) show(state.views.values().next().value);
    renderSidebar();
    $("input").focus();
    heartbeat();
  },
  join(f) {
    setAway(f.nick, f.away); // (a join says whether the joiner is away)
    const known = getView("room", f.room, false);
    const view = known || getView("room", f.room);
    if (f.nick === state.nick) {
      view.name = f.room;
      view.rejoining = false;
      if (view.left) view.resumeFrom = view.newest ?? 0; // what was said while out: fetched
      view.left = false;
      view.shownTopic = known ? view.topic : null; // (a rejoin: not shown again if the same)
      view.topic = ""; // its topic frame follows this join if it has one
      view.joining = true;
      if (f.members) view.members = new Set(f.members);
      else {
        // The own join does not list the members (docs/protocol.md): ask /who, quietly.
        view.members = new Set([state.nick]);
        state.whoPending.add(fold(f.room));
        sendAuto({ type: "say", text: `/who ${f.room}` });
      }
      if (!state.joined.some((r) => fold(r) === fold(f.room))) state.joined.push(f.room);
      if (!state.current || (state.switchTo && fold(state.switchTo) === fold(f.room))) {
        state.switchTo = null;
        show(view);
      }
      renderMembers();
      renderSidebar();
      return;
    }
    view.members.add(f.nick);
    renderMembers();
    view.lastJoin = { nick: f.nick, line: eventLine(view, ["→ ", named(f.nick), " joined ", named(f.room)], f.ts) };
  },
  leave(f) {
    const rooms = f.rooms || [f.room];
    if (f.rooms) state.away.delete(fold(f.nick)); // (left the chat)
    for (const room of rooms) {
      const view = getView("room", room, false);
      if (!view) continue;
      if (f.nick === state.nick) {
        state.joined = state.joined.filter((r) => fold(r) !== fold(room));
        if (f.by) {
          // Kicked: the view stays, with why (its notice came before), until closed.
          view.left = true;
          view.members = new Set();
          // (The reason says who again, "kicked by OP: why": said once.)
          let reason = String(f.reason || "");
          const by = `kicked by ${f.by}`;
          if (reason === by) reason = "";
          else if (reason.startsWith(`${by}: `)) reason = reason.slice(by.length + 2);
          const why = reason ? [" (", named(reason), ")"] : [];
          const line = eventLine(view, ["← you were removed from ", named(room), " by ", named(f.by), ...why,
            "; /join ", named(room), " to go back"], f.ts, "notice");
          // Viewing another conversation: its button says so, and a screen reader is told.
          if (view !== state.current && line) announce(line.querySelector(".body").textContent);
          renderSidebar();
        } else {
          dropView(view);
        }
        continue;
      }
      view.members.delete(f.nick);
      const why = f.reason ? [" (", named(f.reason), ")"] : [];
      eventLine(view, ["← ", named(f.nick), " left ", named(room), ...why], f.ts);
    }
    renderMembers();
  },
  nick(f) {
    const away = state.away.get(fold(f.old));
    state.away.delete(fold(f.old));
    setAway(f.new, away);
    if (f.old === state.nick) {
      state.nick = f.new;
      keepNick(f.new); // (a rename the server made, GuestNN, is not the nick to offer)
    }
    for (const view of [...state.views.values()]) {
      if (view.kind === "room" && view.members.has(f.old)) {
        view.members.delete(f.old);
        view.members.add(f.new);
        eventLine(view, [named(f.old), " is now known as ", named(f.new)]);
      } else if (view.kind === "private" && fold(view.name) === fold(f.old)) {
        // The conversation goes on under the new nick (as IRC clients rename a query).
        const key = viewKey("private", f.new);
        if (key !== view.key && state.views.has(key)) continue; // one is open already
        state.views.delete(view.key);
        view.key = key;
        view.name = f.new;
        view.pane.dataset.view = key;
        view.pane.setAttribute("aria-label", `Messages of ${f.new}`);
        state.views.set(key, view);
        eventLine(view, [named(f.old), " is now known as ", named(f.new)]);
        if (view === state.current) $("title").textContent = `private: ${view.name}`;
      }
    }
    renderMembers();
    renderSidebar();
  },
  away(f) {
    setAway(f.nick, f.text);
    renderMembers();
  },
  topic(f) {
    // Sent when someone sets (or clears) it, and right after the own join if it has one.
    const view = getView("room", f.room, false);
    if (!view) return;
    view.topic = f.topic;
    if (view === state.current) renderTopic();
    // (Its web addresses as links, as a message's.)
    const topic = () => linked(el("bdi"), f.topic);
    if (f.join) {
      if (f.topic !== view.shownTopic) eventLine(view, ["topic: ", topic(), " (set by ", named(f.nick), ")"], f.ts);
    } else if (f.topic) eventLine(view, [named(f.nick), " set the topic: ", topic()], f.ts);
    else eventLine(view, [named(f.nick), " cleared the topic"], f.ts);
    view.joining = false;
  },
  message(f) {
    const view = getView("room", f.room);
    view.joining = false;
    if (fold(f.nick) === fold(state.nick)) confirmed(view, f);
    messageLine(view, f, f.nick);
  },
  private(f) {
    // A page of history the page asked for is that conversation's, whatever the nicks
    // (with accounts it holds what was said under one's earlier nicks too: either side
    // may be neither nick of now). Requests are answered in order: the first asked.
    // A page of history names its conversation (with): with accounts its messages may
    // be between earlier nicks of either side. A live one is the other side's.
    const other = f.with || (fold(f.from) === fold(state.nick) ? f.to : f.from);
    const view = getView("private", other);
    if (fold(f.from) === fold(state.nick)) confirmed(view, f);
    messageLine(view, f, f.from);
  },
  history(f) {
    const view = f.room ? getView("room", f.room, false) : getView("private", f.with, false);
    let asked = null;
    if (!f.room) {
      const at = state.asked.findIndex((a) => a.view === view);
      if (at >= 0) asked = state.asked.splice(at, 1)[0];
    }
    if (!view) return;
    view.loading = false;
    if (view.kind === "room") {
      // The page's own requests are answered in order; a frame for none ends a join's
      // replay (none comes for an empty replay).
      const request = view.requests.shift();
      if (request === "gap") {
        // A page of what it missed, oldest first: on past it, until none is left.
        if (f.more && view.gapTop > view.filling) {
          view.filling = view.gapTop;
          fillGap(view);
        } else {
          view.filling = undefined;
        }
        return;
      }
      if (request === undefined && view.resumeFrom !== undefined) {
        // A room rejoined (after a reconnect, or a kick): its replay's `more` says
        // whether it missed more than a page meanwhile, not whether scroll-back has.
        if (f.more || view.unfilled) {
          view.filling = view.resumeFrom;
          fillGap(view);
        }
        view.resumeFrom = undefined;
        view.unfilled = false;
        return;
      }
      if (request === undefined && view.askedLatest) return; // its asked page decides
      if (request === "latest") view.askedLatest = false;
    }
    if (f.stored === false && !f.count) {
      view.more = false;
      view.unavailable = "none";
      view.older.textContent = NO_PRIVATE_HISTORY;
      return;
    }
    view.unavailable = null;
    // A conversation's last page after a reconnect says nothing of what is above the
    // messages already shown: keep what the first page or a scroll-back said.
    if (!asked || asked.kind !== "latest" || !view.paged) view.more = Boolean(f.more);
    view.paged = true;
    view.older.textContent = view.more
      ? "Scroll up for earlier messages"
      : "This is the beginning of the conversation.";
    if (view === state.current && view.more && view.pane.scrollTop < 40) {
      // At the top still: the page did not fill the pane, or the reader scrolled up
      // while it was loading (that scroll asked for nothing). Ask for more at once.
      loadOlder(view);
    }
  },
  reply(f) {
    const typed = state.passwordTyped;
    if (typed && typed.command === f.command) {
      // The password a reconnect logs in with: the one just set or proved.
      state.password = typed.password;
      state.passwordTyped = null;
    }
    if (f.command === "identify" || f.command === "register") {
      // Identified now: private history is shown to the account (docs/protocol.md).
      for (const view of state.views.values()) {
        if (view.unavailable === "identify") loadLatest(view);
      }
    }
    if (f.command === "help" && f.data && Array.isArray(f.data.commands)) {
      state.commands = f.data.commands;
      if (state.helpPending) {
        state.helpPending = false; // (the page's own, for completion: not shown)
        return;
      }
      helpLine(currentOrFirst(), allCommands());
      return;
    }
    if (f.command === "who" && f.data && state.whoPending.has(fold(f.data.room))) {
      state.whoPending.delete(fold(f.data.room));
      const view = getView("room", f.data.room, false);
      if (view) {
        view.members = new Set(f.data.nicks || []);
        for (const nick of view.members) setAway(nick, (f.data.away || {})[nick]);
        renderMembers();
      }
      return;
    }
    if (f.command === "away" && f.data) {
      state.myAway = f.data.away || null;
      setAway(state.nick, f.data.away);
      renderMembers();
    }
    if (f.command === "join" && f.data && f.data.room && state.switchTo) {
      // A /join of a room it is in already: no join frame comes, this reply names the
      // room its lines now go to. The page goes there too.
      state.switchTo = null;
      const view = getView("room", f.data.room, false);
      if (view && view !== state.current) show(view);
    }
    eventLine(currentOrFirst(), String(f.text), undefined, "notice");
  },
  notice(f) {
    // A room's announcement (a kick, a mode) goes to that room's view.
    const view = (f.room && getView("room", f.room, false)) || currentOrFirst();
    // An operator joining (back) is announced by the server right after the join (no
    // "by": nobody made them one now; IRC clients need it as a MODE): one line, not two.
    const joined = view && view.lastJoin;
    if (f.mode === "+o" && !f.by && joined && joined.line && fold(joined.nick) === fold(String(f.arg))
        && joined.line === view.pane.lastElementChild) {
      joined.line.querySelector(".body").append(" (operator)");
      view.lastJoin = null;
      return;
    }
    const where = f.room && view && view.kind === "room" && fold(view.name) === fold(f.room)
      ? "" : f.room ? `[${f.room}] ` : "";
    eventLine(view, where + String(f.text), undefined, "notice");
  },
  error(f) {
    const code = String(f.code);
    const heading = ERRORS[code] || "Error";
    let said = String(f.text);
    if (code === "nick_registered" && !state.loggedIn) {
      // The server's words are for a JSON client ("the hello's password"): the page's own.
      said = `${said.replace(/ \(the hello's password\)$/, "")}; type its password in the Password field`;
    }
    // (A text that starts with its heading, "usage: /join #ROOM", is not given it twice.)
    let text = said.toLowerCase().startsWith(heading.toLowerCase())
      ? said.charAt(0).toUpperCase() + said.slice(1) : `${heading}: ${said}`;
    if (f.retry_after) text += ` (wait ${Number(f.retry_after).toFixed(1)} s)`;
    if (!state.loggedIn && !state.everWelcomed) {
      loginError(text, code);
      $("login-view").hidden = false;
      $("chat-view").hidden = true;
      state.quitting = true;
      if (state.ws) state.ws.close(1000, "login refused");
      focusLogin(code);
      return;
    }
    if (state.loggedIn && historyRefused(f)) return;
    const refused = f.room && state.helloRooms.includes(fold(f.room)) ? getView("room", f.room, false) : null;
    if (refused && state.joined.some((r) => fold(r) === fold(f.room))) {
      // A room the reconnect's hello named, refused now (a ban meanwhile): left, and
      // said in its own view.
      refused.rejoining = false;
      refused.left = true;
      state.joined = state.joined.filter((r) => fold(r) !== fold(f.room));
      eventLine(refused, text, undefined, "error");
      renderSidebar();
      return;
    }
    if (state.loggedIn && REFUSALS.has(code)) {
      // The answer to one of the user's messages (the oldest waiting, of the room the
      // error names if it names one): it is not coming back.
      const entry = state.unconfirmed.find((u) => !u.lost
        && (!f.room || (u.view.kind === "room" && fold(u.view.name) === fold(f.room))));
      // Its text back into the box (if empty) to edit or send again, and said so.
      if (entry && notSent(entry, heading.toLowerCase())) text += "; your message is back in the box";
    }
    const view = currentOrFirst();
    if (view) eventLine(view, text, undefined, "error");
    else setStatus(text, true);
    if (!state.loggedIn && state.ws) {
      // Resuming, and refused. The old connection may still hold the nick until the
      // server notices it is gone, and a busy server may have room later: close, and
      // try again after the backoff. Anything else (the nick is someone else's now,
      // its password changed, a ban) no retry mends: back to the login form.
      state.refusals += 1;
      if (!PASSING.has(code) || (code === "nick_taken" && state.refusals >= RESUME_TRIES)) {
        backToLogin(`${text} (while you were away). Pick another nick, or try again.`, code);
      } else {
        state.ws.close(1000, "retry");
      }
    }
  },
  ping() {
    send({ type: "pong" });
  },
  pong() {
    heartbeat(); // (answered: the next ping in state.heartbeat ms)
  },
};

// Errors that refuse a message (its copy never comes); a command's too, some of them: a
// refused command with a message waiting marks the message not sent, until its copy
// comes after all.
const REFUSALS = new Set(["too_many_lines", "bad_text", "line_too_long", "rate_limited", "dropped",
  "not_stored", "not_in_room", "no_such_nick", "muted", "moderated", "room_locked", "closing"]);

// Refusals of a reconnect's hello that waiting may mend; a nick still taken after
// RESUME_TRIES of them is someone else's.
const PASSING = new Set(["nick_taken", "server_busy", "server_full", "too_many_connections",
  "auth_throttled", "rate_limited", "login_timeout"]);
const RESUME_TRIES = 4;

// The login form again, with why, the nick and password filled in; the views stay, and
// a login from it resumes them.
function backToLogin(why, code) {
  hangUp("login refused"); // (its close is this, not a loss to reconnect from or report)
  setStatus("disconnected", true);
  loginError(why, code);
  $("nick").value = state.nick || "";
  $("password").value = state.password || "";
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  focusLogin(code);
}

// Login refusals that are the password's: its field is the one to fix.
const PASSWORD_CODES = new Set(["nick_registered", "bad_password"]);

// The login form's field that the refusal (its code) is about gets the focus: the
// password's for a registered nick or a wrong password (selected, to retype), else the nick's.
function focusLogin(code) {
  if (PASSWORD_CODES.has(code)) {
    $("password").focus();
    $("password").select();
  } else {
    $("nick").focus();
  }
}

function receive(event) {
  let frame;
  try {
    frame = JSON.parse(event.data);
  } catch {
    return;
  }
  const handler = handlers[frame.type];
  if (handler) handler(frame);
}

// -- the connection: connect, resume, reconnect with backoff ----------------------------

// Close the page's socket, if any, its listeners first: nothing it still receives is
// acted on, and its close is no loss to reconnect from.
function hangUp(reason) {
  const ws = state.ws;
  state.ws = null;
  state.loggedIn = false;
  clearTimeout(state.beatTimer);
  if (state.listening) state.listening.abort();
  state.listening = null;
  if (ws) ws.close(1000, reason);
}

// Whether a login is under way: a socket opening, or open and not yet welcomed.
function connecting() {
  return Boolean(state.ws) && !state.loggedIn && state.ws.readyState <= WebSocket.OPEN;
}

// A connection can die unseen (a network that drops everything, no close): the page
// pings every state.heartbeat ms, and one not answered in state.pongWait ms counts as
// lost, as a close would. Called at the welcome and at each pong.
function heartbeat() {
  const ws = state.ws;
  clearTimeout(state.beatTimer);
  state.beatTimer = setTimeout(() => {
    if (state.ws !== ws || !state.loggedIn) return;
    send({ type: "ping" });
    state.beatTimer = setTimeout(() => {
      if (state.ws !== ws) return;
      hangUp("no answer");
      closed("no answer from the server", state.nick);
    }, state.pongWait);
  }, state.heartbeat);
}

function connect(nick) {
  clearTimeout(state.timer);
  state.timer = null; // (set while a reconnect waits)
  stopCountdown();
  // One connection at a time: an earlier one left open would stay logged in, unseen,
  // holding the nick.
  hangUp("replaced");
  state.quitting = false;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  const listening = new AbortController();
  const { signal } = listening;
  state.ws = ws;
  state.listening = listening;
  setStatus("connecting…");
  ws.addEventListener("open", () => {
    const hello = { type: "hello", nick };
    if (state.password) hello.password = state.password; // a registered nick's
    if (state.resume) hello.resume = state.resume; // the last connection's, if it died unseen
    state.resumed = Boolean(state.lastId);
    if (state.resumed) hello.since = state.lastId; // resume: only what was missed
    // Straight back into its rooms, not the default one (since holds for these only):
    // as many as fit in a frame the server takes; the welcome's handler joins the rest.
    state.helloRooms = []; // (none named: none refused at login to skip)
    if (state.joined.length) { // (a reconnect's, or those restore() found)
      hello.rooms = [...state.joined];
      while (hello.rooms.length > 1 && tooLong(hello)) hello.rooms.shift();
      state.helloRooms = hello.rooms.map(fold);
    }
    ws.send(JSON.stringify(hello));
  }, { signal });
  ws.addEventListener("message", receive, { signal });
  ws.addEventListener("close", (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.listening = null;
    state.loggedIn = false;
    closed(event.reason || "", nick);
  }, { signal });
}

// The connection is gone (closed, or found dead): say so, and reconnect unless that
// would undo a decision. The user's messages not confirmed yet are marked not sent.
function closed(reason, nick) {
  clearTimeout(state.beatTimer);
  const unsent = state.unconfirmed.filter((u) => !u.lost);
  let back = false;
  for (const entry of unsent) back = notSent(entry, "connection lost") || back;
  if (unsent.length) {
    const what = unsent.length === 1 ? "a message" : `${unsent.length} messages`;
    const where = !back ? "" : unsent.length === 1 ? ", back in the box" : ", the first back in the box";
    announce(`Connection lost: ${what} not sent${where}.`);
  }
  if (state.quitting || reason.startsWith("quit")) {
    setStatus("disconnected");
    if (state.everWelcomed) eventLine(currentOrFirst(), "You left the chat. Reload to join again.", undefined, "notice");
    return;
  }
  if (/^(killed|banned)\b/.test(reason)) {
    // An operator's decision: coming back at once would undo it.
    setStatus(`disconnected (${reason})`, true);
    eventLine(currentOrFirst(), `Disconnected: ${reason}. Reload to join again.`, undefined, "error");
    return;
  }
  if (!state.everWelcomed) {
    loginError("Cannot reach the chat server; try again.");
    return;
  }
  const delay = Math.min(state.backoff, BACKOFF_MAX) * (0.75 + Math.random() * 0.5);
  state.backoff = Math.min(state.backoff * 2, BACKOFF_MAX);
  // (The live status says it once; the seconds count down beside it, not read out each.)
  setStatus(`disconnected${reason ? ` (${reason})` : ""}; reconnecting`, true);
  const at = Date.now() + delay;
  const tick = () => {
    $("countdown").textContent = `in ${Math.max(1, Math.ceil((at - Date.now()) / 1000))} s`;
  };
  tick();
  state.countdown = setInterval(tick, 1000);
  $("retry").hidden = false;
  state.timer = setTimeout(() => connect(state.nick || nick), delay);
}

// A reconnect no longer waited for: its countdown and "Retry now" go.
function stopCountdown() {
  clearInterval(state.countdown);
  state.countdown = null;
  $("countdown").textContent = "";
  $("retry").hidden = true;
}

// -- typing: sending, commands, completion, keys ------------------------------------------

function allCommands() {
  return [...state.commands, ...LOCAL_COMMANDS];
}

function local(text) {
  const [word, ...rest] = text.slice(1).split(/\s+/);
  const arg = rest.join(" ").trim();
  if (word === "query" && arg) {
    if (/^#|\s/.test(arg)) {
      eventLine(currentOrFirst(), "Usage: /query NICK (a room: /join #room)", undefined, "error");
    } else {
      show(getView("private", arg));
    }
    return true;
  }
  if (word === "close" && state.current && (state.current.kind === "private" || state.current.left)) {
    dropView(state.current);
    return true;
  }
  return false;
}

// Send a frame the user typed. False, and nothing is sent (the text stays in the box),
// if it is longer than the server takes: it would close the connection.
function sendTyped(view, frame) {
  const size = tooLong(frame);
  if (size) {
    eventLine(view, `Too long: ${size} bytes, at most ${state.maxLine}; not sent.`, undefined, "error");
    return false;
  }
  if (!send(frame)) {
    eventLine(view, "Not connected: not sent (it stays in the box).", undefined, "error");
    return false;
  }
  return true;
}

// The password a typed /register, /identify, /passwd or /drop sets (null: none), for
// reconnects once the server says it worked.
function passwordOf(text) {
  const words = text.trim().split(/\s+/);
  const command = words[0].slice(1).toLowerCase();
  if (command === "register" && words.length >= 2) return { command, password: words[1] };
  if (command === "identify" && words.length >= 2) return { command, password: words[words.length - 1] };
  if (command === "passwd" && words.length === 3) return { command, password: words[2] };
  if (command === "drop" && words.length >= 2) return { command, password: null };
  return null;
}

// The message box grows with its lines, wrapped ones too, up to its CSS max-height (then
// it scrolls).
function fitInput() {
  const input = $("input");
  // (Measuring gives the log the box's room for a moment, which scrolls a log read at
  // the bottom up by as much: it is put back at the bottom.)
  const view = state.current;
  const stay = view && view.atBottom;
  input.style.height = "auto"; // (its one row, to measure what the text needs)
  if (input.value) input.style.height = `${input.scrollHeight}px`;
  else input.style.height = "";
  if (stay) toBottom(view);
}

// What the user typed: a command or a message. False if the text should stay in the box.
function submit(text) {
  if (!text.trim()) return true;
  const done = submitted(text);
  // Recalled with Up: what left the box (text kept to retry is there already), and never
  // a command with a password.
  if (done && !(text.startsWith("/") && passwordOf(text))) state.sent.push(text);
  state.sentAt = state.sent.length;
  return done;
}

function submitted(text) {
  const view = state.current;
  if (text.startsWith("/") && !text.startsWith("//")) {
    if (local(text)) return true;
    const me = text.match(/^\/me(?:\s+(.*))?$/s);
    if (me && view && view.kind === "private") {
      // An action in private: /describe NICK ACTION (docs/protocol.md).
      const action = (me[1] || "").trim();
      if (!action) {
        eventLine(view, "Usage: /me ACTION", undefined, "error");
        return true;
      }
      if (!sendTyped(view, { type: "say", text: `/describe ${view.name} ${action}` })) return false;
      sentAgain(view, text);
      pendingLine(view, action, true, text);
      return true;
    }
    const frame = { type: "say", text };
    // (A room it was removed from is no room to type a command in: the current one is.)
    if (view && view.kind === "room" && !view.left) frame.room = view.name;
    if (!sendTyped(view, frame)) return false;
    if (me && me[1] && me[1].trim() && view && view.kind === "room" && !view.left) {
      sentAgain(view, text);
      pendingLine(view, me[1].trim(), true, text);
    }
    state.passwordTyped = passwordOf(text);
    // Back: at once (its reply may be lost with the connection, and away set again).
    if (/^\/away\s*$/i.test(text)) state.myAway = null;
    // (/nick NEW, /identify NICK PASSWORD: a nick asked for; /identify PASSWORD is not.)
    const renamed = text.match(/^\/(nick|identify)\s+(\S+)(?:\s+(\S+))?\s*$/i);
    if (renamed && (renamed[1].toLowerCase() === "nick") !== Boolean(renamed[3])) state.chosen = renamed[2];
    const join = text.match(/^\/join\s+(\S+)/);
    if (join) state.switchTo = join[1].startsWith("#") ? join[1] : `#${join[1]}`; // as the server takes it
    if (text.startsWith("/quit")) state.quitting = true;
    return true;
  }
  if (!view || view.left) {
    const why = view ? `You are not in ${view.name}: /join ${view.name}` : "You are in no room: /join #room";
    if (view) eventLine(view, why, undefined, "error");
    else setStatus(why, true);
    return false;
  }
  const said = text.startsWith("//") ? text.slice(1) : text;
  const frame = view.kind === "room"
    ? { type: "say", room: view.name, text }
    : { type: "say", text: `/msg ${view.name} ${said}` };
  if (!sendTyped(view, frame)) return false;
  sentAgain(view, text);
  pendingLine(view, said, false, text);
  return true;
}

// What notSent put back into the box, sent again: its new line replaces the old one.
function sentAgain(view, typed) {
  const again = state.refilled;
  if (again && again.view === view && again.typed === typed && again.lost) forget(again);
  state.refilled = null;
}

function suggest() {
  const input = $("input");
  const box = $("suggest");
  const value = input.value;
  if (!value.startsWith("/") || /\s/.test(value) || value.startsWith("//")) {
    hideSuggestions();
    return [];
  }
  const prefix = value.slice(1).toLowerCase();
  const found = allCommands().filter((c) => c.name.startsWith(prefix));
  box.replaceChildren();
  for (const [i, command] of found.slice(0, 12).entries()) {
    const row = el("div", i === 0 ? "pick" : "", `${usageOf(command)} — ${command.help || ""}`);
    // A listbox's options, the first the one Tab takes (aria-activedescendant: a screen
    // reader says it as the box's choice while the caret stays in the box).
    row.id = `suggest-${i}`;
    row.setAttribute("role", "option");
    row.setAttribute("aria-selected", String(i === 0));
    box.append(row);
  }
  if (!found.length) hideSuggestions();
  else {
    box.hidden = false;
    input.setAttribute("aria-activedescendant", "suggest-0");
  }
  return found;
}

// A command as typed: "/who [#room]" (a local command's usage is that already).
function usageOf(command) {
  return command.usage && command.usage.startsWith("/") ? command.usage
    : `/${command.name}${command.usage ? " " + command.usage : ""}`;
}

function hideSuggestions() {
  $("suggest").hidden = true;
  $("input").removeAttribute("aria-activedescendant");
}

function complete() {
  const input = $("input");
  const value = input.value;
  const fits = completeIn(input, value);
  // For screen readers, which do not read a value changed under them, nor the list
  // that appears above the box: what Tab made of it, and whether more would fit.
  if (input.value !== value) {
    announce(`Completed: ${input.value.trim()}`
      + (fits > 1 ? ` (${fits} commands fit: Tab again for the next)` : ""));
  }
}

// Completes the box's command or nick in place; returns how many commands fit.
function completeIn(input, value) {
  if (value.startsWith("/") && !/\s/.test(value)) {
    // Cycling: the commands of what was typed before the first Tab, not of the one it
    // gave (state.tab, forgotten as soon as the box is typed in).
    const typed = state.tab ? state.tab.typed : value.slice(1).toLowerCase();
    const found = allCommands().filter((c) => c.name.startsWith(typed));
    if (found.length === 1) input.value = `/${found[0].name} `;
    else if (found.length > 1) {
      // the longest common prefix, then cycle through them
      let common = found[0].name;
      for (const c of found) while (!c.name.startsWith(common)) common = common.slice(0, -1);
      if (!state.tab && common.length > typed.length) input.value = `/${common}`;
      else {
        // (The first of them may be in the box already: the common prefix was one.)
        const first = value === `/${found[0].name}` ? 1 : 0;
        const at = state.tab ? (state.tab.at + 1) % found.length : first;
        state.tab = { typed, at };
        input.value = `/${found[at].name}`;
      }
    }
    suggest();
    return found.length;
  }
  // a nick of the current room
  const match = value.match(/(\S+)$/);
  const view = state.current;
  if (!match || !view) return 0;
  const nicks = view.kind === "room" ? [...view.members] : [view.name];
  const hit = nicks.find((n) => fold(n).startsWith(fold(match[1])) && n !== state.nick);
  if (hit) input.value = value.slice(0, value.length - match[1].length) + hit + (match.index === 0 ? ": " : " ");
  return 0;
}

function moveView(step) {
  const views = [...state.views.values()].sort((a, b) => (a.kind === b.kind ? 0 : a.kind === "room" ? -1 : 1));
  if (!views.length) return;
  const at = views.indexOf(state.current);
  show(views[(at + step + views.length) % views.length]);
}

// The login form's error, tied to the nick field (aria-invalid, described by it), or
// none ("").
function loginError(text, code) {
  $("login-error").textContent = text;
  const field = PASSWORD_CODES.has(code) ? $("password") : $("nick");
  for (const each of [$("nick"), $("password")]) {
    if (text && each === field) each.setAttribute("aria-invalid", "true");
    else each.removeAttribute("aria-invalid");
  }
}

function start() {
  const saved = localStorage.getItem(NICK_KEY);
  if (saved) $("nick").value = saved;
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    if (connecting()) return; // (a double click, Enter twice: the first login goes on)
    const nick = $("nick").value.trim();
    if (!nick) {
      loginError("Type a nick: spaces alone are none.");
      return;
    }
    state.password = $("password").value || null;
    state.chosen = nick;
    loginError("");
    if (!state.everWelcomed && !state.restored) {
      state.restored = true;
      restore(nick);
    }
    connect(nick);
  });
  $("compose").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("input");
    if (submit(input.value)) input.value = "";
    fitInput();
    suggest();
    input.focus(); // (a click on Send leaves it on the button)
  });
  const input = $("input");
  input.addEventListener("input", () => {
    state.tab = null;
    fitInput();
    suggest();
  });
  input.addEventListener("keydown", (event) => {
    // The caret on the box's first or last line: Up and Down recall what was sent
    // there, and move the caret between a message's lines elsewhere.
    const before = input.value.slice(0, input.selectionStart);
    const after = input.value.slice(input.selectionEnd);
    // (keyCode 229: the Enter that ends an input method's composition, in Safari too.)
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      // Enter sends; Shift+Enter starts a new line of the same message (a paste keeps
      // its lines too: the server takes up to max_message_lines, docs/protocol.md).
      event.preventDefault();
      $("compose").requestSubmit();
    } else if (event.key === "Tab" && !event.shiftKey && input.value) {
      // Completes when there is something to complete; else Tab moves on, as it
      // does everywhere (no keyboard trap in the box).
      const before = input.value;
      complete();
      if (input.value !== before) event.preventDefault();
    } else if (event.key === "Escape") {
      hideSuggestions();
      state.tab = null;
    } else if (event.key === "ArrowUp" && !event.altKey && !before.includes("\n")
               && (!input.value || state.sentAt < state.sent.length)) {
      if (state.sentAt > 0) {
        event.preventDefault();
        state.sentAt -= 1;
        input.value = state.sent[state.sentAt];
        fitInput();
      }
    } else if (event.key === "ArrowDown" && !event.altKey && !after.includes("\n")
               && state.sentAt < state.sent.length) {
      event.preventDefault();
      state.sentAt += 1;
      input.value = state.sent[state.sentAt] || "";
      fitInput();
    } else if (event.key === "PageUp" || event.key === "PageDown") {
      const pane = state.current && state.current.pane;
      if (pane) {
        event.preventDefault();
        pane.scrollTop += (event.key === "PageUp" ? -1 : 1) * pane.clientHeight * 0.9;
      }
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
      event.preventDefault();
      moveView(event.key === "ArrowUp" ? -1 : 1);
      input.focus();
    }
  });
  // The browser knows the network is gone: the connection with it, whatever the socket
  // says. Back online: reconnect now, not at the end of the backoff's wait.
  window.addEventListener("offline", () => {
    if (!state.ws || !state.loggedIn) return;
    hangUp("offline");
    closed("offline", state.nick);
  });
  window.addEventListener("online", () => {
    if (state.timer === null || state.ws) return;
    state.backoff = BACKOFF_FIRST;
    connect(state.nick);
  });
  $("unread-total").addEventListener("click", () => {
    const next = [...state.views.values()].find((v) => v.unread);
    if (next) show(next);
    input.focus();
  });
  $("retry").addEventListener("click", () => {
    if (state.timer === null || state.ws) return;
    connect(state.nick);
    input.focus(); // (the button goes)
  });
  $("jump").addEventListener("click", () => {
    if (state.current) toBottom(state.current);
    input.focus();
  });
  // The log resized (the window, a phone's keyboard, the message box growing): a reader at
  // the bottom stays there.
  new ResizeObserver(() => {
    const view = state.current;
    if (!view) return;
    if (view.atBottom) view.pane.scrollTop = view.pane.scrollHeight;
    view.seenHeight = view.pane.clientHeight;
  }).observe($("log"));
  setInterval(refreshTimes, 60000);
  document.addEventListener("visibilitychange", () => {
    refreshTimes();
    if (!document.hidden && state.current) {
      state.current.unread = 0;
      renderSidebar();
    }
  });
}

start();
