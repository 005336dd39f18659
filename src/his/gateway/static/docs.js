// The API explorer at /docs: Swagger UI (vendored in swagger-ui/) on the gateway's own
// /openapi.json. A file of its own, not an inline script, so that the page's
// Content-Security-Policy can allow scripts from the gateway only.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No call to the public validator service: nothing leaves the hospital.
    validatorUrl: null,
    // Tokens given to "Authorize" live in this page only.
    persistAuthorization: false,
    tryItOutEnabled: false,
  });
});
