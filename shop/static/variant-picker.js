// Progressive enhancement for the product page: the picker form works without JavaScript
// (submitting reloads the page with the chosen options); with it, price and stock change at once.
(function () {
  var form = document.getElementById("variant-picker");
  var data = document.getElementById("variants-data");
  if (!form || !data) return;
  var variants = JSON.parse(data.textContent);
  var button = document.getElementById("show-variant");
  if (button) button.hidden = true;

  function chosen() {
    var picked = {};
    form.querySelectorAll("input[type=radio]:checked").forEach(function (el) { picked[el.name] = el.value; });
    return picked;
  }
  function find(picked) {
    return variants.find(function (v) {
      return Object.keys(picked).every(function (k) { return v.options[k] === picked[k]; });
    });
  }
  function stockText(n) {
    if (n === 0) return ["Sold out", "stock-out"];
    if (n <= 5) return ["Only " + n + " left", "stock-low"];
    return ["In stock (" + n + " available)", "stock-ok"];
  }
  function markUnavailable(picked) {
    // Strike through values whose combination with the other choices is sold out.
    form.querySelectorAll("input[type=radio]").forEach(function (el) {
      var trial = Object.assign({}, picked); trial[el.name] = el.value;
      var v = find(trial);
      var label = form.querySelector("label[for='" + el.id + "']");
      if (!label) return;
      label.classList.toggle("unavailable", !v || v.available === 0);
      // The strike-through said in words, for screen readers (the span is visually hidden).
      var note = label.querySelector(".availability");
      if (note) note.textContent = !v ? "(not available)" : (v.available === 0 ? "(sold out)" : "");
    });
  }
  function update() {
    var picked = chosen();
    var v = find(picked);
    var price = document.getElementById("variant-price");
    var compare = document.getElementById("variant-compare");
    var stock = document.getElementById("variant-stock");
    var sku = document.getElementById("variant-sku");
    Object.keys(picked).forEach(function (k) {
      var span = form.querySelector(".chosen[data-option='" + k + "']");
      if (span) span.textContent = picked[k];
    });
    if (!v) { stock.textContent = "This combination is not made"; stock.className = "stock stock-out"; return; }
    price.textContent = v.price;
    compare.hidden = !v.compare_at; compare.querySelector("s").textContent = v.compare_at || "";
    var s = stockText(v.available);
    stock.textContent = s[0]; stock.className = "stock " + s[1];
    sku.textContent = v.sku;
    var params = new URLSearchParams(picked);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    markUnavailable(picked);
  }
  form.addEventListener("change", update);
  markUnavailable(chosen());
})();
