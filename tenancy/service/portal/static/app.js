// Tenant portal: plain ES module, no framework, no build step. Talks only to this origin: the
// self-service API under /api/v1, the portal's sign-in under /auth and its read models under
// /portal/api. The session is an HttpOnly cookie; writes carry the session's CSRF token.
// Every element is built with createElement/textContent (never innerHTML): nothing a tenant
// typed can become markup.

const main = document.getElementById("main");
const toastBox = document.getElementById("toast");
let session = null;
let schemaCache = null;
let liveStream = null;

// --- small helpers -----------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function toast(message) {
  toastBox.textContent = message;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { toastBox.textContent = ""; }, 5000);
}

function show(...nodes) {
  if (liveStream) { liveStream.close(); liveStream = null; }
  // Optional parts come as null: replaceChildren would show them as the text "null".
  main.replaceChildren(...nodes.filter((node) => node != null));
  main.focus();
}

function badge(text) {
  return h("span", { class: `badge ${text}` }, text);
}

function when(iso) {
  if (!iso) return "";
  const date = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
  return date.toLocaleString();
}

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the service answered ${status}`);
    this.status = status;
    this.code = error.code || "http_error";
    this.details = error.details || [];
  }
}

async function api(method, path, body, headers = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && session) init.headers["X-CSRF-Token"] = session.csrf;
  const response = await fetch(path, init);
  let data = null;
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("json")) data = await response.json();
  if (response.status === 401) {
    session = null;
    renderSignIn("Your session has ended. Sign in again.");
    throw new ApiError(401, data);
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, headers: response.headers, status: response.status };
}

function tenantPath(env, name) {
  return `/api/v1/environments/${encodeURIComponent(env)}/tenants/${encodeURIComponent(name)}`;
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied to the clipboard`);
  } catch {
    toast(`Select the ${what} and copy it (the clipboard is not available here)`);
  }
}

function confirmDialog({ title, body, confirmLabel, danger = false, typed = null }) {
  return new Promise((resolve) => {
    const input = typed ? h("input", { id: "confirm-typed", autocomplete: "off", "aria-describedby": "confirm-hint" }) : null;
    const okButton = h("button", { type: "submit", class: danger ? "danger" : "", disabled: typed ? true : null }, confirmLabel);
    if (input) input.addEventListener("input", () => { okButton.disabled = input.value !== typed; });
    const form = h("form", { method: "dialog" },
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, body),
      typed ? [h("label", { for: "confirm-typed" }, `Type ${typed} to confirm`),
        h("p", { class: "hint", id: "confirm-hint" }, "This cannot be undone."), input] : null,
      h("div", { class: "row" }, okButton, h("button", { type: "button", class: "secondary", onclick: () => dialog.close("cancel") }, "Cancel")));
    const dialog = h("dialog", { "aria-labelledby": "confirm-title" }, form);
    okButton.addEventListener("click", () => { dialog.returnValue = "ok"; });
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "ok"); });
    document.body.append(dialog);
    dialog.showModal();
    (input || okButton).focus();
  });
}

// --- sign-in -----------------------------------------------------------------------------------

async function loadSession() {
  const response = await fetch("/auth/session", { credentials: "same-origin", headers: { Accept: "application/json" } });
  const data = response.ok ? await response.json() : null;
  session = data && data.signedIn ? data : null;
  const nav = document.getElementById("nav");
  nav.hidden = !session;
  if (session) {
    const role = session.platformAdmin ? "platform-admin" : "tenant roles: " + (Object.entries(session.tenants).map(([t, r]) => `${t} (${r.replace("tenant-", "")})`).join(", ") || "none");
    document.getElementById("who").textContent = `${session.name} · ${role}`;
  }
  return session;
}

