"""The monitored service of test_ddtrace_client.py: a tiny shop, run under `ddtrace-run`.

    ddtrace-run python tests/e2e/ddtrace_app.py PORT

It only listens on 127.0.0.1 and touches nothing: the attacks the test sends are canned
strings that the tracer's in-app WAF reports, and the app just echoes them back as JSON.
"""

from __future__ import annotations

import sys

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

app = Flask(__name__)

PRODUCTS = {"1": "teapot", "2": "kettle"}


@app.get("/")
def index() -> ResponseReturnValue:
    return "shop home\n"


@app.get("/products")
def products() -> ResponseReturnValue:
    product_id = request.args.get("id", "")
    name = PRODUCTS.get(product_id)
    return jsonify({"id": product_id, "products": [name] if name else []})


@app.get("/search")
def search() -> ResponseReturnValue:
    query = request.args.get("q", "")
    return jsonify(
        {"query": query, "results": [name for name in PRODUCTS.values() if query and query in name]}
    )


if __name__ == "__main__":
    # Any other path gets Flask's own 404, which the tracer reports as resource `GET 404`.
    app.run(host="127.0.0.1", port=int(sys.argv[1]), debug=False, use_reloader=False)
