// Progressive enhancement of the config multi-selects (request, approve and download pages):
// a search box, select all/none and a live count. Without this script the plain <select multiple>
// still submits the same field, so the pages work with JavaScript off.
(function () {
  "use strict";

  function enhance(select) {
    var options = Array.prototype.slice.call(select.options);
    var bar = document.createElement("div");
    bar.className = "picker-bar";
    var search = document.createElement("input");
    search.type = "search";
    search.className = "picker-search";
    search.placeholder = "Search by language name or code";
    search.setAttribute("aria-label", "Search the configs");
    var all = button("Select all shown", "picker-all");
    var none = button("Select none", "picker-none");
    var count = document.createElement("span");
    count.className = "picker-count muted";
    count.setAttribute("aria-live", "polite");
    bar.append(search, all, none, count);
    select.parentNode.insertBefore(bar, select);

    function update() {
      var chosen = options.filter(function (o) { return o.selected; }).length;
      var shown = options.filter(function (o) { return !o.hidden; }).length;
      count.textContent = chosen.toLocaleString("en") + " of " + options.length.toLocaleString("en") + " selected" +
        (shown < options.length ? " · " + shown.toLocaleString("en") + " match" : "");
    }
    search.addEventListener("input", function () {
      var words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      options.forEach(function (o) {
        var text = (o.text + " " + o.value).toLowerCase();
        o.hidden = !words.every(function (w) { return text.indexOf(w) !== -1; });
      });
      update();
    });
    // Enter in the search box filters; it must not submit the form half-chosen.
    search.addEventListener("keydown", function (e) { if (e.key === "Enter") e.preventDefault(); });
    all.addEventListener("click", function () {
      options.forEach(function (o) { if (!o.hidden) o.selected = true; });
      select.dispatchEvent(new Event("change", { bubbles: true }));
    });
    none.addEventListener("click", function () {
      options.forEach(function (o) { o.selected = false; });
      select.dispatchEvent(new Event("change", { bubbles: true }));
    });
    // On the request form, choosing configs means "only the configs I choose": say so for the reader,
    // who would otherwise submit "every config" with a choice that is ignored.
    var some = select.form && select.form.querySelector("input[name=scope][value=some]");
    select.addEventListener("change", function () {
      if (some && options.some(function (o) { return o.selected; })) some.checked = true;
      update();
    });
    update();
  }

  function button(text, className) {
    var b = document.createElement("button");
    b.type = "button";  // never submits
    b.className = "secondary " + className;
    b.textContent = text;
    return b;
  }

  document.querySelectorAll("select[data-config-picker]").forEach(enhance);
})();
