#!/bin/sh
# deploy/keys.sh - key provisioning for a dmp cluster (installed in the
# image as dmp-keys; docker-compose.yml runs it as the one-shot service
# "keys" before any node starts).
#
#   dmp-keys [--rotate NAME]... 
#
# Lays out, under $DMP_KEYS_OUT (default /out):
#   public/client.pub           the allow-list every node mounts read-only
#   public/nodes/NODE.pub         as its keys_dir (clients here, nodes in nodes/)
#   NODE/NODE.key               NODE's secret key, 0600, owned by the agents'
#                                 user, in a volume only NODE mounts
#   client/client.key,.pub      the client's keypair, node1.pub (the key the
#   client/node1.pub              client pins) and env (`. env`), owned by
#   client/env                    the owner of the client directory, for dmp
#                                 on the host
# Existing keys are kept, so running it again (every `docker compose up`)
# changes nothing; --rotate NAME makes a new keypair for NAME (a node or
# "client") and publishes it. Nodes re-read the allow-list by themselves;
# a rotated node must be restarted, and so must its peers, which pin its
# public key when they first connect.
#
# Environment: DMP_NODES (default "node1 node2 node3"), DMP_KEYS_OUT,
# DMP_CLIENT_DIR (how the host names the client directory, for env),
# DMP_PORT (the host port of node1, for env), DMP_USER (default dmp).
set -eu

out=${DMP_KEYS_OUT:-/out}
nodes=${DMP_NODES:-node1 node2 node3}
user=${DMP_USER:-dmp}
rotate=" "
while [ $# -gt 0 ]; do
    case $1 in
    --rotate) [ $# -ge 2 ] || { echo "dmp-keys: --rotate needs a name" >&2; exit 2; }
              rotate="$rotate$2 "; shift 2 ;;
    -h|--help) sed -n '2,25s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "dmp-keys: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

uid=$(id -u "$user") gid=$(id -g "$user")
umask 022
install -d -m 0755 "$out/public" "$out/public/nodes"

# make_key NAME DIR OWNER: NAME's keypair in DIR (created or rotated), the
# secret 0600 and both files owned by OWNER (uid:gid).
make_key() {
    name=$1 dir=$2 owner=$3
    case $rotate in *" $name "*)
        if [ -f "$dir/$name.key" ]; then
            rm -f "$dir/$name.key" "$dir/$name.pub"
            echo "dmp-keys: rotating $name" >&2
        fi ;;
    esac
    if [ ! -f "$dir/$name.key" ]; then
        # Made beside the target and moved in, so no half-written key is
        # ever visible under its final name.
        tmp=$(mktemp -d "$dir/.keygen.XXXXXX")
        dmp keygen -o "$tmp" "$name" >/dev/null
        mv "$tmp/$name.pub" "$dir/$name.pub"
        mv "$tmp/$name.key" "$dir/$name.key"
        rmdir "$tmp"
        echo "dmp-keys: new keypair for $name" >&2
    fi
    chown "$owner" "$dir/$name.key" "$dir/$name.pub"
    chmod 0600 "$dir/$name.key"
    chmod 0644 "$dir/$name.pub"
}

# publish SRC DST: copies a public key in atomically.
publish() {
    cp "$1" "$2.tmp" && chmod 0644 "$2.tmp" && mv -f "$2.tmp" "$2"
}

for n in $nodes; do
    [ -d "$out/$n" ] || { echo "dmp-keys: no volume mounted at $out/$n" >&2; exit 1; }
    chown "$uid:$gid" "$out/$n"
    chmod 0700 "$out/$n"
    make_key "$n" "$out/$n" "$uid:$gid"
    publish "$out/$n/$n.pub" "$out/public/nodes/$n.pub"
done

# The client's keys go to whoever owns the client directory (the user who
# created it on the host; root if Docker created it).
c="$out/client"
install -d "$c"
cowner=$(stat -c %u:%g "$c")
chmod 0700 "$c"
make_key client "$c" "$cowner"
publish "$c/client.pub" "$out/public/client.pub"
first=${nodes%% *}
publish "$out/public/nodes/$first.pub" "$c/$first.pub"
chown "$cowner" "$c/$first.pub"

# env for the host: `. DIR/env` from the directory holding
# docker-compose.yml (or from anywhere when DMP_CLIENT_DIR is absolute).
hostdir=${DMP_CLIENT_DIR:-./.dmp}
case $hostdir in
/*) ref=$hostdir ;;
*) ref="\$PWD/${hostdir#./}" ;;
esac
cat >"$c/env.tmp" <<EOF
# dmp on the host -> this compose cluster (node1's published port)
export DMP_CLUSTER=tcp://127.0.0.1:${DMP_PORT:-7700}
export DMP_KEY="$ref/client.key"
export DMP_SERVER_KEY="$ref/$first.pub"
EOF
chown "$cowner" "$c/env.tmp"
mv -f "$c/env.tmp" "$c/env"

# Stale public keys of nodes no longer listed would stay admitted: drop them.
for f in "$out"/public/nodes/*.pub; do
    [ -e "$f" ] || continue
    n=$(basename "$f" .pub)
    case " $nodes " in *" $n "*) ;; *) rm -f "$f"; echo "dmp-keys: removed $n.pub" >&2 ;; esac
done
echo "dmp-keys: keys ready for: $nodes client" >&2