async function renderSignIn(message) {
  document.getElementById("nav").hidden = true;
  const config = await (await fetch("/auth/config", { headers: { Accept: "application/json" } })).json();
  const params = new URLSearchParams(location.search);
  const failed = params.get("signin_error");
  const notes = [
    message ? h("p", { class: "notice", role: "alert" }, message) : null,
    failed ? h("p", { class: "alert", role: "alert" }, `Signing in did not complete (${failed}). Try again.`) : null,
  ];
  if (config.mode === "oidc") {
    show(h("h1", {}, "Sign in"), ...notes,
      h("div", { class: "panel" },
        h("p", {}, "Sign in with your organisation's account (Keycloak)."),
        h("a", { class: "button", href: "/auth/login", id: "signin-keycloak" }, "Sign in with Keycloak")));
    return;
  }
  const error = h("p", { class: "error", id: "signin-error", role: "alert" });
  const form = h("form", { class: "panel", novalidate: true },
    h("p", { class: "notice" }, "Development sign-in through the local issuer. It exists only while no Keycloak is configured."),
    h("label", { for: "signin-name" }, "User name"),
    h("input", { id: "signin-name", name: "name", required: true, autocomplete: "username", value: "developer" }),
    h("label", { for: "signin-email" }, "Email (git author of your changes)"),
    h("input", { id: "signin-email", name: "email", type: "email", autocomplete: "email" }),
    h("label", { for: "signin-kind" }, "Role"),
    h("select", { id: "signin-kind", name: "kind" },
      h("option", { value: "admin" }, "tenant-admin of the tenants below"),
      h("option", { value: "viewer" }, "tenant-viewer of the tenants below"),
      h("option", { value: "platform" }, "platform-admin (every tenant)")),
    h("label", { for: "signin-tenants" }, "Tenants"),
    h("input", { id: "signin-tenants", name: "tenants", "aria-describedby": "signin-tenants-hint" }),
    h("p", { class: "hint", id: "signin-tenants-hint" }, "Comma-separated tenant names, e.g. acme, newco."),
    error,
    h("div", { class: "row" }, h("button", { type: "submit", id: "signin-submit" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = form.elements.kind.value;
    const body = {
      name: form.elements.name.value.trim(),
      role: kind === "viewer" ? "viewer" : "admin",
      platformAdmin: kind === "platform",
      tenants: form.elements.tenants.value.split(",").map((t) => t.trim()).filter(Boolean),
    };
    if (form.elements.email.value.trim()) body.email = form.elements.email.value.trim();
    const response = await fetch("/auth/dev", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) {
      const data = await response.json();
      error.textContent = (data.error && (data.error.details || []).map((d) => `${d.field}: ${d.reason}`).join("; ")) || data.error.message;
      return;
    }
    history.replaceState(null, "", "/" + location.hash);
    await loadSession();
    route();
  });
  show(h("h1", {}, "Sign in"), ...notes, form);
}

document.getElementById("signout").addEventListener("click", async () => {
  try {
    const { data } = await api("POST", "/auth/logout");
    session = null;
    location.assign(data.redirect || "/");
  } catch (error) {
    toast(error.message);
  }
});

// --- dashboard ---------------------------------------------------------------------------------

const USAGE_LABELS = {
  "requests.cpu": "CPU requests", "requests.memory": "Memory requests", "limits.cpu": "CPU limits",
  "limits.memory": "Memory limits", storage: "Storage", persistentvolumeclaims: "Volumes",
};

function amount(key, value) {
  if (key.includes("memory") || key === "storage") {
    const gib = value / 2 ** 30;
    return gib >= 1 ? `${+gib.toFixed(2)}Gi` : `${+(value / 2 ** 20).toFixed(0)}Mi`;
  }
  return `${+value.toFixed(2)}`;
}

function usageBlock(usage) {
  if (!usage) return h("p", { class: "hint" }, "Quota use unknown: the tenant file does not validate.");
  return h("div", { class: "usage" }, Object.entries(usage).map(([key, { used, max }]) => {
    const label = USAGE_LABELS[key] || key;
    return [
      h("span", {}, label),
      h("meter", { min: 0, max, value: used, low: max * 0.7, high: max * 0.9, optimum: 0, "aria-label": `${label}: ${amount(key, used)} of ${amount(key, max)}` }),
      h("span", {}, `${amount(key, used)} / ${amount(key, max)}`),
    ];
  }));
}

async function renderDashboard() {
  const { data } = await api("GET", "/portal/api/overview");
  const search = h("input", { id: "search", type: "search", placeholder: "name, plan or status", "aria-describedby": "search-hint" });
  const envSelect = h("select", { id: "env-filter" }, h("option", { value: "" }, "all environments"), h("option", { value: "dev" }, "dev"), h("option", { value: "prod" }, "prod"));
  const list = h("div", { class: "cards", id: "tenant-cards" });
  const count = h("p", { class: "muted", "aria-live": "polite" });
  const draw = () => {
    const needle = search.value.trim().toLowerCase();
    const shown = data.tenants.filter((t) =>
      (!envSelect.value || t.environment === envSelect.value) &&
      (!needle || [t.name, t.displayName || "", t.plan || "", t.status.phase, t.deleted ? "deleted" : ""].some((v) => v.toLowerCase().includes(needle))));
    count.textContent = `${shown.length} of ${data.tenants.length} tenants`;
    // A deleted tenant whose destroy has not succeeded (or failed) is listed, marked, with no quota use:
    // its page shows the destroy and offers to retry it.
    list.replaceChildren(...shown.map((t) => h("article", { class: t.deleted ? "card deleted" : "card", "data-tenant": `${t.environment}.${t.name}`, "data-deleted": t.deleted ? "true" : null },
      h("h2", {}, h("a", { href: `#/t/${t.environment}/${t.name}` }, `${t.environment}.${t.name}`)),
      h("div", { class: "row" }, badge(t.status.phase), t.deleted ? badge("deleted") : null, h("span", {}, `plan ${t.plan || "?"}`), h("span", { class: "muted" }, t.role)),
      t.displayName ? h("p", { class: "muted" }, t.displayName) : null,
      h("p", { class: "hint" }, t.lastOperation ? `last: ${t.lastOperation.kind} ${t.lastOperation.status}, ${when(t.lastOperation.createdAt || t.lastOperation.created_at)}` : "no operation yet"),
      t.status.phase === "failed" && t.status.message ? h("p", { class: "error" }, t.status.message) : null,
      t.deleted ? h("p", { class: "hint" }, "Deleted: its stack is not destroyed yet. Open it to follow or retry the destroy.") : usageBlock(t.usage))));
  };
  search.addEventListener("input", draw);
  envSelect.addEventListener("change", draw);
  draw();
  const canCreate = session.platformAdmin || Object.values(session.tenants).includes("tenant-admin");
  show(
    h("div", { class: "row" }, h("h1", {}, "Tenants"), h("span", { class: "spacer" }),
      canCreate ? h("a", { class: "button", href: "#/new", id: "new-tenant" }, "New tenant") : null),
    h("div", { class: "row panel" },
      h("div", {}, h("label", { for: "search" }, "Search"), search, h("p", { class: "hint", id: "search-hint" }, session.platformAdmin ? "Platform admins see every tenant." : "Only your tenants are listed.")),
      h("div", {}, h("label", { for: "env-filter" }, "Environment"), envSelect)),
    count, list);
}

// --- tenant page -------------------------------------------------------------------------------

function operationLine(event) {
  const parts = [when(event.time), event.kind];
  if (event.op) parts.push(event.op);
  if (event.resource) parts.push(event.resource);
  if (event.status) parts.push(event.status);
  if (event.message) parts.push(`— ${event.message}`);
  return h("li", {}, parts.filter(Boolean).join(" "));
}

function describeOperation(op) {
  if (!op) return "";
  let text = `${op.kind} ${op.status}`;
  if (op.summary && op.summary.error) text += `: ${op.summary.error}`;
  return text;
}

function follow(operationId, box, onEnd) {
  const status = h("p", { id: "op-status", "aria-live": "polite" }, `Following operation ${operationId}…`);
  const events = h("ul", { class: "events", id: "op-events" });
  box.replaceChildren(h("h2", {}, "Progress"), status, events);
  const stream = new EventSource(`/api/v1/operations/${encodeURIComponent(operationId)}/events`);
  liveStream = stream;
  stream.addEventListener("operation", (e) => { status.textContent = `Operation ${operationId}: ${JSON.parse(e.data).status}`; });
  stream.addEventListener("progress", (e) => { events.append(operationLine(JSON.parse(e.data))); events.scrollTop = events.scrollHeight; });
  stream.addEventListener("end", (e) => {
    const op = JSON.parse(e.data);
    stream.close();
    if (liveStream === stream) liveStream = null;
    status.textContent = `Operation ${operationId} ${op.status}` + (op.summary && op.summary.error ? `: ${op.summary.error}` : ".");
    status.className = op.status === "succeeded" ? "" : "error";
    status.setAttribute("data-final", op.status);
    if (onEnd) onEnd(op);
  });
  stream.addEventListener("timeout", () => stream.close());
  stream.onerror = () => { if (stream.readyState === EventSource.CLOSED) status.textContent += " (stream closed)"; };
}

function retryDeleteSection(env, name) {
  // A deleted tenant whose destroy failed still has its stack and data: DELETE again retries it (a
  // platform-admin may go on without the automatic backup), as its status message says.
  const force = session.platformAdmin ? h("input", { type: "checkbox", id: "delete-force" }) : null;
  return h("section", { class: "panel", "aria-labelledby": "retry-delete-h" }, h("h2", { id: "retry-delete-h" }, "Delete"),
    h("p", {}, "The destroy of this deleted tenant's stack failed: its resources and data are still there. Once the cause is fixed, retry it."),
    force ? h("p", {}, h("label", { for: "delete-force" }, force, " Go on without the automatic backup if it fails (platform-admin)")) : null,
    h("button", { type: "button", class: "danger", id: "retry-delete", onclick: async () => {
      if (!(await confirmDialog({ title: `Retry the destroy of ${env}.${name}?`, body: "The tenant's stack will be destroyed with all its data.", confirmLabel: "Destroy", danger: true, typed: name }))) return;
      try {
        const { data } = await api("DELETE", tenantPath(env, name) + (force && force.checked ? "?force=true" : ""));
        toast(`Deleting ${env}.${name}`);
        location.hash = `#/t/${env}/${name}/op/${data.operation.id}`;
      } catch (error) { toast(error.message); }
    } }, "Retry delete"));
}

async function renderTenant(env, name, followId) {
  const [{ data: tenant }, { data: ops }] = await Promise.all([
    api("GET", tenantPath(env, name)),
    api("GET", `${tenantPath(env, name)}/operations?limit=20`),
  ]);
  const admin = tenant.role === "tenant-admin";
  const spec = tenant.spec || {};
  const progress = h("section", { class: "panel", id: "progress", "aria-label": "Progress" });
  const active = tenant.lastOperation && ["queued", "running"].includes(tenant.lastOperation.status) ? tenant.lastOperation.id : null;
  const outputs = tenant.outputs || {};
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Status"), h("dd", { id: "tenant-phase", "data-phase": tenant.status.phase }, badge(tenant.status.phase), " ", tenant.status.message || ""),
    h("dt", {}, "Plan"), h("dd", {}, spec.plan || "?"),
    h("dt", {}, "Deletion protection"), h("dd", {}, spec.deletionProtection === false ? "off" : "on"),
    h("dt", {}, "Qdrant"), h("dd", {}, spec.qdrant && spec.qdrant.enabled ? `on (${spec.qdrant.version || "default version"})` : "off"),
    h("dt", {}, "vCluster"), h("dd", {}, spec.vcluster && spec.vcluster.enabled ? "on" : "off"),
    ...Object.entries(outputs).filter(([k]) => !k.toLowerCase().includes("key") && k !== "vclusterKubeconfig").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, h("code", {}, String(v)))]));

  const secrets = h("section", { class: "panel", "aria-labelledby": "secrets-h" }, h("h2", { id: "secrets-h" }, "Secrets"));
  if (spec.qdrant && spec.qdrant.enabled && !tenant.deleted) {
    const rotation = h("p", { class: "hint", id: "key-rotation" });
    secrets.append(rotation);
    api("GET", `${tenantPath(env, name)}/qdrant/keys/rotate`).then(({ data }) => {
      rotation.setAttribute("data-phase", data.phase);
      rotation.textContent = data.phase === "none" ? "Keys never rotated." :
        `Key generation ${data.generation}: ${data.phase.replace("_", " ")}` +
        (data.phase === "stalled" ? ": the update deploying the new keys failed; the previous keys keep working until the new ones are deployed." :
          data.oldKeysAccepted || data.phase === "rolling_out" ? `; the previous keys work until ${when(data.graceUntil)}.` : "; the previous keys are revoked.");
    }).catch(() => {});
  }
  if (!admin) secrets.append(h("p", { class: "hint" }, "Revealing secrets needs the tenant-admin role."));
  else {
    const revealed = h("div", { id: "revealed" });
    secrets.append(
      h("p", { class: "hint" }, "Every reveal and download is recorded in the audit log."),
      h("div", { class: "row" },
        spec.qdrant && spec.qdrant.enabled && !tenant.deleted ? h("button", { type: "button", id: "reveal-key", onclick: async () => {
          if (!(await confirmDialog({ title: "Reveal the Qdrant API keys?", body: `The keys of ${env}.${name} will be shown on this screen, and the reveal is audited.`, confirmLabel: "Reveal" }))) return;
          try {
            const { data } = await api("POST", `${tenantPath(env, name)}/qdrant/api-key/reveal`);
            const rows = [["API key", data.apiKey], ["Read-only key", data.readOnlyApiKey]].filter(([, v]) => v);
            revealed.replaceChildren(...rows.map(([label, value]) => h("div", {},
              h("p", { class: "hint" }, label), h("div", { class: "row" }, h("code", { class: "secret", "data-secret": label }, value),
                h("button", { type: "button", class: "secondary", onclick: () => copy(value, label) }, `Copy ${label}`)))));
          } catch (error) { revealed.replaceChildren(h("p", { class: "error", role: "alert" }, error.message)); }
        } }, "Reveal Qdrant API keys") : null,
        spec.qdrant && spec.qdrant.enabled && !tenant.deleted ? h("button", { type: "button", class: "secondary", id: "rotate-keys", onclick: async () => {
          if (!(await confirmDialog({ title: `Rotate the Qdrant keys of ${env}.${name}?`, body: "New API and read-only keys are made; the current keys keep working for one hour, then they stop. Re-read your keys (Vault or the Secret qdrant-api-keys) before then.", confirmLabel: "Rotate keys" }))) return;
          try {
            const { data } = await api("POST", `${tenantPath(env, name)}/qdrant/keys/rotate`, { grace: "1h" });
            toast(`Rotating the keys of ${env}.${name}`);
            location.hash = `#/t/${env}/${name}/op/${data.operation.id}`;
          } catch (error) { revealed.replaceChildren(h("p", { class: "error", role: "alert", id: "rotate-error" }, error.message)); }
        } }, "Rotate keys") : null,
        spec.vcluster && spec.vcluster.enabled ? h("a", { class: "button secondary", href: `${tenantPath(env, name)}/vcluster/kubeconfig`, download: `${env}-${name}-vcluster.kubeconfig`, id: "kubeconfig" }, "Download vCluster kubeconfig") : null),
      revealed);
  }

  const history = h("section", { class: "panel", "aria-labelledby": "history-h" }, h("h2", { id: "history-h" }, "Operations"),
    ops.operations.length === 0 ? h("p", { class: "hint" }, "No operations yet.") :
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Kind"), h("th", {}, "Status"), h("th", { class: "optional" }, "By"), h("th", {}, "Details"))),
        h("tbody", {}, ops.operations.map((op) => h("tr", {},
          h("td", {}, when(op.createdAt)), h("td", {}, op.kind), h("td", {}, badge(op.status)), h("td", { class: "optional" }, op.requestedBy || ""),
          h("td", {}, op.summary && op.summary.error ? op.summary.error : h("button", { type: "button", class: "link", onclick: () => follow(op.id, progress) }, "show progress")))))));

  const keys = admin && !tenant.deleted ? await apiKeysSection(name) : null;
  const danger = admin && !tenant.deleted ? h("section", { class: "panel", "aria-labelledby": "delete-h" }, h("h2", { id: "delete-h" }, "Delete"),
    spec.deletionProtection === false
      ? h("p", {}, "Deleting removes the tenant's file from git and destroys its stack: its data is gone.")
      : h("p", { class: "notice" }, "Deletion protection is on: the stack cannot be destroyed. Edit the tenant and turn deletion protection off first, then delete."),
    h("button", { type: "button", class: "danger", id: "delete", disabled: spec.deletionProtection !== false, onclick: async () => {
      if (!(await confirmDialog({ title: `Delete ${env}.${name}?`, body: "The tenant's stack will be destroyed with all its data.", confirmLabel: "Delete", danger: true, typed: name }))) return;
      try {
        const { data } = await api("DELETE", tenantPath(env, name), undefined, tenant.etag ? { "If-Match": `"${tenant.etag}"` } : {});
        toast(`Deleting ${env}.${name}`);
        location.hash = `#/t/${env}/${name}/op/${data.operation.id}`;
      } catch (error) { toast(error.message); }
    } }, "Delete tenant")) : admin && tenant.deleted && tenant.status.phase === "failed" ? retryDeleteSection(env, name) : null;

  show(
    h("p", {}, h("a", { href: "#/" }, "← Tenants")),
    h("div", { class: "row" }, h("h1", {}, `${env}.${name}`), h("span", { class: "spacer" }),
      spec.qdrant && spec.qdrant.enabled && !tenant.deleted ? h("a", { class: "button secondary", href: `#/t/${env}/${name}/backups`, id: "backups" }, "Backups") : null,
      admin && !tenant.deleted ? h("a", { class: "button", href: `#/t/${env}/${name}/edit`, id: "edit" }, "Edit") : null),
    spec.displayName ? h("p", { class: "muted" }, spec.displayName) : null,
    h("section", { class: "panel", "aria-label": "Summary" }, facts),
    progress, secrets, keys, history, danger);
  const toFollow = followId || active;
  const here = location.hash;
  if (toFollow) follow(toFollow, progress, () => setTimeout(() => { if (location.hash === here) renderTenantAfter(env, name, toFollow); }, 300));
  else progress.replaceChildren(h("h2", {}, "Progress"), h("p", { class: "hint" }, tenant.lastOperation ? `Last operation: ${describeOperation(tenant.lastOperation)}` : "Nothing running."));
}

