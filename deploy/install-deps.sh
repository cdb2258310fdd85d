#!/bin/sh
# Checks dmp's build dependencies; with --install, installs the missing
# ones on Debian/Ubuntu (apt-get, through sudo when not root).
#   deploy/install-deps.sh --check     name what is missing, exit 1
#   deploy/install-deps.sh --install   install what is missing
set -eu
mode=${1:---check}

# pkg-config module, or command, and the Debian package that provides it.
need="pkg-config:pkg-config protoc-c:protobuf-c-compiler libzmq:libzmq3-dev
libsodium:libsodium-dev libprotobuf-c:libprotobuf-c-dev cmocka:libcmocka-dev
python3:python3"
missing=""
for pair in $need; do
    what=${pair%%:*} pkg=${pair#*:}
    case $what in
    pkg-config|protoc-c|python3) command -v "$what" >/dev/null 2>&1 || missing="$missing $pkg" ;;
    *) command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "$what" || missing="$missing $pkg" ;;
    esac
done
# The integration tests also use these programs.
for pair in ip:iproute2 timeout:coreutils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
[ -z "$missing" ] && exit 0

if [ "$mode" != --install ]; then
    echo "dmp: missing build dependencies:$missing" >&2
    echo "dmp: install them with: apt-get install$missing (or run: make deps)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "dmp: missing:$missing; no apt-get here: install the equivalents" \
         "(libzmq, libsodium, protobuf-c with protoc-c, cmocka, pkg-config)" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "dmp: installing:$missing" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >&2
