// After the server refuses a form, start at the first field to fix: its label, "invalid" state and
// error (tied with aria-describedby) are read out together, and the page scrolls to it.
(function () {
  var field = document.querySelector('main [aria-invalid="true"]');
  if (field) field.focus();
})();
