// "Payment received — confirming your order…" (templates/checkout/returned.html): asks the order's state every
// 2 seconds for up to 2 minutes; once it is no longer "waiting", opens the way back again (data-next-url), which
// sends the shopper on to the order page (or the bank-payment page). Without JavaScript the "Check again" link
// does the same by hand.
(function () {
  var status = document.getElementById("confirming-status");
  if (!status || !window.fetch) return;
  var text = status.querySelector("[data-status-text]") || status;
  var spinner = status.querySelector(".return-spinner");
  var EVERY = 2000, GIVE_UP = 120000, started = Date.now();

  function slow() {
    if (spinner) spinner.hidden = true;
    text.textContent = "This is taking longer than usual. We will e-mail you; you can also reload.";
  }

  function ask() {
    var options = {credentials: "same-origin", cache: "no-store", headers: {Accept: "application/json"}};
    fetch(status.dataset.stateUrl, options)
      .then(function (r) { return r.status === 404 ? {gone: true} : (r.ok ? r.json() : null); })
      .catch(function () { return null; })  // offline for a moment: ask again
      .then(function (data) {
        if (data && data.gone) return slow();  // this browser no longer holds the order (logged out elsewhere)
        if (data && typeof data.state === "string" && data.state !== "waiting") {
          text.textContent = data.state === "confirmed" ? "Your order is confirmed. Opening it…"
                                                        : "Opening your order…";
          // replace: the back button should not land on this page again
          window.location.replace(status.dataset.nextUrl);
          return;
        }
        if (Date.now() - started + EVERY > GIVE_UP) return slow();
        window.setTimeout(ask, EVERY);
      });
  }

  window.setTimeout(ask, EVERY);
})();
