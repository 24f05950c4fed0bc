#!/usr/bin/env bash
# Generate a TEST certificate authority, a broker (server) certificate and client
# certificates for the mosquitto example in systemd/mosquitto/.
#
#   scripts/gen-test-certs.sh OUT_DIR [HOSTNAME_OR_IP ...]
#
# OUT_DIR gets ca.crt/ca.key, server.crt/server.key (SAN: localhost, 127.0.0.1, ::1 and
# every extra HOSTNAME_OR_IP, e.g. `facegate.local 192.168.1.20`), and a client cert per
# user in CLIENTS (default "facegate door-front door-back", CN = user name). Files already
# present are kept, so a second run only fills in what is missing.
#
# These are for tests and a first bench setup. Keys are unencrypted (mode 0600) and the
# CA key sits next to them: for a real door, keep the CA key offline. Never commit the
# output (.demo/ is git-ignored; tests write to a temp dir).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  usage
  [[ $# -ge 1 ]] && exit 0
  exit 2
fi

out=$1
shift
days=${DAYS:-825}
read -r -a clients <<<"${CLIENTS:-facegate door-front door-back}"

command -v openssl >/dev/null || { echo "gen-test-certs: openssl not found (apt-get install openssl)" >&2; exit 2; }

umask 077
mkdir -p "$out"
cd "$out"

newkey() { # $1 = key file; EC P-256 keeps TLS handshakes quick on a Pi
  [[ -f $1 ]] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 0600 "$1"
}

if [[ ! -f ca.crt ]]; then
  newkey ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=facegate test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt
fi

sign() { # $1 = name, $2 = subject CN, $3 = extension text
  local name=$1 cn=$2 ext=$3
  [[ -f $name.crt ]] && return 0
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  printf '%s\n' "$ext" >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days "$days" -sha256 -extfile "$name.ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$name.ext"
}

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san+=",IP:$host"; else san+=",DNS:$host"; fi
done
sign server localhost "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"

for client in "${clients[@]}"; do
  sign "$client" "$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done

crts=(./*.crt)
chmod 0644 "${crts[@]}"
echo "gen-test-certs: ${#crts[@]} certificates in $PWD"