async function renderTenantAfter(env, name, finishedId) {
  // Refresh the page's facts once an operation ends, keeping its final progress visible.
  const progress = document.getElementById("progress");
  const kept = progress ? [...progress.childNodes] : [];
  await renderTenant(env, name, null);
  const fresh = document.getElementById("progress");
  if (fresh && kept.length) fresh.replaceChildren(...kept);
  void finishedId;
}

async function apiKeysSection(name) {
  const section = h("section", { class: "panel", "aria-labelledby": "keys-h" }, h("h2", { id: "keys-h" }, "API keys"));
  const shown = h("div", { id: "new-key", "aria-live": "polite" });
  const table = h("tbody", {});
  const draw = async () => {
    const { data } = await api("GET", `/api/v1/tenants/${encodeURIComponent(name)}/api-keys`);
    table.replaceChildren(...data.apiKeys.map((key) => h("tr", { "data-key": key.name },
      h("td", {}, key.name), h("td", {}, key.role), h("td", { class: "optional" }, when(key.expiresAt)),
      h("td", {}, key.active ? badge("active") : badge(key.revokedAt ? "revoked" : "expired")),
      h("td", {}, key.active ? h("button", { type: "button", class: "secondary", "aria-label": `Revoke ${key.name}`, onclick: async () => {
        if (!(await confirmDialog({ title: `Revoke ${key.name}?`, body: "Machines using this key stop working at once.", confirmLabel: "Revoke", danger: true }))) return;
        try {
          await api("DELETE", `/api/v1/tenants/${encodeURIComponent(name)}/api-keys/${key.id}`);
          if (shown.dataset.keyId === key.id) { shown.replaceChildren(); delete shown.dataset.keyId; }  // a dead key's secret
          toast(`${key.name} revoked`); await draw();
        }
        catch (error) { toast(error.message); }
      } }, "Revoke") : ""))));
  };
  const error = h("p", { class: "error", id: "key-error", role: "alert" });
  const form = h("form", { class: "row", novalidate: true },
    h("div", {}, h("label", { for: "key-name" }, "Name"), h("input", { id: "key-name", name: "name", required: true, placeholder: "ci-reader" })),
    h("div", {}, h("label", { for: "key-role" }, "Role"), h("select", { id: "key-role", name: "role" }, h("option", { value: "tenant-viewer" }, "tenant-viewer"), h("option", { value: "tenant-admin" }, "tenant-admin"))),
    h("div", {}, h("label", { for: "key-days" }, "Expires in (days)"), h("input", { id: "key-days", name: "days", type: "number", min: 1, max: 3650, value: 90 })),
    h("div", {}, h("label", { "aria-hidden": "true" }, " "), h("button", { type: "submit", id: "create-key" }, "Create key")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      const { data } = await api("POST", `/api/v1/tenants/${encodeURIComponent(name)}/api-keys`,
        { name: form.elements.name.value.trim(), role: form.elements.role.value, expiresInDays: Number(form.elements.days.value) });
      shown.replaceChildren(h("div", { class: "notice" },
        h("p", {}, `Key ${data.name} — shown only now; copy it somewhere safe.`),
        h("div", { class: "row" }, h("code", { class: "secret", id: "created-key" }, data.key),
          h("button", { type: "button", class: "secondary", onclick: () => copy(data.key, "API key") }, "Copy key"))));
      shown.dataset.keyId = data.id;
      form.reset();
      await draw();
    } catch (failure) {
      error.textContent = failure.details.length ? failure.details.map((d) => `${d.field}: ${d.reason}`).join("; ") : failure.message;
    }
  });
  await draw();
  section.append(form, error, shown, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Role"), h("th", { class: "optional" }, "Expires"), h("th", {}, "State"), h("th", {}, h("span", { class: "muted" }, "Action")))), table));
  return section;
}

