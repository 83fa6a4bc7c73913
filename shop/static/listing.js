// Listing pages: on phones the filter panel starts folded (a "Filters" disclosure) so the products come first.
// Without JavaScript it stays open; on wide screens it is always open (its summary is hidden by the CSS).
(function () {
  // The sort menu applies itself (an inline onchange would need 'unsafe-inline' in the CSP).
  document.querySelectorAll("select[data-submit-on-change]").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  var panel = document.getElementById("filters-panel");
  if (!panel || !window.matchMedia) return;
  var narrow = window.matchMedia("(max-width: 760px)");
  if (narrow.matches) panel.open = false;
  narrow.addEventListener("change", function (e) { if (!e.matches) panel.open = true; });
})();
