"""The interactive API docs at /docs: Swagger UI, served by this app alone.

The UI's files come from the pinned swagger-ui-bundle package (`swagger_ui_path`,
under /docs/swagger-ui/) and the script that starts it is a file of ours (under
/docs/static/), so the page loads nothing from another origin and runs no inline
script: its Content-Security-Policy (security_headers.py) names 'self' alone, and the
docs work where the browser reaches nothing but this API.
"""

from flask import Blueprint, current_app, render_template, url_for
from swagger_ui_bundle import swagger_ui_path

# Swagger UI's distribution as the package ships it.
dist = Blueprint(
    "swagger_ui_dist",
    __name__,
    static_folder=swagger_ui_path,
    static_url_path="/docs/swagger-ui",
)
blp = Blueprint(
    "swagger_ui",
    __name__,
    url_prefix="/docs",
    static_folder="static",
    template_folder="templates",
)


@blp.get("")
def page():
    """The docs page: Swagger UI on the app's own OpenAPI document."""
    return render_template(
        "swagger_ui/page.html",
        title=current_app.config["API_TITLE"],
        spec_url=url_for("api-docs.openapi_json"),
    )


def init_app(app):
    app.register_blueprint(dist)
    app.register_blueprint(blp)
