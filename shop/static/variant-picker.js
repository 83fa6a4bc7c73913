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
  function syncAddForm(v) {
    // The add-to-cart form sends the chosen variant's SKU; a sold-out (or unmade) one cannot be added.
    var sku = document.getElementById("add-sku");
    var button = document.getElementById("add-button");
    var qty = document.getElementById("add-quantity");
    var note = document.getElementById("add-note");
    if (!sku || !button) return;
    var buyable = !!v && v.available > 0;
    if (v) sku.value = v.sku;
    button.disabled = !buyable;
    button.textContent = buyable ? "Add to cart" : (v ? "Sold out" : "Not available");
    if (buyable) button.removeAttribute("aria-describedby"); else button.setAttribute("aria-describedby", "add-note");
    if (qty) {
      qty.disabled = !buyable;
      qty.max = buyable ? Math.min(v.available, 100) : 1;
      if (buyable && Number(qty.value) > Number(qty.max)) qty.value = qty.max;
    }
    if (note) {
      note.hidden = buyable;
      if (!v) note.textContent = "This combination is not made. Choose another option above.";
      else if (!buyable) note.textContent = note.dataset.soldOut || note.textContent;
    }
  }
  function update() {
    var picked = chosen();
    var v = find(picked);
    syncAddForm(v);
    var price = document.getElementById("variant-price");
    var compare = document.getElementById("variant-compare");
    var stock = document.getElementById("variant-stock");
    var sku = document.getElementById("variant-sku");
    Object.keys(picked).forEach(function (k) {
      var span = form.querySelector(".chosen[data-option='" + k + "']");
      if (span) span.textContent = picked[k];
    });
    if (!v) { stock.textContent = "This combination is not made"; stock.className = "stock stock-out"; return; }
    var was = v.sale ? v.price : v.compare_at;  // a live sale: its price, the regular one struck through
    price.textContent = v.sale || v.price;
    compare.hidden = !was; compare.querySelector("s").textContent = was || "";
    var s = stockText(v.available);
    stock.textContent = s[0]; stock.className = "stock " + s[1];
    sku.textContent = v.sku;
    var params = new URLSearchParams(picked);
    history.replaceState(null, "", location.pathname + "?" + params.toString());
    markUnavailable(picked);
  }
  form.addEventListener("change", update);
  markUnavailable(chosen());
  var note = document.getElementById("add-note");
  if (note) note.dataset.soldOut = note.textContent;
})();

// The add-to-cart form lives on a publicly cached page, so it carries no CSRF token of its own:
// fetch this visitor's token when the form is sent. (If that fails the form is sent anyway, and the
// server asks the shopper to confirm on a private page instead of adding blindly.)
(function () {
  var form = document.getElementById("add-to-cart");
  if (!form) return;
  var sending = false;
  form.addEventListener("submit", function (event) {
    var token = form.querySelector("input[name=csrf_token]");
    if (!token || token.value) return;
    event.preventDefault();
    if (sending) return; // a second click while the token is on its way
    sending = true;
    fetch(form.dataset.tokenUrl, {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .catch(function () { return null; })
      .then(function (data) {
        if (data && data.csrf_token) token.value = data.csrf_token;
        form.submit();
      });
  });
})();

// The sale countdown: the end time is rendered by the server; this only counts down to it.
(function () {
  var box = document.querySelector(".sale-countdown[data-ends-at]");
  if (!box) return;
  var end = Date.parse(box.getAttribute("data-ends-at"));
  var out = box.querySelector(".countdown");
  if (isNaN(end) || !out) return;
  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function tick() {
    var left = Math.floor((end - Date.now()) / 1000);
    if (left <= 0) { out.textContent = " (ended: reload the page for the current price)"; return; }
    var d = Math.floor(left / 86400), h = Math.floor(left % 86400 / 3600), m = Math.floor(left % 3600 / 60);
    out.textContent = " (in " + (d ? d + "d " : "") + pad(h) + ":" + pad(m) + ":" + pad(left % 60) + ")";
    setTimeout(tick, 1000);
  }
  tick();
})();
