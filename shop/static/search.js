// Instant suggestions for every search box with data-suggest (progressive enhancement: the box is a
// plain GET form without this). An ARIA 1.2 combobox: arrows move through the list, Enter opens the
// chosen product (or submits the search when none is chosen), Escape closes the list and keeps the text.
(function () {
  "use strict";
  var boxes = document.querySelectorAll("input[data-suggest]");
  Array.prototype.forEach.call(boxes, function (input, n) {
    var endpoint = input.getAttribute("data-suggest");
    var list = document.createElement("ul");
    var listId = "suggestions-" + n;
    var timer = null, active = -1, items = [], lastQuery = "", controller = null;
    list.id = listId;
    list.className = "suggestions";
    list.setAttribute("role", "listbox");
    list.setAttribute("aria-label", "Suggestions");
    list.hidden = true;
    input.parentNode.appendChild(list);
    input.setAttribute("role", "combobox");
    input.setAttribute("aria-autocomplete", "list");
    input.setAttribute("aria-controls", listId);
    input.setAttribute("aria-expanded", "false");

    function close() {
      list.hidden = true; active = -1; items = [];
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }
    function highlight(i) {
      var options = list.querySelectorAll("[role=option]");
      Array.prototype.forEach.call(options, function (el, k) { el.setAttribute("aria-selected", k === i ? "true" : "false"); });
      active = i;
      if (i >= 0 && options[i]) input.setAttribute("aria-activedescendant", options[i].id);
      else input.removeAttribute("aria-activedescendant");
    }
    function render(suggestions) {
      list.textContent = "";
      items = suggestions;
      if (!suggestions.length) { close(); return; }
      suggestions.forEach(function (s, k) {
        var li = document.createElement("li");
        li.id = listId + "-" + k;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        var a = document.createElement("a");
        a.href = s.url;
        a.tabIndex = -1;
        // The server HTML-escapes the name and adds only <mark> elements.
        a.innerHTML = s.highlight || "";
        if (!a.textContent) a.textContent = s.name;
        li.appendChild(a);
        li.addEventListener("mousedown", function (e) { e.preventDefault(); window.location.href = s.url; });
        list.appendChild(li);
      });
      list.hidden = false; active = -1;
      input.setAttribute("aria-expanded", "true");
    }
    function fetchSuggestions() {
      var q = input.value.trim();
      if (q === lastQuery) return;
      lastQuery = q;
      if (q.length < 2) { close(); return; }
      if (controller) controller.abort();
      controller = window.AbortController ? new AbortController() : null;
      fetch(endpoint + "?q=" + encodeURIComponent(q), { headers: { "Accept": "application/json" },
                                                      signal: controller ? controller.signal : undefined })
        .then(function (r) { return r.ok ? r.json() : { suggestions: [] }; })
        .then(function (body) { if (input.value.trim() === q) render(body.suggestions || []); })
        .catch(function () { /* suggestions are a nicety: the form still works */ });
    }
    input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(fetchSuggestions, 150); });
    input.addEventListener("keydown", function (e) {
      // Escape closes the list and keeps what was typed: a search input would otherwise clear itself
      // (pressing Escape twice to be sure the list is gone must not lose the query either).
      if (e.key === "Escape") { e.preventDefault(); close(); return; }
      if (list.hidden) return;
      if (e.key === "ArrowDown") { e.preventDefault(); highlight(Math.min(active + 1, items.length - 1)); }
      else if (e.key === "ArrowUp") { e.preventDefault(); highlight(Math.max(active - 1, -1)); }
      else if (e.key === "Enter" && active >= 0 && items[active]) { e.preventDefault(); window.location.href = items[active].url; }
    });
    input.addEventListener("blur", function () { setTimeout(close, 100); });
  });
})();
