"""`helm test`: wait until the model is ready, post the seed example, require a success envelope.

Standard library only: it runs in the predictor image (`python3 -c`), or anywhere with Python 3:
    python3 predict_test.py http://gptj-predictor.ml.svc.cluster.local gptj 1200
With API keys on, $GPTJ_API_KEYS_FILE names the keys file (the chart mounts the Secret) and its first
key is sent.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

SEED = [{"prompt": "If I was a billionaire, I would", "max_length": 50}]


def wait_ready(base: str, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/v2/models/{model}/ready", timeout=10) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        else:
            last = "not ready"
        if time.monotonic() > deadline:
            sys.exit(f"FAIL: {model} not ready after {timeout:.0f} s ({last})")
        time.sleep(5)


def first_key(path: str) -> "str | None":  # a string: any python3 (tests.image) reads it
    if not path:
        return None
    with open(path, encoding="utf-8") as keys_file:
        keys = [line.strip() for line in keys_file if line.strip() and not line.strip().startswith("#")]
    return keys[0] if keys else None


def predict(base: str, model: str) -> dict:
    headers = {"Content-Type": "application/json"}
    key = first_key(os.environ.get("GPTJ_API_KEYS_FILE", ""))
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"{base}/v1/models/{model}:predict", data=json.dumps(SEED).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        sys.exit(f"FAIL: HTTP {exc.code}: {exc.read()[:500]!r}")


def main(base: str, model: str, timeout: str) -> None:
    wait_ready(base.rstrip("/"), model, float(timeout))
    body = predict(base.rstrip("/"), model)
    prompt = SEED[0]["prompt"]
    data = body.get("data")
    if (
        body.get("status") != "success"
        or not isinstance(data, str)
        or not data.startswith(prompt)
        or len(data) <= len(prompt)
    ):
        sys.exit(f"FAIL: unexpected response {json.dumps(body)[:500]}")
    print(f"PASS: {json.dumps(body)[:300]}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
