"""Requests and answers through the Flask test client: raw POST bodies, problem details."""

import io

PROBLEM_JSON = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "code", "detail"}


def assert_problem(response, status=None, code=None):
    """The response is an RFC 9457 problem (with `status` and `code` if named, else
    some 4xx); returns its body."""
    text = response.get_data(as_text=True)
    if status is None:
        assert 400 <= response.status_code < 500, f"{response.status_code}: {text}"
    else:
        assert response.status_code == status, text
    assert response.content_type == PROBLEM_JSON
    body = response.json
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == response.status_code
    assert body["type"] == f"urn:flashcart:problem:{body['code']}"
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["code"] == code, body
    return body


def post(client, path, raw, *, transfer="sized", content_type="application/json", headers=()):
    """POST the bytes `raw` with a Content-Length ("sized") or as gunicorn hands a
    chunked body to the app ("chunked"): no Content-Length, the input marked terminated."""
    raw = raw.encode() if isinstance(raw, str) else raw
    headers = dict(headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    if transfer == "sized":
        return client.post(path, data=raw, headers=headers)
    return client.post(
        path,
        input_stream=io.BytesIO(raw),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
