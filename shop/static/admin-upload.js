// Back-office image form: the file goes straight from the browser to storage through a
// pre-signed URL (S3, or the app's own signed local URL); the form then saves only the key.
(function () {
  var script = document.currentScript;
  var pathInput = document.getElementById("path");
  if (!pathInput) return;
  var csrf = document.querySelector("meta[name=csrf-token]").content;
  var box = document.createElement("div");
  box.className = "upload-drop";
  box.innerHTML = '<label for="image-file"><strong>Image file</strong> (JPEG, PNG, WebP or GIF)</label>' +
    '<input type="file" id="image-file" accept="image/jpeg,image/png,image/webp,image/gif" class="form-control-file">' +
    '<p class="upload-status mb-0 mt-2" role="status" aria-live="polite"></p>';
  var group = pathInput.closest(".form-group") || pathInput.parentNode;
  group.parentNode.insertBefore(box, group);
  pathInput.readOnly = true;
  var status = box.querySelector(".upload-status");
  function say(text, bad) { status.textContent = text; status.className = "upload-status mb-0 mt-2 " + (bad ? "text-danger" : "text-success"); }

  box.querySelector("input").addEventListener("change", async function (event) {
    var file = event.target.files[0];
    if (!file) return;
    say("Uploading " + file.name + "…");
    try {
      var signResp = await fetch(script.dataset.signUrl, {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
        body: JSON.stringify({filename: file.name, content_type: file.type, size: file.size})
      });
      var signed = await signResp.json();
      if (!signResp.ok) throw new Error(signed.error ? signed.error.message + " " + JSON.stringify(signed.error.details) : "could not sign");
      var put = await fetch(signed.upload_url, {method: signed.method, headers: signed.headers, body: file});
      if (!put.ok) { var err = await put.json().catch(function () { return {}; }); throw new Error(err.error ? err.error.message : "upload refused (" + put.status + ")"); }
      pathInput.value = signed.key;
      var img = box.querySelector("img") || box.appendChild(document.createElement("img"));
      img.src = signed.public_url; img.alt = "Preview of the uploaded image";
      say("Uploaded. Add the alt text and save.");
    } catch (e) {
      say("The upload failed: " + e.message, true);
    }
  });
})();
