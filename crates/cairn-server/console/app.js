// The cairn console: plain ES modules, no build step, only the public REST and realtime
// APIs, with the signed-in user's own permissions. The session token is kept in this tab's
// sessionStorage and sent as a bearer token; streams use single-use tickets.

const main = document.getElementById("main");
const state = { token: sessionStorage.getItem("cairn.token"), me: null, stream: null };

/** Calls the API; a problem+json answer becomes an Error carrying it. */
async function api(method, path, body, extra = {}) {
  const headers = { accept: "application/json", ...extra };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = new Error((data && data.detail) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    error.problem = data;
    throw error;
  }
  return data;
}

/** An element with attributes and children (strings become text, never HTML). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function toast(message) {
  const el = h("div", { class: "toast" }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

function failure(error) {
  if (error.status === 401) {
    signOut(false);
    return;
  }
  show(h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, error.message));
}

function stopStream() {
  if (state.stream) {
    state.stream.close();
    state.stream = null;
  }
  document.getElementById("banner").hidden = true;
}

function signInPage(message, name = "") {
  const form = h("form", { class: "card", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "name" }, "Name"),
    h("input", { id: "name", name: "name", autocomplete: "username", required: true, value: name }),
    h("label", { for: "password" }, "Password"),
    h("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true }),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const answer = await api("POST", "/api/auth/login", { name: data.get("name"), password: data.get("password") });
      state.token = answer.token;
      sessionStorage.setItem("cairn.token", state.token);
      await route();
    } catch (error) {
      signInPage(error.status === 401 ? "That name and password do not sign anyone in." : error.message, data.get("name"));
    }
  });
  show(form);
  document.getElementById(name ? "password" : "name").focus();
}

async function signOut(tell = true) {
  stopStream();
  if (tell && state.token) {
    try { await api("POST", "/api/auth/logout"); } catch { /* the token may already be gone */ }
  }
  state.token = null;
  state.me = null;
  sessionStorage.removeItem("cairn.token");
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("who").textContent = "";
  location.hash = "#/";
  signInPage();
}

