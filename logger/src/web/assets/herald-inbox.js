// <herald-inbox>: a user's Herald notifications in any page, with no
// dependency. Served by the logger's end users' listener at
// /herald-inbox.js.
//
//   <script src="https://herald.example.com:8443/herald-inbox.js"></script>
//   <herald-inbox server="https://herald.example.com:8443"></herald-inbox>
//   document.querySelector("herald-inbox").token = tokenFromYourBackEnd;
//
// A bell with the unread count, a list of the newest notifications that
// updates live (Server-Sent Events), a click marks one read, "Mark all
// read" marks them all. Everything an event says is shown as text, never
// as HTML. It follows PROCESSED and OPENED changes, so reads made elsewhere
// show too; when the stream ends it gets a fresh ticket and resumes after
// the last position it had, so nothing is missed or shown twice. It fires
// `herald-notification` (detail: the event) for each new notification.

const SHOWN = 20;
const STYLE = `
:host { display: inline-block; position: relative; font: 14px system-ui, sans-serif; }
button.bell { position: relative; border: 1px solid #ccc; border-radius: 6px; background: #fff;
  padding: 4px 8px; cursor: pointer; color: #333; line-height: 0; }
.badge { position: absolute; top: -6px; right: -8px; min-width: 18px; padding: 0 5px;
  border-radius: 9px; background: #d33; color: #fff; font-size: 12px; line-height: 18px; }
.badge[hidden] { display: none; }
.panel { position: absolute; right: 0; z-index: 10; width: 320px; max-height: 420px;
  overflow-y: auto; margin-top: 6px; border: 1px solid #ccc; border-radius: 6px;
  background: #fff; box-shadow: 0 4px 14px rgba(0,0,0,.15); }
.panel[hidden] { display: none; }
.head { display: flex; justify-content: space-between; align-items: center; padding: 8px 10px;
  border-bottom: 1px solid #eee; font-weight: 600; }
.head button { border: 0; background: none; color: #06c; cursor: pointer; }
ul { list-style: none; margin: 0; padding: 0; }
li { padding: 8px 10px; border-bottom: 1px solid #f2f2f2; cursor: pointer; }
li.unread { background: #eef5ff; font-weight: 600; }
li .when { display: block; color: #777; font-size: 12px; font-weight: normal; }
.empty, .status { padding: 10px; color: #777; }
`;

class HeraldInbox extends HTMLElement {
  static get observedAttributes() {
    return ["server", "token"];
  }

  constructor() {
    super();
    this._items = new Map();
    this._unread = 0;
    this._last = "";
    this._source = null;
    this._retry = 1000;
    this._generation = 0;
    const root = this.attachShadow({ mode: "open" });
    const style = document.createElement("style");
    style.textContent = STYLE;
    this._bell = el("button", "bell");
    this._bell.append(bellIcon());
    this._bell.setAttribute("aria-label", "Notifications");
    this._badge = el("span", "badge", "0");
    this._badge.setAttribute("part", "badge");
    this._badge.hidden = true;
    this._bell.append(this._badge);
    this._panel = el("div", "panel");
    this._panel.hidden = true;
    const head = el("div", "head", "Notifications");
    this._markAll = el("button", "mark-all", "Mark all read");
    head.append(this._markAll);
    this._list = el("ul");
    this._list.setAttribute("part", "list");
    this._status = el("div", "status");
    this._panel.append(head, this._list, this._status);
    root.append(style, this._bell, this._panel);
    this._bell.addEventListener("click", () => {
      this._panel.hidden = !this._panel.hidden;
    });
    this._markAll.addEventListener("click", () => this._markRead({ all: true }));
    this._list.addEventListener("click", (e) => {
      const item = e.target.closest("li");
      const id = item && item.dataset.eventId;
      const event = id && this._items.get(id);
      if (event && event.status === "PROCESSED") this._markRead({ event_ids: [id] });
    });
  }

  get token() {
    return this._token || this.getAttribute("token") || "";
  }

  set token(value) {
    this._token = value;
    this._restart();
  }

  /** The unread count the badge shows. */
  get unreadCount() {
    return this._unread;
  }

  connectedCallback() {
    this._restart();
  }

  disconnectedCallback() {
    this._stop();
  }

  attributeChangedCallback() {
    if (this.isConnected) this._restart();
  }

  _server() {
    return (this.getAttribute("server") || "").replace(/\/+$/, "");
  }

  _stop() {
    this._generation += 1;
    if (this._source) this._source.close();
    this._source = null;
  }

