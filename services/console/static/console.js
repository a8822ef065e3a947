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
