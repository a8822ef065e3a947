// caseflow console: small enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // The item search filters the list as the clerk types (the form searches without it).
  for (const input of document.querySelectorAll("input[data-filter]")) {
    const list = document.getElementById(input.dataset.filter);
    if (!list) continue;
    input.addEventListener("input", () => {
      const q = input.value.trim().toLowerCase();
      for (const li of list.querySelectorAll("li[data-search]")) {
        li.hidden = q !== "" && !li.dataset.search.toLowerCase().includes(q);
      }
    });
  }
  for (const button of document.querySelectorAll("[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
  // One click per form: a second click while the first is on its way does nothing.
  for (const form of document.querySelectorAll("form[method=post]")) {
    form.addEventListener("submit", () => {
      for (const b of form.querySelectorAll("button[type=submit]")) b.disabled = true;
    });
  }
});

// A list that updates while open: the server says "changed" (server-sent events), the
// page reads itself again and swaps in the part that holds the list.
document.addEventListener("DOMContentLoaded", () => {
  const status = document.querySelector("[data-live]");
  if (!status || !window.EventSource) return;
  const target = document.querySelector(status.dataset.refresh);
  const updated = status.dataset.updated || status.textContent;
  let timer = null;
  const refresh = async () => {
    timer = null;
    try {
      const answer = await fetch(window.location.href, { credentials: "same-origin" });
      if (!answer.ok) return;
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.querySelector(status.dataset.refresh);
      if (fresh && target) {
        target.replaceChildren(...fresh.childNodes);
        status.textContent = `${updated} ${new Date().toLocaleTimeString()}`;
      }
    } catch (err) {
      // the next change tries again
    }
  };
  const events = new EventSource(status.dataset.live);
  events.addEventListener("changed", () => {
    if (!timer) timer = setTimeout(refresh, 300); // several changes, one reading
  });
});
