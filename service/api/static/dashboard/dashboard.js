// The nowcast dashboard: the caller's jobs (live), submission, quick-looks of finished jobs.
// Plain browser JavaScript on the v1 API, no build step and no third-party code.
//
// The job list is polled: EventSource cannot send an Authorization header, so the per-job SSE
// stream would need the key in the URL (and in access logs); one list call every POLL_MS
// covers every job at once.
"use strict";

const KEY_STORAGE = "nowcast.apiKey";
const POLL_MS = 2000;
const LIST_LIMIT = 50;
const QUICKLOOK_PRODUCTS = ["mean", "member", "probability"];
const ACTIVE = new Set(["accepted", "running"]);

const dashboard = {
  selectedJob: null,
  rows: new Map(), // job id -> <tr>
  objectUrls: [],
};

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

const $ = (selector) => document.querySelector(selector);

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

// fetch on the API (relative URL) with the key; throws ApiError with the problem's detail
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const problem = await response.json();
      detail = problem.detail || problem.title || detail;
    } catch (_) {
      // not problem+json: keep the status line
    }
    throw new ApiError(response.status, detail);
  }
  return response;
}

function showMessage(text, isError = false) {
  const message = $("#message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

function showApiError(error, doing) {
  if (error instanceof ApiError && error.status === 401) {
    showMessage(`${doing}: ${error.message}. Enter your API key above.`, true);
  } else {
    showMessage(`${doing}: ${error.message}`, true);
  }
}

function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

// ------------------------------------------------------------------------------ jobs table

function cell(row, className) {
  let td = row.querySelector(`td.${className}`);
  if (!td) {
    td = document.createElement("td");
    td.className = className;
    row.appendChild(td);
  }
  return td;
}

function button(label, action, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.dataset.action = action;
  element.addEventListener("click", onClick);
  return element;
}

function renderRow(job) {
  let row = dashboard.rows.get(job.id);
  if (!row) {
    row = document.createElement("tr");
    row.dataset.jobId = job.id;
    dashboard.rows.set(job.id, row);
  }
  row.dataset.status = job.status;
  row.classList.toggle("selected", dashboard.selectedJob === job.id);

  const id = cell(row, "id");
  id.textContent = job.id.slice(0, 8);
  id.title = job.id;
  cell(row, "created").textContent = formatTime(job.created);

  const status = cell(row, "status");
  const badge = status.firstElementChild || status.appendChild(document.createElement("span"));
  badge.className = `badge badge-${job.status}`;
  badge.textContent = job.cancel_requested && ACTIVE.has(job.status) ? `${job.status} (cancelling)` : job.status;
  badge.title = job.error ? `${job.error.code}: ${job.error.detail}` : "";

  const progress = cell(row, "progress");
  const bar = progress.querySelector("progress") || progress.appendChild(document.createElement("progress"));
  const label = progress.querySelector("span") || progress.appendChild(document.createElement("span"));
  const total = job.progress.total;
  bar.max = total || 1;
  bar.value = job.status === "successful" ? bar.max : job.progress.step;
  label.textContent = total ? ` ${job.progress.step}/${total}` : "";

  cell(row, "members").textContent = String(job.params.members);

  // actions change only with the status: rebuild them then, so a click never hits a stale button
  const actions = cell(row, "actions");
  if (actions.dataset.status !== job.status) {
    actions.dataset.status = job.status;
    actions.replaceChildren();
    if (job.status === "successful") {
      actions.append(
        button("quick-look", "quicklook", () => showQuicklook(job.id)),
        button("download", "download", () => download(job.id)),
      );
    } else if (ACTIVE.has(job.status)) {
      actions.append(button("cancel", "cancel", () => cancel(job.id)));
    }
  }
  return row;
}

async function refreshJobs() {
  let list;
  try {
    list = await (await api(`v1/nowcasts?limit=${LIST_LIMIT}`)).json();
  } catch (error) {
    showApiError(error, "Cannot list jobs");
    return;
  }
  const tbody = $("#jobs tbody");
  const seen = new Set();
  for (const job of list.items) {
    seen.add(job.id);
    tbody.appendChild(renderRow(job)); // appendChild moves an existing row: newest-first order
  }
  for (const [id, row] of dashboard.rows) {
    if (!seen.has(id)) {
      row.remove();
      dashboard.rows.delete(id);
    }
  }
  const running = list.items.filter((job) => ACTIVE.has(job.status)).length;
  $("#jobs-summary").textContent =
    `${list.total} in all, ${running} waiting or running; updated ${new Date().toLocaleTimeString()}`;
  $("#no-jobs").hidden = list.items.length > 0;
  if ($("#message").classList.contains("error") && $("#message").textContent.startsWith("Cannot list")) {
    showMessage("");
  }
}

async function poll() {
  if (!document.hidden) await refreshJobs();
  setTimeout(poll, POLL_MS);
}

// ------------------------------------------------------------------------------ actions

async function submitJob(event) {
  event.preventDefault();
  const file = $("#radar-file").files[0];
  if (!file) return;
  const query = new URLSearchParams();
  // the seed stays text: a Number would round seeds above 2^53
  for (const [name, input] of [["members", "#members"], ["steps", "#steps"], ["seed", "#seed"], ["target_mm_h", "#target"]]) {
    const value = $(input).value.trim();
    if (value) query.set(name, value);
  }
  $("#submit").disabled = true;
  try {
    const response = await api(`v1/nowcasts?${query}`, {
      method: "POST",
      headers: { "Content-Type": "application/x-netcdf" },
      body: file,
    });
    const job = await response.json();
    showMessage(`Job ${job.id} accepted (${file.name}).`);
    await refreshJobs();
  } catch (error) {
    showApiError(error, "Submission refused");
  } finally {
    $("#submit").disabled = false;
  }
}

async function cancel(jobId) {
  try {
    await api(`v1/nowcasts/${jobId}`, { method: "DELETE" });
    await refreshJobs();
  } catch (error) {
    showApiError(error, "Cannot cancel");
  }
}

async function download(jobId) {
  try {
    const blob = await (await api(`v1/nowcasts/${jobId}/result`)).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `nowcast-${jobId}.nc`;
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (error) {
    showApiError(error, "Cannot download");
  }
}

// images need the Authorization header too, so they are fetched and shown as blob URLs
async function showQuicklook(jobId) {
  dashboard.selectedJob = jobId;
  for (const [id, row] of dashboard.rows) row.classList.toggle("selected", id === jobId);
  dashboard.objectUrls.forEach((url) => URL.revokeObjectURL(url));
  dashboard.objectUrls = [];
  const section = $("#quicklook");
  section.hidden = false;
  $("#quicklook-job").textContent = jobId;
  await Promise.all(
    QUICKLOOK_PRODUCTS.map(async (product) => {
      const image = section.querySelector(`img[data-product="${product}"]`);
      const caption = image.closest("figure").querySelector("figcaption");
      const link = image.closest("a");
      link.removeAttribute("href");
      image.removeAttribute("src");
      image.dataset.state = "loading";
      caption.textContent = "drawing...";
      try {
        const response = await api(`v1/nowcasts/${jobId}/quicklook.png?product=${product}`);
        const url = URL.createObjectURL(await response.blob());
        dashboard.objectUrls.push(url);
        image.onload = () => {
          image.dataset.state = "loaded";
        };
        image.src = url;
        link.href = url;
        caption.textContent = "";
      } catch (error) {
        image.dataset.state = "error";
        caption.textContent = error.message;
      }
    }),
  );
  section.scrollIntoView({ behavior: "smooth", block: "start" });
}

async function showModel() {
  try {
    const { models } = await (await api("v1/models")).json();
    const model = models[0];
    $("#model").textContent =
      `model ${model.name} ${model.version}: ${model.frames_in} frames in, ` +
      `${model.frames_out} out, every ${model.interval_s / 60} min`;
  } catch (_) {
    $("#model").textContent = "";
  }
}

function saveKey(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  $("#api-key").value = "";
  $("#api-key").placeholder = key ? "key set for this tab" : "not needed when auth is off";
  showMessage(key ? "API key set for this browser tab." : "");
  dashboard.rows.forEach((row) => row.remove());
  dashboard.rows.clear();
  $("#quicklook").hidden = true;
  showModel();
  refreshJobs();
}

function forgetKey() {
  $("#api-key").value = "";
  saveKey(new Event("submit"));
}

document.addEventListener("DOMContentLoaded", () => {
  if (apiKey()) $("#api-key").placeholder = "key set for this tab";
  $("#key-form").addEventListener("submit", saveKey);
  $("#forget-key").addEventListener("click", forgetKey);
  $("#submit-form").addEventListener("submit", submitJob);
  showModel();
  poll();
});
