#!/usr/bin/env bash
# Image smoke test: build the repository's Dockerfile with podman (CPU torch, on a Debian bookworm base
# made locally with debootstrap), run it the way the pod runs it (uid 10001, read-only root filesystem,
# writable /cache and /tmp only), wait for readiness, post the seed example, expect the success
# envelope, and always remove the container.
#
# This script installs nothing: `make smoke` installs podman, runc, netavark and debootstrap. Where podman
# cannot run at all it prints a loud SKIPPED banner and exits 0; every other failure exits non-zero and
# prints what explains it (the build log, or the container's log).
#
# Kept between runs, so a later run takes about half a minute (also after a source change):
# the base image (localhost/localbase) and podman's layer cache (podman's own storage). Everything else
# (containers.conf, the build context, the logs) lives in a temporary directory that is removed on exit.
#
# Settings (environment): SMOKE_BUDGET_S (whole run, default 1500 s), SMOKE_READY_S (readiness, 300 s),
# SMOKE_BUILD_S (podman build, 1200 s), DEBIAN_MIRROR, TORCH_WHEEL, SMOKE_CA_BUNDLE, SMOKE_IMAGE,
# SMOKE_BASE_IMAGE, TMPDIR.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
IMAGE=${SMOKE_IMAGE:-localhost/gptj-predictor:smoke}
BASE=${SMOKE_BASE_IMAGE:-localhost/localbase}
# The host's own Debian source on these machines (see /etc/apt/sources.list.d/debian.sources).
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# PyPI's torch is the multi-GB CUDA build; the image takes this local CPU wheel from ./wheels instead.
# Debian bookworm's python3 is 3.11, hence cp311.
TORCH_WHEEL=${TORCH_WHEEL:-$(compgen -G '/opt/wheels/torch-2.13.0+cpu-cp311-*.whl' | head -n 1 || true)}
# Outbound TLS is intercepted here: pip inside the build trusts only what this bundle holds.
CA_BUNDLE=${SMOKE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
CONTAINER=gptj-smoke-$$
BUDGET_S=${SMOKE_BUDGET_S:-1500}
READY_S=${SMOKE_READY_S:-300}
BUILD_S=${SMOKE_BUILD_S:-1200}
DEADLINE=$((SECONDS + BUDGET_S))
export PATH=$PATH:/usr/sbin:/sbin  # runc and debootstrap live in sbin, which a non-login PATH may lack

skip() {
  cat >&2 <<MSG

################################################################################
################################################################################
##
##   IMAGE SMOKE TEST SKIPPED
##
##   Reason: $1
##
##   The Dockerfile was NOT built and the image was NOT run on this machine.
##   Nothing about the image has been checked.
##
################################################################################
################################################################################

MSG
  exit 0
}

# Seconds the next step may take: its own cap, or what is left of the whole budget if that is less
# (never 0, which would mean "no limit" to timeout(1)).
budget() {
  local left=$((DEADLINE - SECONDS))
  (( left < $1 )) || left=$1
  (( left > 0 )) || left=1
  echo "$left"
}

# ---- 0. the tools, a private containers.conf, and whether podman runs at all ---------------------------
command -v podman >/dev/null || skip "podman is not installed (\`make smoke\` installs it with apt)."
command -v runc >/dev/null || skip "runc is not installed (\`make smoke\` installs it with apt); podman needs it here."
for tool in git python3 timeout; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is needed and not installed" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gptj-smoke.XXXXXX")
KEPT_LOG=${TMPDIR:-/tmp}/gptj-smoke-build.log  # a failed build's whole log outlives $WORK
STAGE=setup
started=""
before_build=""
cleanup() {
  local rc=$?
  trap - EXIT HUP INT TERM
  if [ "$rc" -ne 0 ]; then
    case $STAGE in
      base) echo "---- base.log (last 30 lines) ----" >&2; tail -n 30 "$WORK/base.log" >&2 || true ;;
      build) cp "$WORK/build.log" "$KEPT_LOG" 2>/dev/null || true
             echo "---- podman build log (last 60 lines; all of it: $KEPT_LOG) ----" >&2
             tail -n 60 "$WORK/build.log" >&2 || true
             # podman 4.3 leaves its build's working containers behind when the build is killed (timeout,
             # Ctrl-C): remove the ones that appeared during this build.
             comm -13 <(printf '%s\n' "$before_build") <(build_containers) | xargs -r timeout 120 podman rm -f >/dev/null 2>&1 || true ;;
    esac
    if [ -n "$started" ]; then
      echo "---- container log ($CONTAINER) ----" >&2
      timeout 30 podman logs "$CONTAINER" >&2 2>&1 || true
      echo "---- end of container log ----" >&2
    fi
    echo "FAIL: image smoke test failed during: $STAGE (exit $rc)" >&2
  fi
  if [ -n "$started" ]; then
    timeout 60 podman rm -f -t 5 "$CONTAINER" >/dev/null 2>&1 || echo "warning: could not remove container $CONTAINER" >&2
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
# A signal must still run the EXIT trap (remove the container), and report as a failure.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# DESIGN.md section 5: crun fails on these machines; runc with cgroupfs (there is no systemd) works.
# The ulimits match what the pod gets; podman's defaults come from the host and may be lower.
# CONTAINERS_CONF replaces /etc/containers/containers.conf for every podman call below, so /etc is
# left alone.
cat > "$WORK/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF
export CONTAINERS_CONF=$WORK/containers.conf

