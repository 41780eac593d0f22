#!/usr/bin/env bash
# Check that vendor/sqlx-core is exactly the published sqlx-core 0.9.0 crate
# plus vendor/sqlx-core.patch (see vendor/README.md).
#
# Uses the crate from $CARGO_HOME/registry/cache if present, else downloads
# it from crates.io; either way its sha256 must match CRATE_SHA256.
set -euo pipefail

CRATE=sqlx-core
VERSION=0.9.0
CRATE_SHA256=05b44e85bf579a8eeb4ceaa77a3a523baf2bf0e9bac7e40f405d537b5d2d5ccb
URL="https://static.crates.io/crates/$CRATE/$CRATE-$VERSION.crate"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendored="$root/vendor/$CRATE"
patchfile="$root/vendor/$CRATE.patch"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

crate_file=""
for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$CRATE-$VERSION.crate"; do
    if [[ -f "$f" ]]; then
        crate_file="$f"
        break
    fi
done
if [[ -z "$crate_file" ]]; then
    crate_file="$tmp/$CRATE-$VERSION.crate"
    curl -sSfL "$URL" -o "$crate_file"
fi

actual="$(sha256 "$crate_file")"
if [[ "$actual" != "$CRATE_SHA256" ]]; then
    echo "check-vendor: $crate_file: sha256 $actual, expected $CRATE_SHA256" >&2
    exit 1
fi

tar -xzf "$crate_file" -C "$tmp"
release="$tmp/$CRATE-$VERSION"

# Packaging files: the published crate has two files that `cargo package`
# generates and the vendored copy does not carry; the vendored copy has the
# marker cargo writes when it unpacks a crate into its registry sources.
rm -f "$release/.cargo_vcs_info.json" "$release/Cargo.toml.orig"
printf '{"v":1}' >"$release/.cargo-ok"

if ! patch -p1 -s -F0 --no-backup-if-mismatch -d "$release" <"$patchfile"; then
    echo "check-vendor: vendor/$CRATE.patch does not apply to $CRATE $VERSION" >&2
    exit 1
fi

status=0
diff -r "$release" "$vendored" || status=1

# diff -r ignores file modes; compare the executable bits as well.
exec_bits() { (cd "$1" && find . -type f -perm -u+x | LC_ALL=C sort); }
if ! diff <(exec_bits "$release") <(exec_bits "$vendored") >"$tmp/modes"; then
    echo "executable bits differ (< release+patch, > vendor):"
    cat "$tmp/modes"
    status=1
fi

if [[ $status -ne 0 ]]; then
    echo "check-vendor: vendor/$CRATE differs from $CRATE $VERSION + vendor/$CRATE.patch" >&2
    exit 1
fi
echo "check-vendor: OK: vendor/$CRATE is $CRATE $VERSION (sha256 $CRATE_SHA256) + vendor/$CRATE.patch"
