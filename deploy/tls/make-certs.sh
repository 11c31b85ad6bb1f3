#!/usr/bin/env bash
# Makes a private CA and the certificates rhythm's TLS settings need (README.md, "Security"):
#
#   deploy/tls/make-certs.sh [OUT_DIR] [LEARNER_NAMES] [ACTOR_NAMES] [OWNER]
#
#   OUT_DIR        where the PEM files go (default deploy/tls/out; mode 0700, keys 0600)
#   LEARNER_NAMES  comma-separated DNS names the learner's certificate carries
#                  (default: learner,rhythm-learner,rhythm-learner.rhythm.svc,localhost)
#   ACTOR_NAMES    comma-separated actor identities, one client certificate each, the name as
#                  its subject CN (default: rhythm-actor)
#   OWNER          uid:gid to own the files (run as root), e.g. 10001:10001, the image's
#                  rhythm user, for docker compose, which mounts them as they are
#
# Writes ca.crt and ca.key (keep ca.key offline once the certificates exist), learner.crt and
# learner.key, and <name>.crt and <name>.key per actor, plus metrics-token (a random bearer
# token for /metrics). Existing files are kept: delete OUT_DIR to start over. Certificates are
# valid for 825 days. Needs openssl (Debian: openssl).
#
# Kubernetes: the script prints the `kubectl create secret` commands for the Secrets
# deploy/k8s/base expects (rhythm-learner-tls, rhythm-actor-tls).
set -euo pipefail

out=${1:-"$(dirname "$0")/out"}
learner_names=${2:-learner,rhythm-learner,rhythm-learner.rhythm.svc,localhost}
actor_names=${3:-rhythm-actor}
owner=${4:-}
days=825

mkdir -p "$out"
chmod 700 "$out"
cd "$out"
umask 077

if [[ ! -f ca.key ]]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days "$days" -subj "/CN=rhythm CA" \
    -keyout ca.key -out ca.crt 2>/dev/null
  echo "made ca.crt"
fi

# issue NAME CN SAN: NAME.key and NAME.crt signed by the CA.
issue() {
  local name=$1 cn=$2 san=$3
  [[ -f $name.crt ]] && return 0
  openssl req -newkey rsa:3072 -nodes -subj "/CN=$cn" -keyout "$name.key" -out "$name.csr" \
    2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=digitalSignature,keyEncipherment"
    [[ -n $san ]] && echo "subjectAltName=$san"
    echo "extendedKeyUsage=${4:-serverAuth,clientAuth}"
  } > "$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
  echo "made $name.crt (CN=$cn)"
}

san=""
IFS=, read -ra names <<< "$learner_names"
for n in "${names[@]}"; do san+="${san:+,}DNS:$n"; done
san+=",IP:127.0.0.1"
issue learner "${names[0]}" "$san" serverAuth

IFS=, read -ra actors <<< "$actor_names"
for a in "${actors[@]}"; do issue "$a" "$a" "" clientAuth; done

[[ -f metrics-token ]] || { openssl rand -hex 32 > metrics-token; echo "made metrics-token"; }
chmod 600 ./*.key metrics-token
chmod 644 ./*.crt
if [[ -n $owner ]]; then chown "$owner" . ./*.crt ./*.key metrics-token; fi

cat <<MSG

Files in $out. Kubernetes (namespace rhythm):
  kubectl -n rhythm create secret generic rhythm-learner-tls \\
    --from-file=ca.crt=$out/ca.crt --from-file=tls.crt=$out/learner.crt \\
    --from-file=tls.key=$out/learner.key --from-file=metrics-token=$out/metrics-token
  kubectl -n rhythm create secret generic rhythm-actor-tls \\
    --from-file=ca.crt=$out/ca.crt --from-file=tls.crt=$out/${actors[0]}.crt \\
    --from-file=tls.key=$out/${actors[0]}.key --from-file=metrics-token=$out/metrics-token
MSG
