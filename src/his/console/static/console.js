// The console's own script: what markup alone cannot do, without inline script (the pages'
// Content-Security-Policy allows scripts from this origin only).
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-print]") : null;
  if (button) {
    window.print();
  }
});

// A part of a page that follows the hospital live: it listens to its event stream
// (data-live, server-sent events) and, on "changed", fires "his:changed" on itself, which its
// hx-trigger turns into a request for its new content. The stream carries no data.
document.addEventListener("DOMContentLoaded", () => {
  for (const part of document.querySelectorAll("[data-live]")) {
    const stream = new EventSource(part.dataset.live);
    stream.addEventListener("changed", () => htmx.trigger(part, "his:changed"));
  }
});