// --- create and edit ---------------------------------------------------------------------------

async function formSchema() {
  if (!schemaCache) schemaCache = (await api("GET", "/portal/api/schema")).data;
  return schemaCache;
}

function describe(schema, path) {
  // The description the tenant schema gives a field (dotted camelCase path).
  let node = schema.schema;
  const defs = schema.schema.$defs || {};
  for (const part of path.split(".")) {
    const props = node.properties || {};
    let next = props[part];
    if (!next) return "";
    const ref = next.$ref || (next.anyOf || []).map((a) => a.$ref).find(Boolean);
    node = ref ? { ...defs[ref.split("/").pop()], description: next.description || defs[ref.split("/").pop()].description } : next;
  }
  return node.description || "";
}

function field(schema, path, label, control, hint) {
  const id = `f-${path.replaceAll(".", "-")}`;
  control.id = id;
  control.dataset.field = path;
  const help = [describe(schema, path), hint].filter(Boolean).join(" ");
  control.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
  const isCheck = control.type === "checkbox";
  return h("div", { class: isCheck ? "check-field" : "" },
    isCheck ? h("label", { class: "check", for: id }, control, label) : [h("label", { for: id }, label), control],
    h("p", { class: "hint", id: `${id}-hint` }, help),
    h("p", { class: "error", id: `${id}-error`, "data-error-for": path }));
}

function setIn(doc, path, value) {
  const parts = path.split(".");
  let node = doc;
  for (const part of parts.slice(0, -1)) node = node[part] = node[part] && typeof node[part] === "object" ? node[part] : {};
  const last = parts[parts.length - 1];
  if (value === undefined) delete node[last]; else node[last] = value;
}

function getIn(doc, path) {
  let node = doc;
  for (const part of path.split(".")) {
    if (!node || typeof node !== "object") return undefined;
    node = node[part];
  }
  return node;
}

function prune(node) {
  if (!node || typeof node !== "object" || Array.isArray(node)) return node;
  for (const [key, value] of Object.entries(node)) {
    const cleaned = prune(value);
    if (cleaned && typeof cleaned === "object" && !Array.isArray(cleaned) && Object.keys(cleaned).length === 0) delete node[key];
  }
  return node;
}

