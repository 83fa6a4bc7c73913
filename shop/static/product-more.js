// "You may also like": the fragment /p/<slug>/related, fetched apart from the publicly cached page so a
// neighbour's change does not end the page's cache. Nothing found: the section keeps its category link.
(function () {
  var box = document.getElementById("related");
  if (!box || !window.fetch) return;
  fetch(box.dataset.src, {credentials: "same-origin", headers: {Accept: "text/html"}})
    .then(function (r) { return r.ok ? r.text() : ""; })
    .catch(function () { return ""; })
    .then(function (html) {
      // Our own server's fragment (escaped by its templates), parsed inertly and moved in.
      var doc = new DOMParser().parseFromString(html, "text/html");
      var list = doc.querySelector("ul.product-grid");
      if (list) box.querySelector(".related-items").appendChild(document.adoptNode(list));
    });
})();

// "Recently viewed" on product pages. The pages are cached publicly, so the list lives in this browser
// (localStorage) and is drawn here; the server never sees it. The current product is remembered, not shown.
(function () {
  var box = document.getElementById("recently-viewed");
  if (!box) return;
  var KEY = "shop.recentlyViewed", MAX = 8, SHOWN = 4;
  var current;
  try { current = JSON.parse(box.dataset.product); } catch (e) { return; }
  var seen = [];
  try { seen = JSON.parse(localStorage.getItem(KEY) || "[]"); } catch (e) { seen = []; }
  if (!Array.isArray(seen)) seen = [];
  var others = seen.filter(function (p) { return p && p.slug && p.slug !== current.slug; });
  try { localStorage.setItem(KEY, JSON.stringify([current].concat(others).slice(0, MAX))); } catch (e) { /* private mode */ }

  var list = box.querySelector("ul");
  others.slice(0, SHOWN).forEach(function (p) {
    // Built with textContent: a stored name is data, never markup.
    var li = document.createElement("li"); li.className = "card";
    var a = document.createElement("a"); a.className = "card-link";
    if (typeof p.url !== "string" || p.url.charAt(0) !== "/" || p.url.charAt(1) === "/") return;
    a.href = p.url;
    if (typeof p.image === "string" && p.image) {
      var img = document.createElement("img");
      img.src = p.image; img.alt = ""; img.width = 400; img.height = 400; img.loading = "lazy";
      a.appendChild(img);
    }
    [["card-brand", p.brand], ["card-name", p.name], ["card-price", p.price]].forEach(function (part) {
      var span = document.createElement("span"); span.className = part[0]; span.textContent = part[1] || "";
      a.appendChild(span);
    });
    li.appendChild(a); list.appendChild(li);
  });
  box.hidden = !list.children.length;
})();
