// The product page's gallery. Without JavaScript the thumbnails and the main picture are plain links to
// the pictures; with it, a thumbnail (click, Enter) shows its picture in the main place, the main picture
// opens large in a dialog, and choosing an option value (a colour) shows the first picture tagged with it.
(function () {
  var gallery = document.getElementById("gallery");
  var main = document.getElementById("gallery-image");
  var zoom = document.getElementById("gallery-zoom");
  if (!gallery || !main || !zoom) return;
  var thumbs = Array.prototype.slice.call(gallery.querySelectorAll(".thumb"));

  function show(thumb) {
    main.src = thumb.dataset.src;
    if (thumb.dataset.srcset) main.srcset = thumb.dataset.srcset; else main.removeAttribute("srcset");
    main.alt = thumb.dataset.alt || "";
    zoom.href = thumb.dataset.src;
    thumbs.forEach(function (t) {
      if (t === thumb) t.setAttribute("aria-current", "true"); else t.removeAttribute("aria-current");
    });
  }
  thumbs.forEach(function (thumb) {
    thumb.addEventListener("click", function (event) { event.preventDefault(); show(thumb); });
  });

  var dialog = document.getElementById("zoom-dialog");
  var large = document.getElementById("zoom-image");
  if (dialog && large && typeof dialog.showModal === "function") {
    zoom.addEventListener("click", function (event) {
      event.preventDefault();
      large.src = zoom.href;  // the full-size original, not a smaller copy
      large.alt = main.alt;
      dialog.showModal();
    });
    // A click on the backdrop (outside the picture and the button) closes it too.
    dialog.addEventListener("click", function (event) { if (event.target === dialog) dialog.close(); });
  }

  // Pictures tagged with an option value follow the variant picker.
  var picker = document.getElementById("variant-picker");
  if (picker) {
    picker.addEventListener("change", function (event) {
      var value = event.target && event.target.value;
      var match = thumbs.find(function (t) { return t.dataset.optionValue === value; });
      if (match) show(match);
    });
    // On load (e.g. ?colour=Red in the address), start at the chosen value's picture.
    picker.querySelectorAll("input[type=radio]:checked").forEach(function (el) {
      var match = thumbs.find(function (t) { return t.dataset.optionValue === el.value; });
      if (match) show(match);
    });
  }
})();
