// The console's own script: what markup alone cannot do, without inline script (the pages'
// Content-Security-Policy allows scripts from this origin only).
document.addEventListener("click", (event) => {
  const button = event.target instanceof Element ? event.target.closest("[data-print]") : null;
  if (button) {
    window.print();
  }
});
