#!/bin/sh
# Lints every BitBake file this project ships with oelint-adv (pinned version): the
# meta-migration layer, the generated recipes in recipes/, and a freshly generated layer
# instance (`cargo xtask yocto-layer` with the example captured config). Zero findings of
# severity warning or error are allowed; info-level suggestions (SECTION, BUGTRACKER,
# CVE_PRODUCT, BBCLASSEXTEND) are hidden.
#
# Usage: meta-migration/scripts/oelint.sh   (OELINT_ADV=/path/to/oelint-adv to pick a binary)
#
# Suppressed rules, and why:
#   everywhere
#     oelint.vars.homepageping        fetches HOMEPAGE over the network; CI is offline.
#   the layer (bbappend and its includes)
#     oelint.vars.noncoreoverride     it wants every bbappend setting tied to a MACHINE or
#                                     DISTRO override; this layer is gated by MIGRATION_STAGE
#                                     instead (nothing changes while it is unset, which is what
#                                     yocto-check-layer's signature test checks).
#     oelint.task.noanonpython        the anonymous functions validate MIGRATION_* and the
#                                     device type at parse time, to fail early and clearly.
#     oelint.file.includenotfound     `include mender-migration-baked.inc` is optional on
#     oelint.file.requireinclude      purpose: only generated layer instances have that file.
#   generated recipes (cargo-bitbake's layout, kept as is)
#     oelint.var.mandatoryvar.DESCRIPTION  the layout has none; BitBake defaults it to SUMMARY.
#     oelint.vars.inconspaces         `PV:append = ".AUTOINC+..."` must not start with a space,
#                                     and `SRC_URI += " \` opens the crate list.
#     oelint.var.order.*              the layout's fixed order (PV after S, SRC_URI before
#                                     LIC_FILES_CHKSUM before SUMMARY).
#     oelint.vars.summary80chars      SUMMARY is Cargo.toml's description verbatim.
#     oelint.file.includenotfound     the trailing `include NAME-${PV}.inc` / `include NAME.inc`
#     oelint.file.requireinclude      are optional local hooks of the layout.
set -eu

PINNED=9.11.2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
oelint=${OELINT_ADV:-oelint-adv}

found=$("$oelint" --version 2>/dev/null || true)
if [ "$found" != "oelint-adv $PINNED" ]; then
    echo "error: oelint-adv $PINNED is needed (found: ${found:-none}); install it with: pip install oelint-adv==$PINNED" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

# A layer instance as users get it.
(cd "$root" && cargo run -q -p xtask -- yocto-layer \
    --config examples/captured/etc/mender/mender.conf \
    --new-server https://new.eu.mender.example.com \
    --device-type qemux86-64 --out "$work" --name instance >/dev/null)

# oelint cannot follow the bbappend's computed `require`, so lint one copy of the bbappend per
# stage with that require spelled out (the includes next to it, as in the layer).
harness() { # layer-dir name
    for stage in dual new-only invalid-stage; do
        dir="$work/harness/$2-$stage"
        mkdir -p "$dir"
        cp "$1"/recipes-mender/mender-client/*.inc "$dir"/
        sed "s|^require \${@.*|require mender-migration-$stage.inc|" \
            "$1/recipes-mender/mender-client/mender_%.bbappend" >"$dir/mender_%.bbappend"
        grep -q "^require mender-migration-$stage.inc\$" "$dir/mender_%.bbappend" || {
            echo "error: $1: the bbappend's require line has changed; update $0" >&2
            exit 2
        }
    done
}
harness "$root/meta-migration" static
harness "$work/instance" instance

common="--quiet --hide info --constantmods=+$here/oelint-constantmods.json --suppress oelint.vars.homepageping"
layer_rules="--suppress oelint.vars.noncoreoverride --suppress oelint.task.noanonpython --suppress oelint.file.includenotfound --suppress oelint.file.requireinclude"
recipe_rules="--suppress oelint.var.mandatoryvar.DESCRIPTION --suppress oelint.vars.inconspaces --suppress oelint.var.order.PV --suppress oelint.var.order.LIC_FILES_CHKSUM --suppress oelint.var.order.SUMMARY --suppress oelint.vars.summary80chars --suppress oelint.file.includenotfound --suppress oelint.file.requireinclude"

status=0
run() { # release rules files...
    release=$1 rules=$2
    shift 2
    echo "oelint-adv --release $release: $*" | sed "s|$work|<generated>|g; s|$root/||g"
    # shellcheck disable=SC2086
    "$oelint" $common $rules --release "$release" "$@" || status=1
}

for release in scarthgap wrynose; do
    run "$release" "$layer_rules" \
        "$root/meta-migration/conf/layer.conf" "$work/instance/conf/layer.conf" \
        "$work"/harness/*/"mender_%.bbappend"
    run "$release" "$layer_rules $recipe_rules" \
        "$root"/meta-migration/recipes-mender/server-migration/*.bb \
        "$work"/instance/recipes-mender/server-migration/*.bb
    run "$release" "$recipe_rules" "$root"/recipes/wrynose/*.bb
done
run scarthgap "$recipe_rules" "$root"/recipes/scarthgap/*.bb

if [ "$status" -ne 0 ]; then
    echo "oelint: findings above" >&2
else
    echo "oelint: clean"
fi
exit "$status"