async function collectionsPage() {
  show(h("h1", {}, "Collections"), h("p", { class: "loading" }, "Loading…"));
  const { items } = await api("GET", "/api/collections");
  if (items.length === 0) {
    show(h("h1", {}, "Collections"), h("p", { class: "empty" }, "No collections yet."));
    return;
  }
  const rows = items.map((c) => h("tr", {},
    h("td", {}, h("a", { href: `#/records/${encodeURIComponent(c.schema.name)}` }, c.schema.name)),
    h("td", {}, String(c.schema.fields.length)),
    h("td", {}, String(c.live_records))));
  show(h("h1", {}, "Collections"), h("div", { class: "wide" }, h("table", {},
    h("caption", { class: "empty" }, `${items.length} collection(s)`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Fields"), h("th", { scope: "col" }, "Records"))),
    h("tbody", {}, rows))));
}

/** The columns a collection's table shows: its summary fields, else its first three. */
function columnsOf(schema) {
  const summary = schema.fields.filter((f) => f.summary).map((f) => f.name);
  return summary.length ? summary : schema.fields.slice(0, 3).map((f) => f.name);
}

function cell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A filter's error with a caret under the character where it went wrong. */
function filterError(filter, error) {
  const out = [h("p", { class: "error", role: "alert", id: "filter-error" }, error.message)];
  const position = error.problem && error.problem.position;
  if (Number.isInteger(position)) {
    out.push(h("pre", { class: "caret", "aria-hidden": "true" }, `${filter}\n${" ".repeat(position)}^`));
  }
  return out;
}

async function recordsPage(collection, params) {
  const info = await api("GET", `/api/collections/${encodeURIComponent(collection)}`);
  const columns = columnsOf(info.schema);
  const filter = params.get("filter") || "";
  const sort = params.get("sort") || "";
  const cursor = params.get("cursor") || "";
  const go = (changes) => {
    const next = new URLSearchParams(params);
    for (const [key, value] of Object.entries(changes)) {
      if (value) next.set(key, value); else next.delete(key);
    }
    location.hash = `#/records/${encodeURIComponent(collection)}?${next}`;
  };
  const form = h("form", { class: "filter", role: "search" },
    h("label", { for: "filter" }, "Filter (cairn's filter language)"),
    h("input", { id: "filter", name: "filter", value: filter, placeholder: 'title = "x" and n > 2', spellcheck: "false" }),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    go({ filter: new FormData(form).get("filter").trim(), cursor: "" });
  });
  const heading = h("h1", {}, collection);
  show(heading, form, h("p", { class: "loading" }, "Loading…"));
  const query = new URLSearchParams({ limit: "20" });
  if (filter) query.set("filter", filter);
  if (sort) query.set("sort", sort);
  if (cursor) query.set("cursor", cursor);
  let page;
  try {
    page = await api("GET", `/api/collections/${encodeURIComponent(collection)}/records?${query}`);
  } catch (error) {
    if (error.status !== 400) throw error;
    show(heading, form, ...filterError(filter, error));
    document.getElementById("filter").setAttribute("aria-describedby", "filter-error");
    return;
  }
  const sortButton = (name) => {
    const order = sort === name ? "ascending" : sort === `-${name}` ? "descending" : "none";
    const next = order === "ascending" ? `-${name}` : name;
    return h("th", { scope: "col", "aria-sort": order },
      h("button", { type: "button", class: "quiet", onclick: () => go({ sort: next, cursor: "" }) },
        name, order === "ascending" ? " ▲" : order === "descending" ? " ▼" : ""));
  };
  const rows = page.items.map((r) => h("tr", { "data-record": r.id },
    h("td", {}, h("a", { href: `#/record/${encodeURIComponent(collection)}/${encodeURIComponent(r.id)}` }, r.id)), ...columns.map((c) => h("td", {}, cell(r.fields[c]))), h("td", {}, String(r.version))));
  const table = h("div", { class: "wide" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "id"), ...columns.map(sortButton), h("th", { scope: "col" }, "version"))),
    h("tbody", {}, rows)));
  const empty = h("p", { class: "empty" }, filter ? "No records match this filter." : "No records yet.");
  const more = page.next_cursor
    ? h("button", { type: "button", onclick: () => go({ cursor: page.next_cursor }) }, "Next page") : null;
  show(heading, form, page.items.length ? table : empty, more);
  // Another tab's change, a record entering or leaving the filter: read the page again.
  let pending = null;
  const refresh = () => {
    clearTimeout(pending);
    pending = setTimeout(() => recordsPage(collection, params).catch(failure), 150);
  };
  const stream = new URLSearchParams({ collection });
  if (filter) stream.set("filter", filter);
  await follow(`/api/realtime?${stream}`, Object.fromEntries(
    ["create", "update", "delete", "enter", "leave", "reset"].map((name) => [name, refresh])), "&");
}

/** An input for a field of a simple type; other types are shown, not edited, here. */
function fieldInput(field, value) {
  const id = `field-${field.name}`;
  const common = { id, name: field.name, required: field.required || false };
  switch (field.type) {
    case "text":
      return h("input", { ...common, value: value ?? "" });
    case "integer":
    case "number":
      return h("input", { ...common, type: "number", step: field.type === "integer" ? "1" : "any", value: value ?? "" });
    case "bool":
      return h("input", { ...common, type: "checkbox", checked: value === true, required: false });
    default:
      return null;
  }
}

function fieldValue(field, input) {
  if (field.type === "bool") return input.checked;
  if (input.value === "") return null;
  if (field.type === "integer") return Number.parseInt(input.value, 10);
  if (field.type === "number") return Number(input.value);
  return input.value;
}

