#!/bin/bash
# Checks meta-migration with real BitBake, offline (no compiling): parse, appends, the mender.conf
# each stage produces through meta-mender's own do_prepare_mender_conf, for this layer and for a
# generated instance, and fetch + unpack of the generated recipes from a local clone and a
# directory of .crate files. Measured to pass on poky scarthgap and on oe-core wrynose +
# bitbake 2.18, each with meta-mender-core of the same branch.
#
# Usage (as a non-root user, en_US.UTF-8 locale available, HOSTTOOLS chrpath cpio diffstat gawk):
#   bitbake-verify.sh scarthgap|wrynose TOP CRATE_DIR
# TOP holds poky/ (scarthgap) or openembedded-core/ + bitbake/ (wrynose), and meta-mender/.
# CRATE_DIR holds NAME-VERSION.crate files (e.g. ~/.cargo/registry/cache/*/ after `cargo fetch`).
# MIGRATION_INSTANCE=DIR: use a layer instance generated beforehand (`cargo xtask yocto-layer`
# with the arguments below) when this user has no cargo.
# MIGRATION_TOOL_DIR=DIR: a directory with a host build of migration-stage-config (the stage
# postfunc runs it; default: built here with cargo from crates/device).
set -euo pipefail
release=$1 top=$(cd "$2" && pwd) crates=$(cd "$3" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export LANG=en_US.UTF-8 LC_ALL=en_US.UTF-8

work=$top/migration-verify
rm -rf "$work" && mkdir -p "$work"
# The layer as checked in, and an instance with the example's configs baked in.
cp -r "$repo/meta-migration" "$work/meta-migration" && rm -rf "$work/meta-migration/scripts"
if [ -n "${MIGRATION_INSTANCE:-}" ]; then
    cp -r "$MIGRATION_INSTANCE" "$work/instance"
else
    (cd "$repo" && cargo run -q -p xtask -- yocto-layer --config examples/captured/etc/mender/mender.conf \
        --new-server https://new.eu.mender.example.com --device-type qemux86-64 --out "$work" --name instance >/dev/null)
fi
if [ -z "${MIGRATION_TOOL_DIR:-}" ]; then
    cargo build -q --manifest-path "$repo/crates/device/Cargo.toml" -p migration-stage-config --target-dir "$work/tool"
    MIGRATION_TOOL_DIR=$work/tool/debug
fi
export MIGRATION_TOOL_DIR
# Test copies of the generated recipes that fetch the project from a local clone.
git -c safe.directory='*' clone -q --bare --upload-pack="git -c safe.directory='*' upload-pack" "$repo" "$work/src.git"
mkdir -p "$work/meta-unpacktest/conf" "$work/meta-unpacktest/recipes-test/sm"
cat >"$work/meta-unpacktest/conf/layer.conf" <<'CONF'
BBPATH .= ":${LAYERDIR}"
BBFILES += "${LAYERDIR}/recipes-*/*/*.bb"
BBFILE_COLLECTIONS += "unpacktest"
BBFILE_PATTERN_unpacktest = "^${LAYERDIR}/"
BBFILE_PRIORITY_unpacktest = "1"
LAYERSERIES_COMPAT_unpacktest = "scarthgap wrynose"
CONF
variants=wrynose
[ "$release" = scarthgap ] && variants="scarthgap wrynose"
for v in $variants; do
    sed "s|git://[^;]*;protocol=https|git://$work/src.git;protocol=file|" \
        "$repo/recipes/$v/server-migration_"*.bb >"$work/meta-unpacktest/recipes-test/sm/sm-${v}_0.1.0.bb"
done

set +u # the init scripts use unset variables
if [ "$release" = scarthgap ]; then
    . "$top/poky/oe-init-build-env" "$work/build" >/dev/null
    bblib=$top/poky/bitbake/lib mirror="https://crates.io/.* file://$crates/ "
else
    . "$top/openembedded-core/oe-init-build-env" "$work/build" >/dev/null
    bblib=$top/bitbake/lib mirror="https://static.crates.io/.* file://$crates/ "
fi
set -u
{ echo 'BB_NO_NETWORK = "1"'; echo "PREMIRRORS:prepend = \"$mirror\""; } >>conf/local.conf
bitbake-layers add-layer "$top/meta-mender/meta-mender-core" "$work/meta-migration" "$work/meta-unpacktest"

fail() { echo "FAIL: $*" >&2; exit 1; }
echo "== bitbake -p"
bitbake -p 2>&1 | tee "$work/parse.log" | tail -1
grep -q " 0 errors" "$work/parse.log" || fail "parse errors"
echo "== show-appends mender"
appends=$(bitbake-layers show-appends mender)
grep -q "meta-migration/recipes-mender/mender-client/mender_%.bbappend" <<<"$appends" || fail "bbappend not applied"
echo "ok: $(grep -c 'meta-migration/recipes-mender/mender-client/mender_%.bbappend' <<<"$appends") mender recipes get the bbappend"

conf() { BBLIB=$bblib python3 "$here/prep-mender-conf.py" "$@" | sed -n 's/^transient_mender.conf //p'; }
check() { # name json python-condition
    python3 -c "import json,sys; c=json.loads(sys.argv[1]); sys.exit(0 if ($3) else 1)" "$2" || fail "$1: $2"
    echo "ok: $1"
}
old=https://old.example.com new=https://new.example.com
check "layer inactive" "$(conf)" "c.get('ServerURL') == 'https://docker.mender.io' and 'Servers' not in c"
check "stage dual" "$(conf MIGRATION_STAGE=dual MIGRATION_OLD_SERVER=$old MIGRATION_NEW_SERVER=$new)" \
    "c['Servers'] == [{'ServerURL': '$old'}, {'ServerURL': '$new'}] and not [k for k in c if k.lower() == 'serverurl']"
check "stage new-only" "$(conf MIGRATION_STAGE=new-only MIGRATION_NEW_SERVER=$new)" \
    "c.get('ServerURL') == '$new' and not [k for k in c if k.lower() == 'servers']"
bad=$(BBLIB=$bblib python3 "$here/prep-mender-conf.py" MIGRATION_STAGE=bogus 2>&1 || true)
grep -q "is not a migration stage" <<<"$bad" || fail "bad stage accepted"
echo "ok: bad stage refused"

# Swap in the baked instance (same collection name) and repeat.
bitbake-layers remove-layer "$work/meta-migration" >/dev/null
bitbake-layers add-layer "$work/instance" >/dev/null
check "baked dual" "$(conf MIGRATION_STAGE=dual)" \
    "c['Servers'][1] == {'ServerURL': 'https://new.eu.mender.example.com'} and not [k for k in c if k.lower() == 'serverurl'] and c['TenantToken'] != 'dummy'"
check "baked new-only" "$(conf MIGRATION_STAGE=new-only)" \
    "c.get('ServerURL') == 'https://new.eu.mender.example.com' and 'Servers' not in c"

echo "== fetch + unpack of the generated recipes"
for v in $variants; do
    bitbake "sm-$v" -c unpack >/dev/null || fail "unpack sm-$v"
    s=$(bitbake -e "sm-$v" | sed -n 's/^S="\(.*\)"/\1/p')
    [ -f "$s/Cargo.lock" ] || fail "sm-$v: S=$s holds no checkout"
    vendored=$(bitbake -e "sm-$v" | sed -n 's/^CARGO_VENDORING_DIRECTORY="\(.*\)"/\1/p')
    # Whole-file entries: the project's (relative to S) and each crate's (vendored directory).
    for lic in $(sed -n 's|^ *file://\([^;]*\);md5=\([0-9a-f]*\).*|\1=\2|p' "$work/meta-unpacktest/recipes-test/sm/sm-${v}_0.1.0.bb"); do
        f=${lic%%=*} f=${f/\$\{CARGO_VENDORING_DIRECTORY\}/$vendored}
        case $f in /*) ;; *) f=$s/$f ;; esac
        [ "$(md5sum <"$f" | cut -d' ' -f1)" = "${lic#*=}" ] || fail "sm-$v: md5 of $f"
    done
    echo "ok: sm-$v fetched, unpacked at S, license md5s match"
done
echo "bitbake-verify ($release): all checks passed"
