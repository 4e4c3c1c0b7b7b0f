# Sourced by scripts/client-suites.sh: the suites added in the second round (rabbitpy,
# amiquip, amqp-client-rust, celery) and the third (celery-rs, bb8-lapin). They use its
# helpers (start_broker, stop_broker, record, record_cargo_tests, apt_install) and
# variables ($bin, $work, $root).

# Prints the source directory of crate $1 version $2 from crates.io, fetched through a
# scratch manifest (cargo fetch); nothing when it could not be had.
fetch_crate() { # name version
  local dir="$work/fetch-$1"
  mkdir -p "$dir/src"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\n%s = "=%s"\n' \
    "$1" "$2" >"$dir/Cargo.toml"
  : >"$dir/src/lib.rs"
  (cd "$dir" && cargo fetch -q) >/dev/null 2>&1 || true
  find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name "$1-$2" 2>/dev/null | head -n 1
}

run_rabbitpy() {
  # rabbitpy (Python, thread-safe, by pamqp's author): the sdist ships its integration
  # tests (tests/test_integration.py, tests/integration/); they dial RABBITMQ_URL.
  local venv="$work/rabbitpy-venv" dir="$work/sdists/rabbitpy" log="$work/rabbitpy.log"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check pamqp==4.0.1 pytest==9.2.0 \
    python-dotenv==1.2.4
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    "$venv/bin/pip" download --quiet --no-deps --no-binary :all: rabbitpy==3.0.2 -d "$work/sdists"
    tar xzf "$work/sdists/rabbitpy-3.0.2.tar.gz" -C "$dir" --strip-components=1
  fi
  local addr
  if ! addr="$(start_broker "$work/rabbitpy-broker")"; then
    record rabbitpy 0 1 "the broker did not start"
    return
  fi
  set +e
  (cd "$dir" && RABBITMQ_URL="amqp://guest:guest@$addr/%2f" timeout 600 "$venv/bin/python" \
    -m pytest -q -p no:cacheprovider tests/test_integration.py tests/integration >"$log" 2>&1)
  set -e
  stop_broker "$work/rabbitpy-broker"
  record_pytest rabbitpy "$log"
}

# Records a pytest log's closing line as suite $1; a run that passed nothing failed.
record_pytest() { # name log
  local line pass fail err
  line="$(tail -n 1 "$2")"
  pass=$(echo "$line" | grep -o '[0-9]* passed' | cut -d' ' -f1 || true)
  fail=$(echo "$line" | grep -o '[0-9]* failed' | cut -d' ' -f1 || true)
  err=$(echo "$line" | grep -o '[0-9]* error' | cut -d' ' -f1 || true)
  if [ -z "$pass" ]; then fail=$((${fail:-0} + 1)); fi
  record "$1" "${pass:-0}" "$((${fail:-0} + ${err:-0}))" "$line"
  grep -E '^(FAILED|ERROR) ' "$2" || true
}

run_amiquip() {
  # amiquip (Rust, blocking): its unit tests, doctests and integration tests
  # (src/integration_tests, run when AMIQUIP_TEST_URL is set). Builds (minutes).
  local version=0.4.2 dir="$work/amiquip" log="$work/amiquip.log" src addr
  src="$(fetch_crate amiquip "$version")"
  if [ -z "$src" ]; then
    record amiquip 0 1 "amiquip $version could not be fetched from crates.io"
    return
  fi
  rm -rf "$dir" && cp -r "$src" "$dir"
  if ! addr="$(start_broker "$work/amiquip-broker")"; then
    record amiquip 0 1 "the broker did not start"
    return
  fi
  set +e
  (cd "$dir" && CARGO_TARGET_DIR="$work/amiquip-target" AMIQUIP_TEST_URL="amqp://guest:guest@$addr/%2f" \
    timeout 1800 cargo test --no-fail-fast -- --test-threads 1 >"$log" 2>&1)
  set -e
  stop_broker "$work/amiquip-broker"
  record_cargo_tests "amiquip $version" "$log"
}

run_amqp_client_rust() {
  # amqp-client-rust (an event bus over amqprs): its integration tests dial
  # RABBITMQ_HOST:RABBITMQ_PORT. The reconnection test manages its broker through
  # `docker exec lib-rabbitmq rabbitmqctl` (a vhost, permissions, close_all_connections):
  # client-suites/docker-rabbitmqctl stands in for docker, through actormq's CLI.
  local version=0.1.0 dir="$work/amqp-client-rust" log="$work/amqp-client-rust.log" src addr http
  src="$(fetch_crate amqp-client-rust "$version")"
  if [ -z "$src" ]; then
    record amqp-client-rust 0 1 "amqp-client-rust $version could not be fetched from crates.io"
    return
  fi
  rm -rf "$dir" && cp -r "$src" "$dir"
  mkdir -p "$work/docker-shim"
  ln -sf "$root/scripts/client-suites/docker-rabbitmqctl" "$work/docker-shim/docker"
  if ! addr="$(start_broker "$work/amqp-client-rust-broker")"; then
    record amqp-client-rust 0 1 "the broker did not start"
    return
  fi
  http="$(grep '^actormq management API on ' "$work/amqp-client-rust-broker/out" | awk '{print $NF}')"
  set +e
  # loop_test's stress test is #[ignore]d by the crate itself.
  (cd "$dir" && PATH="$work/docker-shim:$PATH" ACTORMQ_BIN="$bin" ACTORMQ_HTTP_URL="${http%/api/}" \
    RABBITMQ_HOST="${addr%:*}" RABBITMQ_PORT="${addr##*:}" CARGO_TARGET_DIR="$work/amqp-client-rust-target" \
    timeout 1800 cargo test --no-fail-fast -- --test-threads 1 >"$log" 2>&1)
  set -e
  stop_broker "$work/amqp-client-rust-broker"
  record_cargo_tests "amqp-client-rust $version" "$log"
}