async function renderForm(env, name) {
  const schema = await formSchema();
  const editing = Boolean(name);
  let current = null;
  let etag = null;
  if (editing) {
    const { data } = await api("GET", tenantPath(env, name));
    current = data.spec;
    etag = data.etag;
  }
  const spec = current ? structuredClone(current) : { plan: schema.selfServicePlans[0], deletionProtection: true, qdrant: { enabled: true } };
  const q = spec.qdrant || {};
  const v = spec.vcluster || {};
  const val = (x) => (x === undefined || x === null ? "" : String(x));
  const input = (attrs, value) => { const el = h("input", attrs); el.value = val(value); return el; };
  const checkbox = (value) => { const el = h("input", { type: "checkbox" }); el.checked = Boolean(value); return el; };
  const select = (options, value) => { const el = h("select", {}, options.map((o) => h("option", { value: o }, o))); el.value = value; return el; };
  const controls = {
    environment: select(schema.environments, env || schema.environments[0]),
    name: input({ required: true, autocomplete: "off", pattern: "[a-z]([-a-z0-9]*[a-z0-9])?" }, name),
    displayName: input({}, spec.displayName),
    owners: input({ type: "text", autocomplete: "email" }, (spec.owners || [session.email || ""]).filter(Boolean).join(", ")),
    plan: select(Object.keys(schema.plans), spec.plan),
    deletionProtection: checkbox(spec.deletionProtection !== false),
    labels: h("textarea", { rows: 2 }),
    "qdrant.enabled": checkbox(q.enabled),
    "qdrant.version": select(schema.qdrantVersions, q.version || schema.qdrantDefaultVersion),
    "qdrant.replicas": input({ type: "number", min: 1, max: 9 }, q.replicas),
    "qdrant.resources.cpu": input({ inputmode: "decimal" }, q.resources && q.resources.cpu),
    "qdrant.resources.memory": input({}, q.resources && q.resources.memory),
    "qdrant.storage.size": input({}, q.storage && q.storage.size),
    "qdrant.storage.storageClass": input({}, q.storage && q.storage.storageClass),
    "qdrant.readOnlyKey": checkbox(q.readOnlyKey !== false),
    "qdrant.snapshots.enabled": checkbox(!q.snapshots || q.snapshots.enabled !== false),
    "qdrant.snapshots.size": input({}, q.snapshots && q.snapshots.size),
    "vcluster.enabled": checkbox(v.enabled),
    "vcluster.kubernetesVersion": select(schema.vclusterVersions, v.kubernetesVersion || schema.vclusterDefaultVersion),
    "vcluster.resources.cpu": input({}, v.resources && v.resources.cpu),
    "vcluster.resources.memory": input({}, v.resources && v.resources.memory),
  };
  controls.labels.value = Object.entries(spec.labels || {}).map(([k, x]) => `${k}=${x}`).join("\n");
  if (editing) { controls.environment.disabled = true; controls.name.readOnly = true; }

  const limits = h("div", { class: "panel", id: "plan-limits", "aria-live": "polite" });
  const reasonBox = h("div", { id: "approval", hidden: true });
  const reason = h("textarea", { id: "f-reason", rows: 2, "aria-describedby": "f-reason-hint" });
  reasonBox.append(h("div", { class: "notice", id: "approval-note" }), h("label", { for: "f-reason" }, "Reason for the platform team"), reason,
    h("p", { class: "hint", id: "f-reason-hint" }, "Submitting files a change request; nothing changes until a platform admin approves it."));
  const previewBox = h("section", { class: "panel", id: "preview", "aria-live": "polite", "aria-label": "Preview" }, h("p", { class: "hint" }, "The preview of your change appears here."));
  const general = h("div", { id: "form-error", role: "alert" });
  const submit = h("button", { type: "submit", id: "submit" }, editing ? "Save changes" : "Create tenant");

  const planHints = () => {
    const p = schema.plans[controls.plan.value];
    controls["qdrant.replicas"].placeholder = `plan default: ${p.qdrantDefaultReplicas}`;
    controls["qdrant.resources.cpu"].placeholder = `plan default: ${p.qdrantDefaultSize.cpu}`;
    controls["qdrant.resources.memory"].placeholder = `plan default: ${p.qdrantDefaultSize.memory}`;
    controls["qdrant.storage.size"].placeholder = `plan default: ${p.qdrantDefaultStorage}`;
    controls["qdrant.snapshots.size"].placeholder = `plan default: ${p.qdrantDefaultSnapshotStorage}`;
    controls["vcluster.resources.cpu"].placeholder = `plan default: ${p.vclusterDefaultSize.cpu}`;
    controls["vcluster.resources.memory"].placeholder = `plan default: ${p.vclusterDefaultSize.memory}`;
    limits.replaceChildren(h("h2", {}, `The ${controls.plan.value} plan`), h("dl", { class: "facts" },
      h("dt", {}, "Qdrant nodes"), h("dd", {}, `up to ${p.qdrantMaxReplicas} (default ${p.qdrantDefaultReplicas})`),
      h("dt", {}, "Largest container"), h("dd", {}, `${p.containerMax.cpu} CPU, ${p.containerMax.memory}`),
      h("dt", {}, "Namespace quota"), h("dd", {}, `requests ${p.quota.requests_cpu} CPU / ${p.quota.requests_memory}, limits ${p.quota.limits_cpu} CPU / ${p.quota.limits_memory}, storage ${p.quota.requests_storage}, ${p.quota.persistent_volume_claims} volumes (sidecars count)`),
      h("dt", {}, "vCluster"), h("dd", {}, p.vclusterAllowed ? "included" : "not included"),
      h("dt", {}, "Self-service"), h("dd", {}, schema.selfServicePlans.includes(controls.plan.value) ? "yes" : "needs a platform admin's approval")));
  };

  const documentFromForm = () => {
    const doc = structuredClone(current || {});
    delete doc.name;
    // The platform's record of key rotations: never a form field (the service keeps it on a write).
    if (doc.qdrant) delete doc.qdrant.keyRotation;
    const text = (k) => controls[k].value.trim() || undefined;
    setIn(doc, "displayName", text("displayName"));
    setIn(doc, "owners", controls.owners.value.split(",").map((s) => s.trim()).filter(Boolean));
    setIn(doc, "plan", controls.plan.value);
    // A control showing a default writes it only where the file already holds it or the value differs:
    // the file keeps what its author pinned, and a save never pins the rest to today's defaults.
    const keep = (path, value, fallback) => {
      if (getIn(doc, path) !== undefined || value !== fallback) setIn(doc, path, value);
    };
    keep("deletionProtection", controls.deletionProtection.checked, true);
    const labels = {};
    for (const line of controls.labels.value.split("\n").map((l) => l.trim()).filter(Boolean)) {
      const at = line.indexOf("=");
      labels[at < 0 ? line : line.slice(0, at).trim()] = at < 0 ? "" : line.slice(at + 1).trim();
    }
    setIn(doc, "labels", Object.keys(labels).length ? labels : undefined);
    keep("qdrant.enabled", controls["qdrant.enabled"].checked, false);
    keep("qdrant.version", controls["qdrant.version"].value, schema.qdrantDefaultVersion);
    const replicas = text("qdrant.replicas");
    setIn(doc, "qdrant.replicas", replicas === undefined ? undefined : Number(replicas));
    for (const k of ["qdrant.resources.cpu", "qdrant.resources.memory", "qdrant.storage.size", "qdrant.storage.storageClass", "qdrant.snapshots.size", "vcluster.resources.cpu", "vcluster.resources.memory"]) setIn(doc, k, text(k));
    keep("qdrant.readOnlyKey", controls["qdrant.readOnlyKey"].checked, true);
    keep("qdrant.snapshots.enabled", controls["qdrant.snapshots.enabled"].checked, true);
    keep("vcluster.enabled", controls["vcluster.enabled"].checked, false);
    keep("vcluster.kubernetesVersion", controls["vcluster.kubernetesVersion"].value, schema.vclusterDefaultVersion);
    return prune(doc);
  };

  let lastCheck = null;
  let checkSeq = 0;
  const showIssues = (issues) => {
    for (const el of main.querySelectorAll("[data-error-for]")) el.textContent = "";
    for (const el of main.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    const unplaced = [];
    const paths = Object.keys(controls).sort((a, b) => b.length - a.length);
    for (const issue of issues) {
      const target = paths.find((p) => issue.field === p || issue.field.startsWith(p + ".") || (issue.field.startsWith(p) && /^\.\d/.test(issue.field.slice(p.length))));
      const slot = target && main.querySelector(`[data-error-for="${target}"]`);
      if (slot) { slot.textContent = (slot.textContent ? slot.textContent + " " : "") + issue.reason; controls[target].setAttribute("aria-invalid", "true"); }
      else unplaced.push(`${issue.field}: ${issue.reason}`);
    }
    general.replaceChildren(...(unplaced.length ? [h("div", { class: "alert" }, h("p", {}, "Fix these first:"), h("ul", {}, unplaced.map((u) => h("li", {}, u))))] : []));
  };

  let inflight = Promise.resolve();
  const check = () => {
    // One check at a time (the service renders one preview per person at once); a newer request
    // waiting behind a running one makes the running one's answer moot.
    const seq = ++checkSeq;
    inflight = inflight.then(() => (seq === checkSeq ? runCheck(seq) : null));
    return inflight;
  };
  const runCheck = async (seq) => {
    const targetEnv = controls.environment.value;
    const targetName = controls.name.value.trim();
    if (!targetName) { previewBox.replaceChildren(h("p", { class: "hint" }, "Name the tenant to see a preview.")); return null; }
    previewBox.replaceChildren(h("p", { class: "hint" }, "Checking…"));
    try {
      const { data } = await api("POST", `/portal/api/environments/${targetEnv}/tenants/${encodeURIComponent(targetName)}/check`, { spec: documentFromForm(), create: !editing });
      if (seq !== checkSeq) return null;
      lastCheck = data;
      showIssues(data.issues || []);
      reasonBox.hidden = !data.needsApproval;
      if (data.needsApproval) document.getElementById("approval-note").textContent = "A platform admin must approve this change: " + data.needs.map((n) => `${n.field} — ${n.reason}`).join("; ");
      submit.textContent = data.needsApproval ? "Request approval" : editing ? "Save changes" : "Create tenant";
      submit.disabled = !data.valid;
      if (!data.valid) { previewBox.replaceChildren(h("h2", {}, "Preview"), h("p", { class: "error" }, "Fix the fields marked above to see the preview.")); return data; }
      const p = data.preview || {};
      previewBox.replaceChildren(h("h2", {}, "Preview"),
        p.error ? h("p", { class: "error" }, p.error) : h("p", { id: "preview-summary" }, Object.entries(p.summary || {}).filter(([k]) => k !== "same").map(([k, n]) => `${n} to ${k}`).join(", ") || "No change."),
        h("details", {}, h("summary", {}, "Resources that change"),
          h("ul", {}, (p.changes || []).map((c) => h("li", {}, `${c.action} ${c.type} ${c.name}${c.changedFields && c.changedFields.length ? ` (${c.changedFields.slice(0, 6).join(", ")})` : ""}`)))),
        h("details", {}, h("summary", {}, "The document sent to the API"), h("pre", {}, JSON.stringify(data.document, null, 2))));
      return data;
    } catch (error) {
      if (seq === checkSeq) previewBox.replaceChildren(h("p", { class: "error" }, error.message));
      return null;
    }
  };
  let timer = null;
  const scheduleCheck = () => { clearTimeout(timer); timer = setTimeout(check, 350); };

  const form = h("form", { novalidate: true, id: "tenant-form" },
    h("fieldset", {}, h("legend", {}, "Tenant"), h("div", { class: "grid" },
      field(schema, "environment", "Environment", controls.environment, "dev or prod."),
      field(schema, "name", "Name", controls.name),
      field(schema, "displayName", "Display name", controls.displayName),
      field(schema, "owners", "Owners", controls.owners, "Comma-separated email addresses."),
      field(schema, "plan", "Plan", controls.plan),
      field(schema, "labels", "Labels", controls.labels, "One key=value per line.")),
      field(schema, "deletionProtection", "Deletion protection", controls.deletionProtection)),
    limits,
    h("fieldset", {}, h("legend", {}, "Qdrant"),
      field(schema, "qdrant.enabled", "Run Qdrant", controls["qdrant.enabled"]),
      h("div", { class: "grid" },
        field(schema, "qdrant.version", "Version", controls["qdrant.version"]),
        field(schema, "qdrant.replicas", "Replicas", controls["qdrant.replicas"]),
        field(schema, "qdrant.resources.cpu", "CPU per node", controls["qdrant.resources.cpu"], "Set CPU and memory together."),
        field(schema, "qdrant.resources.memory", "Memory per node", controls["qdrant.resources.memory"]),
        field(schema, "qdrant.storage.size", "Volume size", controls["qdrant.storage.size"], "Fixed once created."),
        field(schema, "qdrant.storage.storageClass", "Storage class", controls["qdrant.storage.storageClass"]),
        field(schema, "qdrant.snapshots.size", "Snapshot volume size", controls["qdrant.snapshots.size"])),
      field(schema, "qdrant.readOnlyKey", "Read-only key", controls["qdrant.readOnlyKey"]),
      field(schema, "qdrant.snapshots.enabled", "Snapshot volume", controls["qdrant.snapshots.enabled"])),
    h("fieldset", {}, h("legend", {}, "vCluster"),
      field(schema, "vcluster.enabled", "Run a vCluster", controls["vcluster.enabled"]),
      h("div", { class: "grid" },
        field(schema, "vcluster.kubernetesVersion", "Kubernetes version", controls["vcluster.kubernetesVersion"]),
        field(schema, "vcluster.resources.cpu", "Control-plane CPU", controls["vcluster.resources.cpu"]),
        field(schema, "vcluster.resources.memory", "Control-plane memory", controls["vcluster.resources.memory"]))),
    previewBox, reasonBox, general,
    h("div", { class: "row" }, submit, h("a", { class: "button secondary", href: editing ? `#/t/${env}/${name}` : "#/" }, "Cancel")));

  form.addEventListener("input", scheduleCheck);
  form.addEventListener("change", (event) => { if (event.target === controls.plan) planHints(); scheduleCheck(); });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearTimeout(timer);
    submit.disabled = true;
    const checked = await check();
    if (!checked || !checked.valid) { submit.disabled = false; return; }
    const targetEnv = controls.environment.value;
    const targetName = controls.name.value.trim();
    try {
      let answer;
      if (checked.needsApproval) {
        answer = (await api("POST", `${tenantPath(targetEnv, targetName)}/change-requests`, { spec: documentFromForm(), reason: reason.value.trim() || "(no reason given)" })).data;
      } else {
        const headers = editing ? { "If-Match": `"${etag}"` } : { "If-None-Match": "*" };
        answer = (await api("PUT", tenantPath(targetEnv, targetName), documentFromForm(), headers)).data;
      }
      if (answer.changeRequest) {
        toast("Change request filed; a platform admin will decide it.");
        location.hash = `#/requests/${answer.changeRequest.id}`;
      } else {
        toast(editing ? "Saved; applying the change" : "Created; applying it");
        location.hash = `#/t/${targetEnv}/${targetName}/op/${answer.operation.id}`;
      }
    } catch (error) {
      submit.disabled = false;
      showIssues(error.details || []);
      general.prepend(h("p", { class: "alert" }, error.message));
    }
  });
  planHints();
  show(h("p", {}, h("a", { href: editing ? `#/t/${env}/${name}` : "#/" }, "← Back")), h("h1", {}, editing ? `Edit ${env}.${name}` : "New tenant"), form);
  check();
}

