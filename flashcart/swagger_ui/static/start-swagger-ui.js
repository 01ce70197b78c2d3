// Starts Swagger UI on the docs page. A file rather than an inline script, so the
// page's Content-Security-Policy lets scripts come from this origin alone.
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    // Never send the document to an outside validator.
    validatorUrl: null,
  });
})();
