// prefect-archiver UI: filters and paging without a full page load.
//
// Progressive enhancement only: every page is whole without this file. A form or link marked
// data-enhance (the events search, facets, paging, the period choices) fetches the same URL a
// plain click would load, and swaps the new page's <main> in place of this one; the address bar
// takes that URL (history.pushState), so it stays shareable and Back works. Anything unexpected
// (an error page, a redirect to the login form, a network failure) falls back to loading the URL
// the ordinary way. No inline script, no eval: the CSP allows script from this server only.
(function () {
  "use strict";
  document.documentElement.setAttribute("data-enhanced", "");

  function load(url, push) {
    var main = document.querySelector("main");
    if (main) main.setAttribute("aria-busy", "true");
    return fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        var type = response.headers.get("Content-Type") || "";
        if (!response.ok || response.redirected || type.indexOf("text/html") !== 0) throw new Error("not a page");
        return response.text();
      })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var next = page.querySelector("main");
        if (!main || !next) throw new Error("no main");
        main.replaceWith(document.importNode(next, true));
        document.title = page.title;
        if (push) history.pushState({ enhanced: true }, "", url);
        window.scrollTo(0, 0);
      })
      .catch(function () {
        window.location.assign(url);
      });
  }

  function sameOrigin(url) {
    return url.origin === window.location.origin;
  }

  document.addEventListener("click", function (event) {
    var link = event.target instanceof Element ? event.target.closest("a[data-enhance]") : null;
    if (!link || event.defaultPrevented || event.button !== 0 ||
        event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var url = new URL(link.href, window.location.href);
    if (!sameOrigin(url)) return;
    event.preventDefault();
    load(url.href, true);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-enhance") ||
        form.method.toLowerCase() !== "get") return;
    var url = new URL(form.action, window.location.href);
    if (!sameOrigin(url)) return;
    // Empty fields are left out, as the server's own links leave them out.
    var query = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (typeof value === "string" && value.trim() !== "") query.append(name, value);
    });
    url.search = query.toString();
    event.preventDefault();
    load(url.href, true);
  });

  window.addEventListener("popstate", function () {
    load(window.location.href, false);
  });
})();
