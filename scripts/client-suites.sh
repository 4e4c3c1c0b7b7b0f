#!/usr/bin/env bash
# Runs real AMQP 0-9-1 clients' OWN test suites, unmodified, against actormq (issue #12;
# counts and what is not applicable: docs/AMQP.md, "What the clients' own test suites
# check"). Installs what it needs: Debian packages when missing, a Python venv with
# pinned versions from PyPI.
#
#   scripts/client-suites.sh [SUITE...]     SUITE: go aio-pika aiormq amqp-tools java amqplib
#                                           amqpstorm lapin amqprs rabbitpy amiquip
#                                           amqp-client-rust celery celery-rs bb8-lapin
#                                           (default: all of them)
#
# ACTORMQ_BIN  the broker binary (default: $CARGO_TARGET_DIR or target, /debug/actormq)
# WORK         scratch directory (default: a new temporary one)
#
# Each suite gets brokers of its own on ephemeral ports (ACTORMQ__*__BIND=127.0.0.1:0,
# data in a temporary directory). Prints one "SUITE: N passed, N failed" line per suite
# and exits 1 when any suite had a failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${ACTORMQ_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/actormq}"
bin="$(realpath "$bin")"
work="${WORK:-$(mktemp -d -t actormq-suites.XXXXXX)}"
mkdir -p "$work"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(go aio-pika aiormq amqp-tools java amqplib amqpstorm lapin amqprs rabbitpy amiquip
  amqp-client-rust celery celery-rs bb8-lapin)
failed=0
summary=()

