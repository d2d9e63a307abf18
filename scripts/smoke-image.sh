#!/usr/bin/env bash
# Image smoke test: build the Dockerfile with podman on a local Debian base (no registry is reachable
# here, so no base image can be pulled), with CPU torch; run the container as its non-root user with
# a read-only root filesystem on 127.0.0.1; wait for readiness; post the seed example; expect success;
# clean up. `make smoke` installs the tools first. It skips, loudly, only when podman cannot run at all.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${SMOKE_WORK:-/var/tmp/gptj-smoke}  # kept between runs: the base rootfs and podman's layer cache
IMAGE=localhost/gptj-predictor:smoke
BASE=localhost/gptj-smoke-base
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TORCH_WHEEL=${TORCH_WHEEL:-$(ls /opt/wheels/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -n 1 || true)}
CONTAINER=gptj-smoke-$$

skip() {
  cat >&2 <<MSG

################################################################################
#  IMAGE SMOKE TEST SKIPPED: $1
#  The Dockerfile was NOT built or run on this machine.
################################################################################

MSG
  exit 0
}

command -v podman >/dev/null || skip "podman is not installed (run 'make smoke', which installs it)"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (run 'make smoke', which installs it)"
mkdir -p "$WORK"
# crun fails on these machines; runc with cgroupfs works (DESIGN.md section 5).
cat > "$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
podman info >/dev/null 2>&1 || skip "podman cannot run here: $(podman info 2>&1 | tail -n 1)"

cleanup() { podman rm -f "$CONTAINER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

# 1. A Debian bookworm base (Python 3.11, like our torch wheel), made once and reused.
if ! podman image exists "$BASE"; then
  echo "== making the base image with debootstrap (about 30 s)"
  rm -rf "$WORK/rootfs"
  timeout 900 debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log"; exit 1; }
  tar -C "$WORK/rootfs" -c . | podman import - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

# 2. The build context: the repository's files (as a fresh clone has them) and the CPU torch wheel.
rm -rf "$WORK/context" && mkdir -p "$WORK/context"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/context")
[ -n "$TORCH_WHEEL" ] && cp "$TORCH_WHEEL" "$WORK/context/wheels/"
build_args=(--build-arg "BASE_IMAGE=$BASE" --build-arg TORCH_VARIANT=cpu)
# Behind a TLS-intercepting proxy pip needs the host's CA bundle (the Dockerfile's PIP_CERT).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  build_args+=(--volume /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt)
fi
echo "== building $IMAGE"
timeout 2400 podman build --network host "${build_args[@]}" -t "$IMAGE" "$WORK/context" > "$WORK/build.log" 2>&1 \
  || { tail -n 40 "$WORK/build.log"; echo "FAIL: the image did not build (log: $WORK/build.log)"; exit 1; }

# 3. Run it as the image's own user, read-only root, writable tmpfs only for /cache and /tmp; /cache is
#    chowned to that user (U), as fsGroup makes the emptyDir writable in the pod.
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "== running on 127.0.0.1:$PORT"
podman run -d --name "$CONTAINER" --network host --read-only \
  --tmpfs /cache:rw,size=512m,U --tmpfs /tmp:rw,size=256m,mode=1777 \
  --cap-drop ALL --security-opt no-new-privileges "$IMAGE" --http_port "$PORT" >/dev/null

fail() { echo "FAIL: $1"; podman logs "$CONTAINER" 2>&1 | tail -n 40; exit 1; }

# 4. Readiness, the seed example, the user and the read-only root.
python3 - "$PORT" <<'PY' || fail "the container did not serve the seed example"
import json, sys, time, urllib.error, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
deadline = time.monotonic() + 300
while True:
    try:
        if urllib.request.urlopen(f"{base}/v2/models/gptj/ready", timeout=5).status == 200:
            break
    except (urllib.error.URLError, OSError):
        pass
    if time.monotonic() > deadline:
        sys.exit("not ready after 300 s")
    time.sleep(1)
prompt = "If I was a billionaire, I would"
request = urllib.request.Request(f"{base}/v1/models/gptj:predict", method="POST",
                                 data=json.dumps([{"prompt": prompt, "max_length": 50}]).encode(),
                                 headers={"Content-Type": "application/json"})
body = json.load(urllib.request.urlopen(request, timeout=120))
assert set(body) == {"status", "data", "message"}, body
assert body["status"] == "success" and body["message"] is None, body
assert isinstance(body["data"], str) and body["data"].startswith(prompt) and len(body["data"]) > len(prompt), body
print("seed example:", json.dumps(body)[:160])
PY
[ "$(podman exec "$CONTAINER" id -u)" = 10001 ] || fail "the container does not run as uid 10001"
if podman exec "$CONTAINER" sh -c 'touch /written' 2>/dev/null; then fail "the root filesystem is writable"; fi
echo "PASS: image smoke test (non-root uid 10001, read-only root filesystem, seed example answered)"
