"""What the CI scripts share: one JSON call to a running `cairn serve`."""
import json
import urllib.request


def call(base, method, path, token=None, body=None):
    """`method path` with a JSON body and a bearer token; the JSON answer (None if empty)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", "Bearer " + token)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")