[ -x "$bin" ] || { echo "no broker binary at $bin (cargo build first)" >&2; exit 2; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Starts `actormq serve` in directory $1; prints its AMQP address.
start_broker() { # dir [AMQP bind address, default 127.0.0.1:0]
  local dir="$1" amqp_bind="${2:-127.0.0.1:0}"
  mkdir -p "$dir"
  (
    cd "$dir"
    ACTORMQ__SERVER__BIND=127.0.0.1:0 ACTORMQ__AMQP__BIND="$amqp_bind" \
      ACTORMQ__HTTP__BIND=127.0.0.1:0 ACTORMQ__STORAGE__DATA_DIR="$dir/data" \
      RUST_LOG="${RUST_LOG:-warn}" exec "$bin" serve >"$dir/out" 2>"$dir/err"
  ) &
  echo $! >"$dir/pid"
  for _ in $(seq 1 300); do
    # `actormq listening on` (the native port) is printed last, after the AMQP and
    # management lines.
    if grep -q '^actormq listening on ' "$dir/out" 2>/dev/null; then
      grep '^actormq AMQP listening on ' "$dir/out" | awk '{print $NF}'
      return 0
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "the broker did not start (see $dir/err)" >&2
  return 1
}

# Stops the broker of directory $1 and waits (up to 30 s) until it is gone, so that the
# next suite can take its port.
stop_broker() {
  local pid
  pid="$(cat "$1/pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

record() { # name passed failed [note]
  summary+=("$1: $2 passed, $3 failed${4:+ ($4)}")
  [ "$3" -eq 0 ] || failed=1
}

run_go() {
  # amqp091-go (RabbitMQ's Go client) and streadway/amqp (its predecessor): Debian
  # ships their sources with the _test.go files; built in GOPATH mode (no network).
  apt_install golang-go golang-github-rabbitmq-amqp091-go-dev golang-github-streadway-amqp-dev
  export GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$work/go-cache" GOFLAGS=
  local addr
  addr="$(start_broker "$work/go-broker")"
  for pkg in rabbitmq/amqp091-go streadway/amqp; do
    local name="go:${pkg#*/}" src="/usr/share/gocode/src/github.com/$pkg"
    local test="$work/${pkg//\//-}.test" log="$work/${pkg//\//-}.log"
    (cd "$src" && go test -c -tags integration -o "$test" .)
    set +e
    (cd "$src" && AMQP_URL="amqp://guest:guest@$addr/" timeout 600 "$test" -test.v -test.timeout 540s >"$log" 2>&1)
    local rc=$?
    set -e
    local pass fail
    pass=$(grep -c '^--- PASS' "$log" || true)
    fail=$(grep -c '^--- FAIL' "$log" || true)
    if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
      if grep -q '^goleak: Errors on successful test run' "$log"; then
        # amqp091-go: the tests gated on product "RabbitMQ" run nothing against
        # another broker and leave their connection open, which goleak reports.
        record "$name" "$pass" 0 "goleak: connections left open by the RabbitMQ-only tests"
        continue
      fi
      fail=1
    fi
    record "$name" "$pass" "$fail"
    grep '^--- FAIL' "$log" || true
  done
  stop_broker "$work/go-broker"
}

python_env() {
  local venv="$work/venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  local pip=("$venv/bin/pip" install --quiet --disable-pip-version-check)
  "${pip[@]}" aio-pika==10.2.1 aiormq==7.2.4 pamqp==4.0.1 aiomisc==18.0.37 \
    aiomisc-pytest==2.0.0 pytest==9.2.0 shortuuid==1.0.13 pytest-rst==0.2.3 \
    timeout-decorator==0.5.0 uv_build==0.13.6
  "$venv/bin/pip" uninstall --quiet -y pytest-asyncio 2>/dev/null || true
  # The sdists carry the tests; aiormq's builds with uv_build (on PATH from the venv).
  mkdir -p "$work/sdists"
  for p in aio-pika==10.2.1 aiormq==7.2.4; do
    local dir="$work/sdists/${p%%==*}"
    [ -d "$dir" ] && continue
    PATH="$venv/bin:$PATH" "$venv/bin/pip" download --quiet --no-deps --no-binary :all: \
      --no-build-isolation "$p" -d "$work/sdists"
    mkdir -p "$dir"
    tar xzf "$work/sdists/$(echo "${p%%==*}" | tr - _)-${p##*==}.tar.gz" -C "$dir" --strip-components=1
  done
}

# pytest over an sdist's tests/, its Docker container replaced by actormq processes.
run_pytest_suite() { # name sdist-dir
  local name="$1" dir="$work/sdists/$2" log="$work/$1.log"
  set +e
  (
    cd "$dir"
    PATH="$work/venv/bin:$PATH" PYTHONPATH="$root/scripts/client-suites" ACTORMQ_BIN="$bin" \
      ACTORMQ_SUITE_CERTS="$work/sdists/aiormq/tests/certs" \
      timeout 1800 python -m pytest -p docker_shim -q -p no:cacheprovider -o log_cli=false \
      tests >"$log" 2>&1
  )
  set -e
  local line pass fail err
  line="$(tail -n 1 "$log")"
  pass=$(echo "$line" | grep -o '[0-9]* passed' | cut -d' ' -f1 || true)
  fail=$(echo "$line" | grep -o '[0-9]* failed' | cut -d' ' -f1 || true)
  err=$(echo "$line" | grep -o '[0-9]* error' | cut -d' ' -f1 || true)
  record "$name" "${pass:-0}" "$((${fail:-0} + ${err:-0}))" "$line"
  grep -E '^(FAILED|ERROR) ' "$log" || true
}

run_amqp_tools() {
  # rabbitmq-c through Debian's amqp-tools: declare, publish with properties and
  # headers, get, consume, delete, and the error a redeclare gets.
  apt_install amqp-tools
  local addr url pass=0 fail=0
  addr="$(start_broker "$work/tools-broker")"
  url="amqp://guest:guest@$addr"
  check() { # description command...
    local what="$1"; shift
    if "$@"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "amqp-tools: failed: $what" >&2; fi
  }
  check "declare a durable queue" amqp-declare-queue -u "$url" -q tools -d
  check "publish with properties and a header" \
    amqp-publish -u "$url" -r tools -b hello -p -C text/plain -E utf8 -H 'x-a: 1'
  check "get it back" test "$(amqp-get -u "$url" -q tools)" = hello
  check "get on an empty queue fails" test "$(amqp-get -u "$url" -q tools 2>/dev/null; echo $?)" != 0
  check "publish two" amqp-publish -u "$url" -r tools -b m1
  check "publish two" amqp-publish -u "$url" -r tools -b m2
  check "consume both" test "$(timeout 20 amqp-consume -u "$url" -q tools -c 2 cat)" = m1m2
  check "a redeclare that differs is 406" \
    bash -c "amqp-declare-queue -u '$url' -q tools 2>&1 | grep -q 'server channel error 406'"
  # amqp-consume -e binds a server-named queue; publish until it has taken one.
  # (Without -r it crashes before binding: strdup(NULL) in rabbitmq-c 0.11's tool.)
  : >"$work/fan"
  timeout 20 amqp-consume -u "$url" -e amq.fanout -r any -c 1 cat >"$work/fan" &
  local consumer=$!
  for _ in $(seq 1 200); do
    amqp-publish -u "$url" -e amq.fanout -b fan
    [ -s "$work/fan" ] && break
    sleep 0.1
  done
  check "a server-named queue bound to a fanout gets its message" wait "$consumer"
  check "delete the queue" amqp-delete-queue -u "$url" -q tools
  check "get from a missing queue is 404" \
    bash -c "amqp-get -u '$url' -q tools 2>&1 | grep -q 'server channel error 404'"
  stop_broker "$work/tools-broker"
  record amqp-tools "$pass" "$fail"
}

run_java() {
  # The RabbitMQ Java client 5.0.0 (Debian): confirms, returns, cancel notification,
  # error codes (scripts/client-suites/JavaClientCheck.java, run as a source file).
  command -v java >/dev/null 2>&1 || apt_install default-jdk-headless
  apt_install librabbitmq-client-java libslf4j-java
  local addr log="$work/java.log"
  addr="$(start_broker "$work/java-broker")"
  set +e
  timeout 300 java -cp /usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-nop.jar \
    "$root/scripts/client-suites/JavaClientCheck.java" "amqp://guest:guest@$addr/%2f" >"$log" 2>&1
  set -e
  stop_broker "$work/java-broker"
  local pass fail
  pass=$(grep -o '[0-9]* passed' "$log" | cut -d' ' -f1 || true)
  fail=$(grep -o '[0-9]* failed,\{0,1\}' "$log" | tail -n 1 | grep -o '[0-9]*' || true)
  record java "${pass:-0}" "${fail:-1}"
  grep 'failed:' "$log" || true
}

run_amqplib() {
  # amqplib (Node.js): the npm package ships its mocha suite (codec, frames, the
  # channel and callback APIs against a broker). Its connect tests dial the default
  # amqp://localhost and amqp://[::1] themselves, so this broker listens on [::]:5672
  # (IPv4 and IPv6), which must be free.
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  local dir="$work/amqplib" log="$work/amqplib.log"
  if [ ! -d "$dir/package" ]; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent amqplib@0.10.9 >/dev/null && tar xzf amqplib-0.10.9.tgz)
    npm install --prefix "$dir/package" --no-audit --no-fund --silent --no-save \
      buffer-more-ints@1.0.0 url-parse@1.5.10 mocha@9.2.2 claire@0.4.1 >/dev/null
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    record amqplib 0 1 "127.0.0.1:5672 is taken: the suite's connect tests need it"
    return
  fi
  if ! start_broker "$work/amqplib-broker" "[::]:5672" >/dev/null; then
    record amqplib 0 1 "no broker on [::]:5672 (see $work/amqplib-broker/err)"
    return
  fi
  set +e
  # Not applicable: "serverProperties" asserts that the product is "RabbitMQ".
  (cd "$dir/package" && URL="amqp://guest:guest@localhost:5672" timeout 300 \
    ./node_modules/.bin/mocha --check-leaks -u tdd --exit -R dot \
    --grep '^Connect API serverProperties$' --invert test/ >"$log" 2>&1)
  set -e
  stop_broker "$work/amqplib-broker"
  local pass fail
  pass=$(grep -o '[0-9]* passing' "$log" | cut -d' ' -f1 || true)
  fail=$(grep -o '[0-9]* failing' "$log" | cut -d' ' -f1 || true)
  if [ -z "$pass" ]; then fail=1; fi
  record amqplib "${pass:-0}" "${fail:-0}"
  [ "${fail:-0}" -eq 0 ] || sed -n '/failing/,+60p' "$log"
}

run_amqpstorm() {
  # AMQPStorm (Python): its sdist ships its functional suite (AMQP and the management
  # HTTP API). Some tests dial AMQP_HOST on the default port, so this broker listens on
  # [::]:5672, which must be free.
  local venv="$work/amqpstorm-venv" dir="$work/sdists/amqpstorm" log="$work/amqpstorm.log"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pamqp==4.0.1 requests==2.32.5 pytest==9.2.0
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    "$venv/bin/pip" download --quiet --no-deps --no-binary :all: amqpstorm==3.1.4 -d "$work/sdists"
    tar xzf "$work/sdists/amqpstorm-3.1.4.tar.gz" -C "$dir" --strip-components=1
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    record amqpstorm 0 1 "127.0.0.1:5672 is taken: the suite dials it"
    return
  fi
  if ! start_broker "$work/amqpstorm-broker" "[::]:5672" >/dev/null; then
    record amqpstorm 0 1 "no broker on [::]:5672 (see $work/amqpstorm-broker/err)"
    return
  fi
  local http
  http="$(grep '^actormq management API on ' "$work/amqpstorm-broker/out" | awk '{print $NF}' || true)"
  set +e
  # Not applicable: test_api_cluster_name asserts the name of the suite's own RabbitMQ
  # host; test_api_with_inaccessible expects a fixed private address to be unreachable.
  (cd "$dir" && AMQP_HOST=127.0.0.1 AMQP_USERNAME=guest AMQP_PASSWORD=guest \
    AMQP_URI="amqp://guest:guest@127.0.0.1:5672/%2F" AMQP_HTTP_URL="${http%/api/}" \
    timeout 600 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --deselect amqpstorm/tests/functional/management/test_api.py::ApiFunctionalTests::test_api_cluster_name \
    --deselect amqpstorm/tests/functional/management/test_api.py::ApiFunctionalTests::test_api_with_inaccessible \
    amqpstorm/tests/functional >"$log" 2>&1)
  set -e
  stop_broker "$work/amqpstorm-broker"
  local line pass fail err
  line="$(tail -n 1 "$log")"
  pass=$(echo "$line" | grep -o '[0-9]* passed' | cut -d' ' -f1 || true)
  fail=$(echo "$line" | grep -o '[0-9]* failed' | cut -d' ' -f1 || true)
  err=$(echo "$line" | grep -o '[0-9]* error' | cut -d' ' -f1 || true)
  if [ -z "$pass" ]; then fail=1; fi
  record amqpstorm "${pass:-0}" "$((${fail:-0} + ${err:-0}))" "$line"
  grep -E '^(FAILED|ERROR) ' "$log" || true
}

# Records a `cargo test` log's totals (over every test binary) as suite $1; a run that
# passed nothing failed.
record_cargo_tests() { # name log
  local pass fail
  pass=$(grep -h '^test result' "$2" | grep -o '[0-9]* passed' | awk '{s += $1} END {print s + 0}' || true)
  fail=$(grep -h '^test result' "$2" | grep -o '[0-9]* failed' | awk '{s += $1} END {print s + 0}' || true)
  if [ "$pass" -eq 0 ]; then fail=1; fi
  record "$1" "$pass" "$fail"
  grep -E '^test .* FAILED|^error' "$2" || true
}

run_lapin() {
  # lapin (Rust; the AMQP client of actormq's own tests and perf): the crate ships its
  # integration tests; they dial AMQP_ADDR. The crate's source is the one cargo fetched
  # for actormq's dev-dependencies; it builds in its own target directory (minutes).
  local version src dir="$work/lapin" log="$work/lapin.log"
  version="$(cd "$root" && cargo metadata --format-version 1 --locked 2>/dev/null |
    python3 -c 'import json,sys; print(next((p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "lapin"), ""))' || true)"
  src=""
  if [ -n "$version" ]; then
    src="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "lapin-$version" 2>/dev/null | head -n 1 || true)"
  fi
  if [ -z "$src" ]; then
    record lapin 0 1 "lapin $version's source is not in cargo's registry (cargo fetch first)"
    return
  fi
  rm -rf "$dir" && cp -r "$src" "$dir"
  local addr
  if ! addr="$(start_broker "$work/lapin-broker")"; then
    record lapin 0 1 "the broker did not start"
    return
  fi
  set +e
  (cd "$dir" && CARGO_TARGET_DIR="$work/lapin-target" AMQP_ADDR="amqp://guest:guest@$addr/%2f" \
    timeout 1800 cargo test --features tokio --no-fail-fast -- --test-threads 1 >"$log" 2>&1)
  set -e
  stop_broker "$work/lapin-broker"
  record_cargo_tests "lapin $version" "$log"
}