  _restart() {
    this._stop();
    if (!this.isConnected || !this._server() || !this.token) return;
    const generation = this._generation;
    this._follow(generation);
    this._load(generation);
  }

  async _call(path, init = {}) {
    const response = await fetch(this._server() + path, {
      ...init,
      headers: { ...(init.headers || {}), authorization: `Bearer ${this.token}` },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(`${body.code}: ${body.message}`);
    return body;
  }

  async _load(generation) {
    try {
      const page = await this._call(`/v1/inbox?page_size=${SHOWN}`);
      if (generation !== this._generation) return;
      for (const event of page.notifications) this._upsert(event, false);
      this._setUnread(page.unread_count);
      this._say("");
    } catch (err) {
      this._say(`Cannot load notifications (${err.message})`);
    }
  }

  async _follow(generation) {
    let ticket;
    try {
      ({ ticket } = await this._call("/v1/tickets", { method: "POST" }));
    } catch (err) {
      this._say(`Cannot follow notifications (${err.message})`);
      return this._again(generation);
    }
    if (generation !== this._generation) return;
    const query = new URLSearchParams({ ticket });
    query.append("statuses", "PROCESSED");
    query.append("statuses", "OPENED");
    if (this._last) query.set("after_cursor", this._last);
    const source = new EventSource(`${this._server()}/v1/notifications?${query}`);
    this._source = source;
    source.onopen = () => {
      this._retry = 1000;
    };
    source.onmessage = (message) => {
      this._last = message.lastEventId || this._last;
      this._upsert(JSON.parse(message.data), true);
    };
    source.addEventListener("unread", (message) => {
      this._last = message.lastEventId || this._last;
      this._setUnread(JSON.parse(message.data).unread_count);
    });
    source.addEventListener("history_gap", (message) => {
      this._last = message.lastEventId || this._last;
      this._load(generation);
    });
    // The browser's own reconnection would present the used ticket again:
    // close, and resume with a fresh one after the last position.
    source.onerror = () => {
      source.close();
      if (generation === this._generation) this._again(generation);
    };
  }

  _again(generation) {
    const wait = this._retry;
    this._retry = Math.min(this._retry * 2, 15000);
    setTimeout(() => {
      if (generation === this._generation) this._follow(generation);
    }, wait);
  }

  async _markRead(body) {
    try {
      const done = await this._call("/v1/inbox/read", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const ids = body.all ? [...this._items.keys()] : body.event_ids;
      for (const id of ids) {
        const event = this._items.get(id);
        if (event && event.status === "PROCESSED") this._upsert({ ...event, status: "OPENED" }, false);
      }
      this._setUnread(done.unread_count);
    } catch (err) {
      this._say(`Cannot mark read (${err.message})`);
    }
  }

  _upsert(event, live) {
    const known = this._items.get(event.event_id);
    // A change older than what is shown (a catch-up's PROCESSED after an
    // OPENED already seen) changes nothing.
    if (known && known.status === "OPENED" && event.status === "PROCESSED") return;
    this._items.set(event.event_id, event);
    if (live && !known && event.status === "PROCESSED") {
      this.dispatchEvent(new CustomEvent("herald-notification", { detail: event }));
    }
    this._render();
  }

  _setUnread(count) {
    this._unread = count;
    this._badge.textContent = count > 99 ? "99+" : String(count);
    this._badge.hidden = count === 0;
  }

  _say(text) {
    this._status.textContent = text;
  }

  _render() {
    const newest = [...this._items.values()]
      .sort((a, b) => (a.occurred_at < b.occurred_at ? 1 : a.occurred_at > b.occurred_at ? -1 : 0))
      .slice(0, SHOWN);
    this._list.replaceChildren(
      ...newest.map((event) => {
        const item = el("li", event.status === "PROCESSED" ? "unread" : "read", event.description);
        item.dataset.eventId = event.event_id;
        item.dataset.status = event.status;
        item.setAttribute("part", "item");
        item.append(el("span", "when", new Date(event.occurred_at).toLocaleString()));
        return item;
      }),
    );
    if (newest.length === 0) this._list.append(el("li", "empty", "No notifications yet"));
  }
}

/** A bell, drawn (no font has to have the emoji). */
function bellIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("fill", "currentColor");
  path.setAttribute(
    "d",
    "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1z",
  );
  svg.append(path);
  return svg;
}

/** An element with a class and text (never HTML). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

if (!customElements.get("herald-inbox")) customElements.define("herald-inbox", HeraldInbox);
