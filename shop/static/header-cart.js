// The header's cart count. Pages are cached publicly, so the count is never in their HTML: it is asked
// of /cart/count (no-store) for this visitor. Without JavaScript the link simply says "Cart".
(function () {
  var link = document.getElementById("cart-link");
  if (!link || !window.fetch) return;
  var badge = link.querySelector(".cart-count");
  fetch(link.dataset.countUrl, {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}})
    .then(function (r) { return r.ok ? r.json() : null; })
    .catch(function () { return null; })
    .then(function (data) {
      if (!data || typeof data.count !== "number" || data.count < 1) return;
      badge.textContent = data.count > 99 ? "99+" : String(data.count);
      badge.hidden = false;
      // The badge is a picture of the number: the link's name says it in words.
      link.setAttribute("aria-label", "Cart, " + data.count + (data.count === 1 ? " item" : " items"));
    });
})();
