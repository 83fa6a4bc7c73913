// Back-office forms: tie every label, hint and error to its input, including the inline forms
// ("Add Variant") that Flask-Admin copies from a template without updating the labels' `for`
// (they would otherwise point at nothing, or at the product's own field of the same name).
(function () {
  "use strict";

  function directControl(group) {
    var found = null;
    Array.prototype.forEach.call(group.children, function (el) {
      if (!found && /^(INPUT|SELECT|TEXTAREA)$/.test(el.tagName) && el.type !== "hidden" && el.id) found = el;
    });
    if (!found) {  // fields with a prepended/appended addon sit one level down
      var wrapped = group.querySelector(":scope > .input-group > input, :scope > .input-group > select, " +
                                        ":scope > .input-group > textarea");
      if (wrapped && wrapped.id) found = wrapped;
    }
    return found;
  }

  function wireGroup(group) {
    var control = directControl(group);
    if (!control) return;
    var label = group.querySelector(":scope > label");
    if (label && label.htmlFor !== control.id) label.htmlFor = control.id;
    var ids = [];
    var notes = group.querySelectorAll(":scope > .form-text, :scope > .invalid-feedback, " +
                                       ":scope > .input-group > .form-text, :scope > .input-group > .invalid-feedback");
    Array.prototype.forEach.call(notes, function (note) {
      var isError = note.classList.contains("invalid-feedback");
      if (!note.id) note.id = control.id + (isError ? "-error" : "-hint");
      ids.push(note.id);
      if (isError) {
        control.setAttribute("aria-invalid", "true");
        note.classList.add("d-block");  // Bootstrap shows .invalid-feedback only next to some inputs
      }
    });
    if (ids.length) control.setAttribute("aria-describedby", ids.join(" "));
  }

  function wireRemoveLinks(root) {
    // Icon-only "remove this inline form" links: give them a name (and a tooltip) and the button role.
    Array.prototype.forEach.call(root.querySelectorAll("a.inline-remove-field"), function (a) {
      if (a.hasAttribute("aria-label")) return;
      var legend = a.closest(".inline-field") && a.closest(".inline-field").querySelector("legend small");
      var what = legend ? legend.firstChild.textContent.trim().replace(/^New\s+/, "") : "entry";
      a.setAttribute("role", "button");
      a.setAttribute("aria-label", "Remove this " + (what.split(" #")[0] || "entry").toLowerCase());
      a.setAttribute("title", a.getAttribute("aria-label"));
    });
  }

  function wireSearch(root) {
    // List pages: the search box has only a placeholder, the "clear" link only an icon.
    Array.prototype.forEach.call(root.querySelectorAll("form[role=search] input[name=search]"), function (input) {
      if (!input.hasAttribute("aria-label")) {
        input.setAttribute("aria-label", "Search by " + (input.placeholder || "text"));
      }
      var clear = input.parentNode.querySelector(".input-group-append a");
      if (clear && !clear.hasAttribute("aria-label")) clear.setAttribute("aria-label", "Clear the search");
    });
  }

  function wire(root) {
    Array.prototype.forEach.call(root.querySelectorAll(".form-group"), wireGroup);
    wireRemoveLinks(root);
    wireSearch(root);
  }

  wire(document);
  // New inline forms appear when "Add Variant" (or any inline "Add ...") is clicked.
  new MutationObserver(function (mutations) {
    mutations.forEach(function (m) {
      Array.prototype.forEach.call(m.addedNodes, function (node) {
        if (node.nodeType === 1 && node.classList.contains("inline-field")) wire(node);
      });
    });
  }).observe(document.body, {childList: true, subtree: true});
})();
