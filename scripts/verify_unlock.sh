#!/bin/sh
# A facegate unlock verifier in POSIX shell: openssl, base64, sed, awk and tr.
#
#   verify_unlock.sh --door front --key front.pub --state /run/door TOKEN
#   mosquitto_sub -t facegate/front/unlock | while read -r t; do
#       verify_unlock.sh --door front --key front.pub --state /run/door "$t" && open_door
#   done
#
# Prints "OK door=.. sub=.. seq=.. jti=.." and exits 0 for a genuine, fresh, first-seen
# unlock for this door; prints "REJECTED <reason>" and exits 1 otherwise; 2 on bad usage.
# The key file decides the algorithm: an Ed25519 public key (PEM) means EdDSA, a hex secret
# HS256. The signature is checked over the two first segments exactly as received, before
# anything in the payload is read. --state DIR keeps the last seq and the seen jti values
# (replay protection): run one verification at a time per DIR. --now EPOCH pins the clock
# (tests). HS256 limits of a shell: the secret is on openssl's command line and the MAC
# comparison is not constant-time; prefer EdDSA where the controller can.
set -eu

TYP='facegate-unlock+jwt'
MAX_SKEW_S=2
REPLAY_WINDOW=4096

reject() { echo "REJECTED $1"; exit 1; }
usage() { echo "usage: $0 --door DOOR --key FILE --state DIR [--now EPOCH] TOKEN" >&2; exit 2; }

door='' key='' state='' now=''
while [ $# -gt 1 ]; do
    case $1 in
        --door) door=$2 ;;
        --key) key=$2 ;;
        --state) state=$2 ;;
        --now) now=$2 ;;
        *) usage ;;
    esac
    shift 2
done
if [ $# -ne 1 ] || [ -z "$door" ] || [ ! -r "$key" ] || [ -z "$state" ]; then usage; fi
token=$1
if grep -q 'PRIVATE KEY' "$key"; then echo "$key: a private key; use the public key" >&2; exit 2; fi
if grep -q 'BEGIN PUBLIC KEY' "$key"; then alg=EdDSA; else alg=HS256; fi
mkdir -p "$state"

b64url_decode() {  # base64url without padding -> bytes
    s=$(printf '%s' "$1" | tr '_-' '/+')
    case $((${#s} % 4)) in 2) s="$s==" ;; 3) s="$s=" ;; 1) return 1 ;; esac
    printf '%s' "$s" | base64 -d 2>/dev/null
}

# Three base64url segments, nothing else, at most 4096 bytes.
[ ${#token} -le 4096 ] || reject too_large
case $token in *[!A-Za-z0-9_.-]* | *.*.*.* | *..* | .* | *.) reject malformed ;; esac
case $token in *.*.*) ;; *) reject malformed ;; esac
header_b64=${token%%.*}; rest=${token#*.}; payload_b64=${rest%%.*}; sig_b64=${rest#*.}

header=$(b64url_decode "$header_b64") || reject malformed
case $header in *"\"alg\":\"$alg\""*) ;; *) reject bad_header ;; esac
case $header in *"\"typ\":\"$TYP\""*) ;; *) reject bad_header ;; esac

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%s.%s' "$header_b64" "$payload_b64" > "$tmp/input"
if [ "$alg" = EdDSA ]; then
    b64url_decode "$sig_b64" > "$tmp/sig" || reject malformed
    openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/input" \
        -sigfile "$tmp/sig" >/dev/null 2>&1 || reject bad_signature
else
    mac=$(openssl dgst -sha256 -mac HMAC -macopt "hexkey:$(tr -d ' \n' < "$key")" -binary \
        < "$tmp/input" | base64 | tr '+/' '-_' | tr -d '=\n')
    [ "$mac" = "$sig_b64" ] || reject bad_signature
fi

# Signed by the daemon: compact JSON with ASCII ids, so sed can read the claims.
claims=$(b64url_decode "$payload_b64") || reject bad_json
text() { printf '%s' "$claims" | sed -n "s/.*\"$1\":\"\([^\"\\\\]*\)\".*/\1/p"; }
number() { printf '%s' "$claims" | sed -n "s/.*\"$1\":\([0-9][0-9.]*\).*/\1/p"; }
c_door=$(text door); sub=$(text sub); jti=$(text jti)
seq=$(printf '%s' "$claims" | sed -n 's/.*"seq":\([0-9][0-9]*\)[,}].*/\1/p')
iat=$(number iat); exp=$(number exp)
for value in "$c_door" "$sub" "$jti" "$seq" "$iat" "$exp"; do
    [ -n "$value" ] || reject bad_field
done

[ "$c_door" = "$door" ] || reject wrong_door
if [ -z "$now" ]; then
    now=$(date +%s.%N); case $now in *N*) now=$(date +%s) ;; esac
fi
awk -v e="$exp" -v n="$now" 'BEGIN { exit !(e > n) }' || reject expired
awk -v i="$iat" -v n="$now" -v s="$MAX_SKEW_S" 'BEGIN { exit !(i <= n + s) }' \
    || reject future_iat
touch "$state/jti"
grep -qxF "$jti" "$state/jti" && reject replayed
last=$(cat "$state/seq" 2>/dev/null || echo -1)
[ "$seq" -gt "$last" ] || reject stale_seq
printf '%s\n' "$jti" >> "$state/jti"
tail -n "$REPLAY_WINDOW" "$state/jti" > "$tmp/jti" && mv "$tmp/jti" "$state/jti"
printf '%s\n' "$seq" > "$state/seq"
echo "OK door=$c_door sub=$sub seq=$seq jti=$jti"
