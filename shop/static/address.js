// Address forms: show the state select for a country whose tax depends on the region (data-regional on the
// wrapper, e.g. "US"), the free-text region for any other; without this script both show, labelled for whom
// they are. The hidden one is disabled, so it is not sent.
(function () {
  document.querySelectorAll('[data-address]').forEach(function (box) {
    var regional = (box.getAttribute('data-regional') || '').split(' ').filter(Boolean);
    var country = box.querySelector('select[name$="country"]');
    var regionalBox = box.querySelector('[data-for="regional"]');
    var otherBox = box.querySelector('[data-for="other"]');
    if (!country || !regionalBox || !otherBox) return;
    function show() {
      var isRegional = regional.indexOf(country.value) !== -1;
      regionalBox.hidden = !isRegional;
      otherBox.hidden = isRegional;
      regionalBox.querySelectorAll('select, input').forEach(function (el) { el.disabled = !isRegional; });
      otherBox.querySelectorAll('select, input').forEach(function (el) { el.disabled = isRegional; });
    }
    country.addEventListener('change', show);
    show();
  });
})();
