"""HTTP tags."""

TYPE = "http"
URL = "http.url"
METHOD = "http.method"
STATUS_CODE = "http.status_code"  # a string tag: "200"
ROUTE = "http.route"
USER_AGENT = "http.useragent"
TEMPLATE = "template"