async function recordPage(collection, id) {
  const base = `/api/collections/${encodeURIComponent(collection)}/records/${encodeURIComponent(id)}`;
  const [info, record, history] = await Promise.all([
    api("GET", `/api/collections/${encodeURIComponent(collection)}`),
    api("GET", base),
    api("GET", `${base}/history`),
  ]);
  const heading = h("h1", {}, `${collection} / ${id}`);
  const meta = h("p", { class: "empty" }, `version ${record.version}, updated ${record.updated_at}`);
  const notice = h("div", { id: "notice" });
  const inputs = [];
  const form = h("form", { class: "record", "aria-label": "Edit the record" });
  for (const field of info.schema.fields) {
    const input = fieldInput(field, record.body[field.name]);
    if (input) {
      inputs.push([field, input]);
      form.append(h("label", { for: input.id }, field.name), input,
        h("p", { class: "error", id: `${input.id}-error`, hidden: true }));
    } else {
      form.append(h("p", {}, h("strong", {}, `${field.name}: `), cell(record.body[field.name])));
    }
  }
  form.append(h("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const patch = Object.fromEntries(inputs.map(([field, input]) => [field.name, fieldValue(field, input)]));
    try {
      await api("PATCH", base, patch, { "if-match": `"${record.version}"` });
      toast("Saved");
      await recordPage(collection, id);
    } catch (error) {
      if (error.status === 412 || error.status === 409) {
        const newer = await api("GET", base);
        notice.replaceChildren(h("div", { class: "error", role: "alert" },
          `Someone changed this record meanwhile (now version ${newer.version}). Your edit was not saved. `,
          h("button", { type: "button", class: "quiet", onclick: () => recordPage(collection, id) }, "Show the newer version")));
      } else {
        notice.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      }
    }
  });
  const act = (label, run, confirmText) => h("button", { type: "button", class: "quiet", onclick: async () => {
    if (confirmText && !confirm(confirmText)) return;
    try {
      await run();
      toast(`${label}: done`);
      await recordPage(collection, id);
    } catch (error) {
      notice.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
    }
  } }, label);
  const actions = h("p", { class: "actions" },
    act("Undo", () => api("POST", `${base}/undo`)),
    act("Redo", () => api("POST", `${base}/redo`)),
    h("button", { type: "button", class: "quiet", onclick: async () => {
      if (!confirm(`Delete ${collection}/${id}? Undo brings it back.`)) return;
      try {
        await api("DELETE", base, undefined, { "if-match": `"${record.version}"` });
      } catch (error) {
        notice.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
        return;
      }
      stopStream();
      toast("Deleted");
      show(heading, h("p", {}, `${collection}/${id} is deleted. `,
        h("button", { type: "button", onclick: async () => {
          try {
            await api("POST", `${base}/undo`);
            toast("Undo: done");
            await recordPage(collection, id);
          } catch (error) { failure(error); }
        } }, "Undo the delete")));
    } }, "Delete"));
  const versions = history.items.slice().reverse().map((change) => h("tr", {},
    h("td", {}, String(change.version)), h("td", {}, change.op), h("td", {}, change.actor), h("td", {}, change.at),
    h("td", {}, change.version === record.version || !change.after ? "" :
      act(`Revert to version ${change.version}`, () => api("POST", `${base}/revert`, { version: change.version })))));
  show(heading, meta, notice, form, actions, h("h2", {}, "History"), h("div", { class: "wide" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Version", "Change", "By", "At", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, versions))));
  // Another client's change to this record: say so, and keep the form as it is.
  await follow(`/api/realtime?${new URLSearchParams({ collection, record: id })}`, {
    delete: () => notice.replaceChildren(h("p", { class: "error", role: "status" }, "This record was deleted elsewhere.")),
    update: (event) => {
      if (event.version && event.version !== record.version) {
        notice.replaceChildren(h("div", { class: "error", role: "status" }, `Version ${event.version} was saved elsewhere. `,
          h("button", { type: "button", class: "quiet", onclick: () => recordPage(collection, id) }, "Show it")));
      }
    },
  }, "&");
}

function backupRow(backup, reload) {
  const m = backup.manifest;
  const records = m ? m.collections.reduce((n, c) => n + c.live, 0) : 0;
  const verify = h("button", { type: "button", class: "quiet", onclick: async () => {
    try {
      const checked = await api("POST", `/api/backups/${encodeURIComponent(backup.id)}/verify`);
      toast(`Backup ${backup.id}: ${checked.status === "good" ? "verified" : checked.status}`);
      await reload();
    } catch (error) { toast(error.message); }
  } }, "Verify");
  const restore = h("button", { type: "button", class: "quiet", onclick: () => restoreDialog(backup, records, reload) }, "Restore…");
  return h("tr", { "data-backup": backup.id },
    h("td", {}, backup.id), h("td", {}, m ? m.created_at : ""), h("td", {}, m ? m.reason : ""),
    h("td", {}, m ? `${records} records in ${m.collections.length} collections` : ""),
    h("td", { class: backup.status === "good" ? "state-completed" : "state-discarded" },
      backup.status === "good" ? "verified" : `${backup.status}${backup.error ? `: ${backup.error}` : ""}`),
    h("td", {}, backup.status === "good" ? [verify, restore] : verify));
}

/** The typed confirmation a whole-store restore needs: it names what will be replaced. */
function restoreDialog(backup, records, reload) {
  const input = h("input", { id: "confirm-restore", autocomplete: "off", spellcheck: "false" });
  const go = h("button", { type: "submit", disabled: true }, "Replace the store with this backup");
  input.addEventListener("input", () => { go.disabled = input.value.trim() !== backup.id; });
  const form = h("form", { class: "card wide-card", "aria-labelledby": "restore-title" },
    h("h2", { id: "restore-title" }, `Restore backup ${backup.id}`),
    h("p", {}, `Everything in the store now — every collection, record, attachment, user and job — is replaced by `,
      `this backup (taken ${backup.manifest.created_at}, ${records} records). The current state is backed up first.`),
    h("label", { for: "confirm-restore" }, `Type the backup's id (${backup.id}) to confirm`), input,
    h("p", { class: "actions" }, go, h("button", { type: "button", class: "quiet", onclick: reload }, "Cancel")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    go.disabled = true;
    go.textContent = "Restoring…";
    try {
      const report = await api("POST", `/api/backups/${encodeURIComponent(backup.id)}/restore`, { confirm: backup.id });
      toast(`Restored from ${report.backup}; the state before is backup ${report.pre_restore_backup}`);
      await reload();
    } catch (error) {
      form.append(h("p", { class: "error", role: "alert" }, error.message));
      go.textContent = "Replace the store with this backup";
    }
  });
  show(form);
  input.focus();
}

async function backupsPage() {
  show(h("h1", {}, "Backups"), h("p", { class: "loading" }, "Loading…"));
  const { items } = await api("GET", "/api/backups");
  const create = h("button", { type: "button", onclick: async () => {
    create.disabled = true;
    create.textContent = "Taking a backup…";
    try {
      const made = await api("POST", "/api/backups");
      toast(`Backup ${made.id} taken and verified`);
    } catch (error) { toast(error.message); }
    await backupsPage();
  } }, "Take a backup now");
  const table = items.length ? h("div", { class: "wide" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Id", "Taken", "Why", "Holds", "State", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, items.map((b) => backupRow(b, backupsPage))))) : h("p", { class: "empty" }, "No backups yet.");
  show(h("h1", {}, "Backups"), h("p", {}, create), table);
}

function jobRow(job) {
  const progress = job.progress === null || job.progress === undefined ? "" :
    h("progress", { max: "100", value: String(job.progress), "aria-label": `job ${job.id} progress` });
  const error = job.errors && job.errors.length ? job.errors[job.errors.length - 1].error : "";
  const act = (verb) => h("button", { type: "button", class: "quiet", onclick: async () => {
    try {
      await api("POST", `/api/jobs/${job.id}/${verb}`);
      toast(`Job ${job.id}: ${verb} asked`);
    } catch (e) { toast(e.message); }
  } }, verb);
  const actions = job.state === "running" || job.state === "available" || job.state === "scheduled" || job.state === "retryable"
    ? [act("cancel")] : [act("retry"), act("restart")];
  return h("tr", { "data-job": String(job.id) },
    h("td", {}, String(job.id)), h("td", {}, job.kind), h("td", {}, job.queue),
    h("td", { class: `state-${job.state}` }, job.state),
    h("td", {}, progress, " ", job.progress_message || ""),
    h("td", {}, error), h("td", {}, actions));
}

async function jobsPage() {
  show(h("h1", {}, "Jobs"), h("p", { class: "loading" }, "Loading…"));
  const { items } = await api("GET", "/api/jobs?limit=100");
  const body = h("tbody", {}, items.map(jobRow));
  const empty = h("p", { class: "empty", hidden: items.length > 0 }, "No jobs yet.");
  show(h("h1", {}, "Jobs"), empty, h("div", { class: "wide" }, h("table", {},
    h("thead", {}, h("tr", {}, ["Id", "Kind", "Queue", "State", "Progress", "Last error", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    body)));
  const upsert = (job) => {
    const row = jobRow(job);
    const old = body.querySelector(`tr[data-job="${job.id}"]`);
    if (old) old.replaceWith(row); else body.prepend(row);
    empty.hidden = true;
  };
  await follow("/api/jobs/events", {
    job: (job) => upsert(job),
    deleted: ({ id }) => body.querySelector(`tr[data-job="${id}"]`)?.remove(),
    reset: () => jobsPage(),
  });
}

/** Follows a server-sent event stream with a fresh ticket; shows a banner while it is down. */
async function follow(path, handlers, joiner = "?") {
  stopStream();
  const banner = document.getElementById("banner");
  let lost = false;
  const open = async () => {
    const { ticket } = await api("POST", "/api/realtime/tickets");
    const source = new EventSource(`${path}${joiner}ticket=${encodeURIComponent(ticket)}`);
    state.stream = source;
    source.addEventListener("ready", () => {
      banner.hidden = true;
      // What changed while the connection was down is not replayed: list again.
      if (lost && handlers.reset) handlers.reset({ reason: "reconnected" });
      lost = false;
    });
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
    }
    source.onerror = () => {
      // A ticket is good once: reconnect with a new one after a pause.
      source.close();
      if (state.stream !== source) return;
      lost = true;
      banner.textContent = "The connection to the server was lost; trying again…";
      banner.hidden = false;
      setTimeout(() => {
        if (state.stream === source) open().catch(() => { state.stream = source; source.onerror(); });
      }, 2000);
    };
  };
  await open();
}

async function route() {
  stopStream();
  if (!state.token) return signInPage();
  try {
    if (!state.me) {
      state.me = await api("GET", "/api/auth/me");
      const admin = state.me.user.role === "admin";
      document.getElementById("who").textContent = `${state.me.user.name} (${state.me.user.role})`;
      document.getElementById("nav").hidden = false;
      document.getElementById("sign-out").hidden = false;
      for (const link of document.querySelectorAll("[data-admin]")) link.hidden = !admin;
    }
    const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
    const [page, arg] = path.split("/");
    if (page === "jobs") await jobsPage();
    else if (page === "backups") await backupsPage();
    else if (page === "records" && arg) await recordsPage(decodeURIComponent(arg), new URLSearchParams(search || ""));
    else if (page === "record" && arg) await recordPage(decodeURIComponent(arg), decodeURIComponent(path.split("/")[2] || ""));
    else await collectionsPage();
    main.focus();
  } catch (error) {
    failure(error);
  }
}

document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