// --- change requests ---------------------------------------------------------------------------

function requestRow(r) {
  return h("tr", { "data-request": r.id },
    h("td", {}, h("a", { href: `#/requests/${r.id}` }, r.id)), h("td", {}, `${r.environment}.${r.tenant}`),
    h("td", {}, badge(r.status)), h("td", { class: "optional" }, r.needs.map((n) => n.field).join(", ")),
    h("td", { class: "optional" }, r.requesterName), h("td", { class: "optional" }, when(r.createdAt)));
}

async function renderRequests() {
  const filter = h("select", { id: "request-status" }, ["pending", "approved", "rejected", "expired", ""].map((s) => h("option", { value: s }, s || "all")));
  const body = h("tbody", {});
  const draw = async () => {
    const { data } = await api("GET", `/api/v1/change-requests${filter.value ? `?status=${filter.value}` : ""}`);
    body.replaceChildren(...(data.changeRequests.length ? data.changeRequests.map(requestRow) : [h("tr", {}, h("td", { colspan: 6 }, "No change requests."))]));
  };
  filter.addEventListener("change", draw);
  await draw();
  show(h("h1", {}, "Change requests"),
    h("p", { class: "muted" }, session.platformAdmin ? "Changes tenant-admins may not make alone wait here for your decision." : "Your requests and those on your tenants, with their outcome."),
    h("div", { class: "panel" }, h("label", { for: "request-status" }, "Status"), filter),
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Request"), h("th", {}, "Tenant"), h("th", {}, "Status"), h("th", { class: "optional" }, "Needs"), h("th", { class: "optional" }, "By"), h("th", { class: "optional" }, "Filed"))), body));
}

async function renderRequest(id) {
  const { data: r } = await api("GET", `/api/v1/change-requests/${encodeURIComponent(id)}`);
  const fmt = (x) => (x === undefined || x === null ? "—" : typeof x === "object" ? JSON.stringify(x) : String(x));
  const outcome = h("div", { id: "decision", "aria-live": "polite" });
  const decide = session.platformAdmin && r.status === "pending" ? (() => {
    const reason = h("textarea", { id: "reject-reason", rows: 2 });
    const error = h("p", { class: "error", role: "alert", id: "decide-error" });
    return h("section", { class: "panel", "aria-labelledby": "decide-h" }, h("h2", { id: "decide-h" }, "Decide"),
      h("p", {}, "Approving commits exactly the document above and applies it. It is refused if the tenant changed since the request was made."),
      h("div", { class: "row" }, h("button", { type: "button", id: "approve", onclick: async () => {
        if (!(await confirmDialog({ title: `Approve ${r.id}?`, body: `This applies the change to ${r.environment}.${r.tenant} now.`, confirmLabel: "Approve" }))) return;
        try {
          const { data } = await api("POST", `/api/v1/change-requests/${r.id}/approve`);
          toast(`${r.id} approved`);
          location.hash = `#/t/${r.environment}/${r.tenant}/op/${data.accepted.operation.id}`;
        } catch (failure) { error.textContent = failure.message; }
      } }, "Approve")),
      h("label", { for: "reject-reason" }, "Reason for rejecting (the requester sees it)"), reason,
      h("div", { class: "row" }, h("button", { type: "button", class: "danger", id: "reject", onclick: async () => {
        if (!reason.value.trim()) { error.textContent = "Give the requester a reason."; reason.focus(); return; }
        try {
          await api("POST", `/api/v1/change-requests/${r.id}/reject`, { reason: reason.value.trim() });
          toast(`${r.id} rejected`);
          await renderRequest(r.id);
        } catch (failure) { error.textContent = failure.message; }
      } }, "Reject")), error);
  })() : null;
  if (r.status !== "pending") {
    outcome.append(h("div", { class: r.status === "approved" ? "panel" : "alert" },
      h("p", {}, h("strong", {}, `Outcome: ${r.status}`), r.decidedBy ? ` by ${r.decidedBy}, ${when(r.decidedAt)}` : ""),
      r.decisionReason ? h("p", { id: "decision-reason" }, `Reason: ${r.decisionReason}`) : null,
      r.operationId ? h("p", {}, h("a", { href: `#/t/${r.environment}/${r.tenant}/op/${r.operationId}` }, "Follow the update")) : null));
  }
  const p = r.preview || {};
  show(h("p", {}, h("a", { href: "#/requests" }, "← Change requests")),
    h("div", { class: "row" }, h("h1", {}, `${r.id}`), badge(r.status)),
    outcome,
    h("section", { class: "panel" }, h("dl", { class: "facts" },
      h("dt", {}, "Tenant"), h("dd", {}, `${r.environment}.${r.tenant}`),
      h("dt", {}, "Requested by"), h("dd", {}, `${r.requesterName} (${r.requestedBy})`),
      h("dt", {}, "Filed"), h("dd", {}, when(r.createdAt)),
      h("dt", {}, "Expires"), h("dd", {}, when(r.expiresAt)),
      h("dt", {}, "Reason"), h("dd", {}, r.reason),
      h("dt", {}, "Needs a platform admin"), h("dd", {}, h("ul", {}, r.needs.map((n) => h("li", {}, `${n.field}: ${n.reason}`)))))),
    h("section", { class: "panel", "aria-labelledby": "diff-h" }, h("h2", { id: "diff-h" }, "Diff"),
      h("table", { id: "diff" }, h("thead", {}, h("tr", {}, h("th", {}, "Field"), h("th", {}, "Before"), h("th", {}, "After"))),
        h("tbody", {}, r.diff.map((d) => h("tr", {}, h("td", {}, h("code", {}, d.field)), h("td", { class: "diff-before" }, fmt(d.before)), h("td", { class: "diff-after" }, fmt(d.after))))))),
    h("section", { class: "panel", "aria-labelledby": "rpreview-h" }, h("h2", { id: "rpreview-h" }, "Preview"),
      p.error ? h("p", { class: "error" }, p.error) : h("p", {}, Object.entries(p.summary || {}).filter(([k]) => k !== "same").map(([k, n]) => `${n} to ${k}`).join(", ") || "No resource changes."),
      h("details", {}, h("summary", {}, "Resources that change"), h("ul", {}, (p.changes || []).map((c) => h("li", {}, `${c.action} ${c.type} ${c.name}`))))),
    decide);
}

// --- Qdrant backups ----------------------------------------------------------------------------

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n, unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

async function renderBackups(env, name) {
  const base = `${tenantPath(env, name)}/qdrant`;
  const { data: tenant } = await api("GET", tenantPath(env, name));
  const admin = tenant.role === "tenant-admin";
  const progress = h("section", { class: "panel", id: "progress", "aria-label": "Progress" },
    h("h2", {}, "Progress"), h("p", { class: "hint" }, "Nothing running."));
  const listBox = h("section", { class: "panel", "aria-labelledby": "backups-h" });
  const restoreBox = h("section", { class: "panel", "aria-labelledby": "restore-h" });
  const here = location.hash;

  async function load() {
    let backups = [];
    try {
      backups = (await api("GET", `${base}/snapshots`)).data.backups;
    } catch (error) {
      if (error.status === 401) throw error;
      listBox.replaceChildren(h("h2", { id: "backups-h" }, "Backups"), h("p", { class: "error", role: "alert" }, error.message));
      restoreBox.replaceChildren();
      return;
    }
    listBox.replaceChildren(h("h2", { id: "backups-h" }, "Backups"),
      backups.length === 0 ? h("p", { class: "hint", id: "no-backups" }, "No backups yet.") :
        h("table", { id: "backup-list" },
          h("thead", {}, h("tr", {}, h("th", {}, "When"), h("th", {}, "Size"), h("th", {}, "Collections"), h("th", { class: "optional" }, "Checksum"), h("th", {}, "ID"))),
          h("tbody", {}, backups.map((b) => h("tr", { "data-backup": b.id },
            h("td", {}, when(b.created), b.retired && h("span", { class: "hint retired" }, ` (left by a deleted tenant of this name; kept until ${when(b.retired.expires)})`)), h("td", {}, bytes(b.size)), h("td", {}, b.collections.join(", ") || "—"),
            h("td", { class: "optional" }, h("code", { title: b.checksum }, b.checksum.slice(0, 12) + "…")), h("td", {}, h("code", {}, b.id)))))));
    restoreForm(backups);
  }

  function run(operation) {
    follow(operation.id, progress, () => setTimeout(() => { if (location.hash === here) load(); }, 300));
  }

  function restoreForm(backups) {
    if (!admin || backups.length === 0) { restoreBox.replaceChildren(); return; }
    const choice = h("select", { id: "restore-backup" }, backups.map((b) => h("option", { value: b.id }, `${when(b.created)} (${b.id})`)));
    const all = h("input", { type: "radio", name: "scope", id: "scope-all", value: "all", checked: true });
    const some = h("input", { type: "radio", name: "scope", id: "scope-some", value: "some" });
    const boxes = h("fieldset", { id: "restore-collections", disabled: true }, h("legend", {}, "Collections"));
    const fillBoxes = () => {
      const picked = backups.find((b) => b.id === choice.value);
      boxes.replaceChildren(h("legend", {}, "Collections"), ...picked.collections.map((c) => h("label", {},
        h("input", { type: "checkbox", name: "collection", value: c }), ` ${c}`)));
    };
    fillBoxes();
    choice.addEventListener("change", fillBoxes);
    for (const radio of [all, some]) radio.addEventListener("change", () => { boxes.disabled = !some.checked; });
    const mine = session.platformAdmin ? [] : Object.entries(session.tenants).filter(([, r]) => r === "tenant-admin").map(([t]) => t);
    const into = h("input", { id: "restore-into", value: name, list: "restore-targets", autocomplete: "off", "aria-describedby": "into-hint" });
    const error = h("p", { class: "error", role: "alert", id: "restore-error" });
    const form = h("form", { id: "restore-form", onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      const body = { backup: choice.value };
      if (some.checked) {
        body.collections = [...boxes.querySelectorAll("input:checked")].map((c) => c.value);
        if (body.collections.length === 0) { error.textContent = "Pick at least one collection, or restore all."; return; }
      }
      const target = into.value.trim();
      if (target && target !== name) body.into = target;
      const what = body.collections ? body.collections.join(", ") : "every collection";
      if (!(await confirmDialog({ title: `Restore into ${env}.${target || name}?`, body: `${what} of backup ${body.backup} will replace the collections of the same name in ${env}.${target || name}.`, confirmLabel: "Restore", danger: true }))) return;
      try {
        const { data } = await api("POST", `${base}/restore`, body);
        toast(`Restoring into ${env}.${data.operation.tenant}`);
        run(data.operation);
      } catch (failure) {
        error.textContent = failure.message + failure.details.map((d) => ` (${d.field}: ${d.reason})`).join("");
      }
    } },
      h("div", {}, h("label", { for: "restore-backup" }, "Backup"), choice),
      h("div", { class: "row" }, h("label", {}, all, " All collections"), h("label", {}, some, " Only these:")),
      boxes,
      h("div", {}, h("label", { for: "restore-into" }, "Restore into tenant"), into,
        h("datalist", { id: "restore-targets" }, mine.map((t) => h("option", { value: t }))),
        h("p", { class: "hint", id: "into-hint" }, `This tenant or another tenant of ${env} you administer; its Qdrant must be on.`)),
      error,
      h("div", { class: "row" }, h("button", { type: "submit", id: "restore" }, "Restore")));
    restoreBox.replaceChildren(h("h2", { id: "restore-h" }, "Restore"), form);
  }

  const backUp = admin ? h("button", { type: "button", id: "back-up-now", onclick: async () => {
    try {
      const { data } = await api("POST", `${base}/snapshots`);
      toast(`Backing up ${env}.${name}`);
      run(data.operation);
    } catch (error) { toast(error.message); }
  } }, "Back up now") : null;
  show(
    h("p", {}, h("a", { href: `#/t/${env}/${name}` }, `← ${env}.${name}`)),
    h("div", { class: "row" }, h("h1", {}, `Backups of ${env}.${name}`), h("span", { class: "spacer" }), backUp),
    h("p", { class: "muted" }, admin ? "Backups hold every collection of the tenant's Qdrant; a restore replaces the collections it restores." : "You can list backups; backing up and restoring need the tenant-admin role."),
    progress, listBox, restoreBox);
  await load();
}

// --- routing -----------------------------------------------------------------------------------

async function route() {
  if (!session) { await renderSignIn(); return; }
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts.length === 0) await renderDashboard();
    else if (parts[0] === "new") await renderForm(null, null);
    else if (parts[0] === "t" && parts.length === 3) await renderTenant(parts[1], parts[2]);
    else if (parts[0] === "t" && parts[3] === "edit") await renderForm(parts[1], parts[2]);
    else if (parts[0] === "t" && parts[3] === "op") await renderTenant(parts[1], parts[2], parts[4]);
    else if (parts[0] === "t" && parts[3] === "backups") await renderBackups(parts[1], parts[2]);
    else if (parts[0] === "requests" && parts.length === 1) await renderRequests();
    else if (parts[0] === "requests") await renderRequest(parts[1]);
    else show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to your tenants")));
  } catch (error) {
    if (error.status === 401) return;
    show(h("h1", {}, "Something went wrong"), h("p", { class: "alert", role: "alert" }, error.message), h("p", {}, h("a", { href: "#/" }, "Back to your tenants")));
  }
}

window.addEventListener("hashchange", route);
loadSession().then(route);