run_celery() {
  # Celery's integration suite (t/integration in its sdist) with RabbitMQ's usual
  # partner: the broker here (pyamqp://) and results in Redis (Debian's redis-server on
  # a free port of its own). About half an hour. Not applicable: t/integration/
  # test_backend.py (Azure Blob Storage results; needs the azure package and an account).
  apt_install redis-server
  local venv="$work/celery-venv" dir="$work/sdists/celery" log="$work/celery.log"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir"
    "$venv/bin/pip" download --quiet --no-deps --no-binary :all: celery==5.7.0 -d "$work/sdists"
    tar xzf "$work/sdists/celery-5.7.0.tar.gz" -C "$dir" --strip-components=1
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$dir" kombu==5.7.0 amqp==5.4.2 \
    redis==8.2.0 pytest==9.1.1 pytest-celery==1.3.0 pytest-rerunfailures==16.7 \
    pytest-subtests==0.15.0 pytest-timeout==2.4.0 pytest-order==1.5.0 pytest-click==1.1.0 \
    freezegun==1.5.5 pydantic==2.14.4 cryptography==51.0.1 sqlalchemy==2.1.9 msgpack==1.2.4 \
    pyyaml==6.0.4 django==5.2.20
  local rport addr
  rport="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  local redis=$!
  if ! addr="$(start_broker "$work/celery-broker")"; then
    kill "$redis"
    record celery 0 1 "the broker did not start"
    return
  fi
  set +e
  # Its worker tests run the `celery` command: the venv's bin goes first on PATH.
  (cd "$dir" && PATH="$venv/bin:$PATH" TEST_BROKER="pyamqp://guest:guest@$addr//" \
    TEST_BACKEND="redis://127.0.0.1:$rport/0" REDIS_HOST=127.0.0.1 REDIS_PORT="$rport" \
    timeout 3000 "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --ignore t/integration/test_backend.py t/integration >"$log" 2>&1)
  set -e
  stop_broker "$work/celery-broker"
  kill "$redis" 2>/dev/null || true
  record_pytest celery "$log"
}

run_celery_rs() {
  # Rusty celery (crates.io `celery`, Celery's protocol in Rust): its integration tests
  # (tests/integrations.rs, tests/codegen.rs: apps and beats built on an AMQPBroker) and
  # doctests dial AMQP_ADDR; its Redis broker test dials REDIS_ADDR (Debian's
  # redis-server on a free port of its own). Builds the crate (minutes). Two things are
  # not the broker's: rustc 1.95 denies the crate's own code a 2024-edition lint
  # (never-type fallback), allowed in the copy's manifest; and
  # beat::tests::test_scheduling_two_tasks counts a mock broker's sends in a 200 ms
  # window ("time-sensitive, there may be spurious failures"): it failed the same way
  # against RabbitMQ 3.10 on this machine, and is skipped.
  apt_install redis-server
  local version=0.5.5 dir="$work/celery-rs" log="$work/celery-rs.log" src addr rport redis
  src="$(fetch_crate celery "$version")"
  if [ -z "$src" ]; then
    record celery-rs 0 1 "celery $version could not be fetched from crates.io"
    return
  fi
  rm -rf "$dir" && cp -r "$src" "$dir"
  printf '\n[lints.rust]\ndependency_on_unit_never_type_fallback = "allow"\n' >>"$dir/Cargo.toml"
  rport="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/celery-rs-redis.log" 2>&1 &
  redis=$!
  if ! addr="$(start_broker "$work/celery-rs-broker")"; then
    kill "$redis"
    record celery-rs 0 1 "the broker did not start"
    return
  fi
  set +e
  (cd "$dir" && AMQP_ADDR="amqp://guest:guest@$addr/%2f" REDIS_ADDR="redis://127.0.0.1:$rport/" \
    CARGO_TARGET_DIR="$work/celery-rs-target" timeout 1800 cargo test --no-fail-fast -- \
    --test-threads 1 --skip beat::tests::test_scheduling_two_tasks >"$log" 2>&1)
  set -e
  stop_broker "$work/celery-rs-broker"
  kill "$redis" 2>/dev/null || true
  record_cargo_tests "celery (Rust) $version" "$log"
}

run_bb8_lapin() {
  # bb8-lapin (a bb8 connection pool for lapin): tests/connect.rs takes 100 channels
  # through a pool of 2 connections, checked on check-out, from TEST_AMQP_URL; its 2
  # doctests build a pool without dialing. Builds the crate (minutes).
  local version=0.8.1 dir="$work/bb8-lapin" log="$work/bb8-lapin.log" src addr
  src="$(fetch_crate bb8-lapin "$version")"
  if [ -z "$src" ]; then
    record bb8-lapin 0 1 "bb8-lapin $version could not be fetched from crates.io"
    return
  fi
  rm -rf "$dir" && cp -r "$src" "$dir"
  if ! addr="$(start_broker "$work/bb8-lapin-broker")"; then
    record bb8-lapin 0 1 "the broker did not start"
    return
  fi
  set +e
  (cd "$dir" && TEST_AMQP_URL="amqp://guest:guest@$addr/%2f" CARGO_TARGET_DIR="$work/bb8-lapin-target" \
    timeout 1800 cargo test --no-fail-fast >"$log" 2>&1)
  set -e
  stop_broker "$work/bb8-lapin-broker"
  record_cargo_tests "bb8-lapin $version" "$log"
}
