#!/usr/bin/env bash
# TLS against real outside clients: a CA and a server certificate made with openssl in
# a temporary directory, `actormq serve` (the debug binary) with its native and AMQP
# TLS listeners on ephemeral ports, then
#   - `openssl s_client` on the AMQPS port: the chain verifies, and AMQP's
#     connection.start comes back over TLS after the protocol header;
#   - `openssl s_client -tls1_1` is refused (TLS 1.2 and 1.3 only);
#   - the actormq CLI declares a queue over the native TLS port (--tls --ca-file);
#   - `curl --cacert` GETs /api/overview from the HTTPS management listener.
# Usage: scripts/tls-check.sh [path/to/actormq]
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-target}/debug/actormq}"
dir="$(mktemp -d)"
broker=""
cleanup() {
  if [ -n "$broker" ]; then kill "$broker" 2>/dev/null || true; wait "$broker" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "tls-check: $*" >&2; [ -f "$dir/broker.log" ] && tail -20 "$dir/broker.log" >&2; exit 1; }

# A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=tls-check CA" \
  -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$dir/san.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
  -CAcreateserial -days 2 -extfile "$dir/san.ext" -out "$dir/server.pem" 2>/dev/null

ACTORMQ__SERVER__BIND=127.0.0.1:0 ACTORMQ__AMQP__BIND=127.0.0.1:0 ACTORMQ__HTTP__BIND=127.0.0.1:0 \
ACTORMQ__SERVER__TLS_BIND=127.0.0.1:0 ACTORMQ__AMQP__TLS_BIND=127.0.0.1:0 \
ACTORMQ__HTTP__TLS_BIND=127.0.0.1:0 \
ACTORMQ__TLS__CERT_FILE="$dir/server.pem" ACTORMQ__TLS__KEY_FILE="$dir/server.key" \
ACTORMQ__STORAGE__DATA_DIR="$dir/data" \
  "$bin" serve > "$dir/broker.log" 2>&1 &
broker=$!

# The listeners' ephemeral ports, from the lines `serve` prints.
amqps="" native="" https=""
for _ in $(seq 1 200); do
  amqps="$(sed -n 's/^actormq AMQPS listening on //p' "$dir/broker.log" | head -1)" || true
  native="$(sed -n 's/^actormq TLS listening on //p' "$dir/broker.log" | head -1)" || true
  https="$(sed -n 's|^actormq management API on https://\([^/]*\)/api/$|\1|p' "$dir/broker.log" | head -1)" || true
  [ -n "$amqps" ] && [ -n "$native" ] && grep -q '^actormq listening on' "$dir/broker.log" && break
  kill -0 "$broker" 2>/dev/null || fail "the broker exited"
  sleep 0.1
done
[ -n "$amqps" ] && [ -n "$native" ] && [ -n "$https" ] || fail "no TLS listener in the log"

# AMQPS: verified chain, then connection.start (it offers PLAIN) over TLS.
out="$( (printf 'AMQP\000\000\011\001'; sleep 2) | timeout 20 openssl s_client -connect "$amqps" \
  -CAfile "$dir/ca.pem" -verify_return_error -servername localhost 2>&1 | tr -d '\000' || true)"
echo "$out" | grep -q 'Verify return code: 0 (ok)' || fail "s_client did not verify the chain: $out"
echo "$out" | grep -aq 'PLAIN' || fail "no connection.start over TLS: $out"
echo "tls-check: openssl s_client verified the AMQPS listener and got connection.start"

# TLS 1.2 is accepted, TLS 1.1 refused (the client's security level lowered so that the
# refusal is the broker's, not openssl's own).
echo | timeout 20 openssl s_client -connect "$amqps" -tls1_2 -CAfile "$dir/ca.pem" \
  > "$dir/tls12.out" 2>&1 || true
grep -q 'Protocol *: TLSv1.2\|TLSv1.2' "$dir/tls12.out" || fail "TLS 1.2 was not accepted: $(cat "$dir/tls12.out")"
echo | timeout 20 openssl s_client -connect "$amqps" -tls1_1 -cipher 'DEFAULT@SECLEVEL=0' \
  > "$dir/tls11.out" 2>&1 || true
grep -q 'alert protocol version\|alert handshake failure\|unsupported protocol' "$dir/tls11.out" \
  || fail "TLS 1.1 was not refused: $(cat "$dir/tls11.out")"
echo "tls-check: TLS 1.2 accepted, TLS 1.1 refused"

# The CLI over the native TLS port.
"$bin" declare-queue --server "$native" --tls --ca-file "$dir/ca.pem" tls-check-queue \
  || fail "the CLI could not declare a queue over TLS"
echo "tls-check: the CLI declared a queue over the native TLS listener"

# HTTPS management: curl verifies the chain against the CA and gets the overview.
port="${https##*:}"
out="$(timeout 20 curl -sS --fail --cacert "$dir/ca.pem" -u guest:guest \
  "https://localhost:$port/api/overview" 2>&1)" || fail "curl over HTTPS failed: $out"
echo "$out" | grep -q '"management_version"\|"rabbitmq_version"' || fail "no overview over HTTPS: $out"
echo "tls-check: curl --cacert got /api/overview from the HTTPS listener"