if ! info=$(timeout 60 podman info 2>&1); then
  skip "\`podman info\` fails here: $(tail -n 3 <<<"$info" | tr '\n' ' ')"
fi

# ---- 1. the base image: Debian bookworm from debootstrap, made once --------------------------------
# No registry is reachable, so no FROM can be pulled; debootstrap fetches from the Debian mirror (which is
# reachable) and `podman import` turns the tree into a local image. Python 3.11, like the CPU wheel.
STAGE=base
if timeout 60 podman image exists "$BASE"; then
  echo "== base image $BASE: cached"
else
  command -v debootstrap >/dev/null \
    || skip "debootstrap is not installed (\`make smoke\` installs it with apt) and there is no $BASE image."
  echo "== making base image $BASE with debootstrap from $MIRROR (about a minute)"
  t0=$SECONDS
  timeout "$(budget 600)" debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" > "$WORK/base.log" 2>&1
  # The apt lists debootstrap leaves would only be stale in every layer: the Dockerfile runs apt-get update.
  rm -rf "$WORK/rootfs/var/lib/apt/lists/"* "$WORK/rootfs/var/cache/apt/archives/"*.deb
  tar -C "$WORK/rootfs" -c . | timeout "$(budget 300)" podman import - "$BASE" >> "$WORK/base.log" 2>&1
  rm -rf "$WORK/rootfs"  # about 200 MB, no longer needed: the image has it
  echo "   made in $((SECONDS - t0)) s"
fi

# ---- 2. the build context: what a fresh clone holds, plus the CPU torch wheel ------------------------
# Tracked files as they are in the working tree, and new files that are not ignored: the same tree a
# clone of the next commit has, without .venv, caches or wheels/*.whl that happen to be lying around.
STAGE=context
git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 \
  || { echo "FAIL: $ROOT is not a git checkout (the build context is what git lists)" >&2; exit 1; }
mkdir "$WORK/context"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) | while IFS= read -r -d '' path; do
  # A tracked file deleted in the working tree is not in the next commit either.
  if [ -e "$ROOT/$path" ] || [ -L "$ROOT/$path" ]; then printf '%s\0' "$path"; fi
done | (cd "$ROOT" && xargs -0 --no-run-if-empty cp -P --parents -t "$WORK/context")
[ -f "$WORK/context/Dockerfile" ] || { echo "FAIL: no Dockerfile in $ROOT" >&2; exit 1; }
mkdir -p "$WORK/context/wheels"
if [ -n "$TORCH_WHEEL" ] && [ -f "$TORCH_WHEEL" ]; then
  cp "$TORCH_WHEEL" "$WORK/context/wheels/"