run_amqprs() {
  # amqprs (Rust, tokio): the crate ships its integration tests. They dial
  # localhost:5672 as user "user" with password "bitnami" (the Bitnami RabbitMQ image the
  # project tests with), so this broker listens on [::]:5672 (which must be free) and is
  # seeded with that user. The crate's source comes from crates.io through a scratch
  # manifest (cargo fetch); it builds in its own target directory (minutes).
  local version=2.1.5 dir="$work/amqprs" log="$work/amqprs.log" src
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    record amqprs 0 1 "127.0.0.1:5672 is taken: the suite dials it"
    return
  fi
  mkdir -p "$work/amqprs-fetch/src"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\namqprs = "=%s"\n' \
    "$version" >"$work/amqprs-fetch/Cargo.toml"
  : >"$work/amqprs-fetch/src/lib.rs"
  (cd "$work/amqprs-fetch" && cargo fetch -q) || true
  src="$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "amqprs-$version" 2>/dev/null | head -n 1 || true)"
  if [ -z "$src" ]; then
    record amqprs 0 1 "amqprs $version could not be fetched from crates.io"
    return
  fi
  rm -rf "$dir" && cp -r "$src" "$dir"
  local hash
  hash="$("$bin" hash-password bitnami 2>/dev/null | tail -n 1)"
  mkdir -p "$work/amqprs-broker"
  printf '[[users]]\nname = "user"\npassword_hash = "%s"\nvhosts = ["/"]\ntags = ["administrator"]\n' \
    "$hash" >"$work/amqprs-broker/Settings.toml"
  if ! start_broker "$work/amqprs-broker" "[::]:5672" >/dev/null; then
    record amqprs 0 1 "no broker on [::]:5672 (see $work/amqprs-broker/err)"
    return
  fi
  set +e
  # Not applicable: split_connection's test_open_amqp_connection logs in with
  # RABBIT-CR-DEMO, RabbitMQ's demonstration challenge-response mechanism, which RabbitMQ
  # does not offer unless configured to (actormq offers PLAIN and AMQPLAIN, and refuses
  # it with ACCESS_REFUSED naming those).
  (cd "$dir" && CARGO_TARGET_DIR="$work/amqprs-target" timeout 1800 cargo test --no-fail-fast -- \
    --test-threads 1 --skip net::split_connection::test::test_open_amqp_connection >"$log" 2>&1)
  set -e
  stop_broker "$work/amqprs-broker"
  record_cargo_tests "amqprs $version" "$log"
}

# shellcheck source=client-suites/more.sh
. "$root/scripts/client-suites/more.sh"

for s in "${suites[@]}"; do
  case "$s" in
    go) run_go ;;
    aio-pika) python_env; run_pytest_suite aio-pika aio-pika ;;
    aiormq) python_env; run_pytest_suite aiormq aiormq ;;
    amqp-tools) run_amqp_tools ;;
    java) run_java ;;
    amqplib) run_amqplib ;;
    amqpstorm) run_amqpstorm ;;
    lapin) run_lapin ;;
    amqprs) run_amqprs ;;
    rabbitpy) run_rabbitpy ;;
    amiquip) run_amiquip ;;
    amqp-client-rust) run_amqp_client_rust ;;
    celery) run_celery ;;
    celery-rs) run_celery_rs ;;
    bb8-lapin) run_bb8_lapin ;;
    *) echo "unknown suite $s (go aio-pika aiormq amqp-tools java amqplib amqpstorm lapin amqprs" \
      "rabbitpy amiquip amqp-client-rust celery celery-rs bb8-lapin)" >&2; exit 2 ;;
  esac
done
echo "logs in $work"
for line in "${summary[@]}"; do echo "$line"; done
exit "$failed"