else
  echo "warning: no local CPU torch wheel (TORCH_WHEEL); the build takes torch from PyTorch's CPU index" >&2
fi

# ---- 3. podman build ---------------------------------------------------------------------------------
# --network host: the build's RUN steps reach the Debian mirror and PyPI the way this host does (no
#   bridge or NAT needed, and none of the iptables setup a container network would ask for).
# --volume + PIP_CERT: outbound TLS is intercepted here, and the base image's CA bundle does not know
#   the interceptor's CA; the host's bundle is mounted into every RUN step (never into a layer) and the
#   Dockerfile's PIP_CERT build arg points pip at it.
# --pull=never: the base is local by construction; never try a registry.
# Layers are cached by podman (its default --layers), so an unchanged tree rebuilds in seconds.
STAGE=build
build_args=(--network host --pull=never
            --build-arg "BASE_IMAGE=$BASE" --build-arg TORCH_VARIANT=cpu)
if [ -f "$CA_BUNDLE" ]; then
  build_args+=(--volume "$CA_BUNDLE:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi
echo "== building $IMAGE (the first build takes a few minutes)"
build_containers() { timeout 60 podman ps -a --external --no-trunc --filter name=working-container --format '{{.ID}}' | sort; }
before_build=$(build_containers)
t0=$SECONDS
# Keep the whole output for a failure; show each step that really runs as it starts (a first build is
# long), and only a count of those taken from the cache. The pipeline's status is podman's own
# (PIPESTATUS[0]), not the filters'.
set +e
timeout --kill-after=30 "$(budget "$BUILD_S")" \
  podman build "${build_args[@]}" -t "$IMAGE" "$WORK/context" 2>&1 \
  | tee "$WORK/build.log" | awk '
      function show(line) { if (line != "") { print "   " substr(line, 1, 140); fflush() } }
      /^\[[0-9]+\/[0-9]+\] STEP [0-9]+\/[0-9]+: FROM / { show(step); step = ""; next }
      /^\[[0-9]+\/[0-9]+\] STEP/ { show(step); step = $0; steps++; next }
      /^--> Using cache/ { step = ""; cached++; next }
      { show(step); step = "" }
      END { show(step); if (steps) printf "   %d of %d steps from the layer cache\n", cached, steps }'
build_rc=${PIPESTATUS[0]}
set -e
if [ "$build_rc" -ne 0 ]; then
  [ "$build_rc" -ne 124 ] && [ "$build_rc" -ne 137 ] || echo "FAIL: the build ran out of time" >&2
  exit 1
fi
echo "   built in $((SECONDS - t0)) s"

# ---- 4. run it as the pod does -----------------------------------------------------------------------
# The image's own USER (10001): no --user, so a wrong USER in the Dockerfile shows here.
# --read-only with --read-only-tmpfs=false: only what we name is writable, as in the pod, where only the
#   /cache and /tmp emptyDirs are (podman would otherwise add writable /run, /tmp and /var/tmp). The U
#   option chowns the /cache tmpfs to the container user, as fsGroup does for the emptyDir.
# --network host: no container network is needed. KServe listens on 0.0.0.0, so for the test's minutes
#   the port is open on every host interface; we only talk to it on 127.0.0.1.
STAGE=run
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
GRPC_PORT=$(free_port)  # the image serves gRPC v2 too: on the host network its default 8081 may be taken
URL=http://127.0.0.1:$PORT
echo "== running $IMAGE as $CONTAINER on $URL"
started=1
timeout 120 podman run -d --name "$CONTAINER" --network host \
  --read-only --read-only-tmpfs=false --tmpfs /cache:rw,size=1g,U --tmpfs /tmp:rw,size=256m,mode=1777 \
  --cap-drop ALL --security-opt no-new-privileges \
  "$IMAGE" --http_port "$PORT" --grpc_port "$GRPC_PORT" >/dev/null

# ---- 5. readiness: the tiny model is built into /cache on first start ----------------------------------
STAGE=readiness
status() {  # HTTP status of a GET, or 000 when nothing answers
  python3 - "$1" <<'PY'
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError:
    print("000")
PY
}
t0=$SECONDS
ready_by=$((SECONDS + $(budget "$READY_S")))
until [ "$(status "$URL/v2/models/gptj/ready")" = 200 ]; do
  # A model that cannot load ends the process: fail at once instead of waiting out the budget.
  running=$(timeout 30 podman inspect -f '{{.State.Running}}' "$CONTAINER" 2>/dev/null || echo gone)
  if [ "$running" != true ]; then
    code=$(timeout 30 podman inspect -f '{{.State.ExitCode}}' "$CONTAINER" 2>/dev/null || echo unknown)
    echo "FAIL: the container stopped before it was ready (exit code $code)" >&2; exit 1
  fi
  (( SECONDS < ready_by )) || { echo "FAIL: not ready after $((SECONDS - t0)) s" >&2; exit 1; }
  sleep 2
done
echo "   ready after $((SECONDS - t0)) s"

# ---- 6. the seed example, as the original service documented it ----------------------------------------
STAGE="seed example"
timeout "$(budget 180)" python3 - "$URL" <<'PY'
import json, sys, urllib.error, urllib.request
prompt = "If I was a billionaire, I would"
request = urllib.request.Request(f"{sys.argv[1]}/v1/models/gptj:predict", method="POST",
                                 data=json.dumps([{"prompt": prompt, "max_length": 50}]).encode(),
                                 headers={"Content-Type": "application/json"})
try:
    response = urllib.request.urlopen(request, timeout=150)
except urllib.error.HTTPError as e:
    sys.exit(f"FAIL: HTTP {e.code}: {e.read()[:500]!r}")
raw = response.read()
body = json.loads(raw)
problems = []
if response.status != 200:
    problems.append(f"HTTP {response.status}")
if not isinstance(body, dict) or set(body) != {"status", "data", "message"}:
    problems.append("not the {status, data, message} envelope")
else:
    if body["status"] != "success":
        problems.append("status is not success")
    if body["message"] is not None:
        problems.append("message is not null")
    data = body["data"]
    if not (isinstance(data, str) and data.startswith(prompt) and len(data) > len(prompt)):
        problems.append("data is not a string that continues the prompt")
if problems:
    sys.exit(f"FAIL: {'; '.join(problems)}: {raw[:500]!r}")
print(f"   seed example: HTTP 200 {json.dumps(body)[:200]}")
PY

# ---- 7. who it runs as, and that its root filesystem is read-only ----------------------------------------
STAGE="user and read-only checks"
# The server itself (PID 1), not a new exec'd process: real, effective, saved and filesystem uid.
uids=$(timeout 30 podman exec "$CONTAINER" sh -c 'grep ^Uid: /proc/1/status' | awk '{print $2, $3, $4, $5}')
[ "$uids" = "10001 10001 10001 10001" ] || { echo "FAIL: the server runs with uids '$uids', not 10001" >&2; exit 1; }
echo "   server process uid: 10001"
# As root inside the container, so that a failure can only come from the read-only mount (uid 10001
# could not write to / on a writable filesystem either, which would prove nothing).
if out=$(timeout 30 podman exec --user 0 "$CONTAINER" sh -c 'touch /smoke-write-test' 2>&1); then
  echo "FAIL: the root filesystem is writable" >&2; exit 1
fi
grep -q 'Read-only file system' <<<"$out" || { echo "FAIL: writing to / failed, but not as read-only: $out" >&2; exit 1; }
echo "   root filesystem: read-only"

STAGE=finished
echo "PASS: image smoke test ($IMAGE: uid 10001, read-only root filesystem, seed example answered) in ${SECONDS} s"
