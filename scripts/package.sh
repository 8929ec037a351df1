#!/usr/bin/env bash
# Build the addond packages: a .deb (cargo-deb) and an .rpm (cargo-generate-rpm), from the
# metadata in Cargo.toml. One command:
#
#     scripts/package.sh                 # release build → target/dist/addond_*.deb and addond-*.rpm
#     scripts/package.sh --lint          # … and check them with lintian and rpmlint (no errors allowed)
#
# Options:
#   --profile release|debug   which cargo build to package (default release; the tests use debug)
#   --no-build                package binaries that are already built for that profile
#   --deb | --rpm             build only one of the two
#   --out DIR                 where the packages go (default target/dist)
#   --lint                    run lintian and rpmlint (they, and rpm which rpmlint runs, are installed when missing)
#   --ensure-tools            only install what building and linting need (below), then exit
#   ADDOND_RPM_SIGNING_KEY    a PGP private key file: the .rpm is signed with it
#
# Works from nothing on Debian/Ubuntu: installs what is missing, idempotently (a no-op when it
# is all there): cargo-deb and cargo-generate-rpm with `cargo install --locked` (pinned
# versions); with apt-get: pkg-config, libsystemd-dev and binutils (strip) to build, and for
# --lint lintian, rpmlint and rpm (rpmlint runs `rpm -K`; Debian only recommends rpm).
# Needs cargo and a Docker engine (scripts/ensure-docker.sh installs one): the packages ship
# the sample addon image addond-sample:latest as /usr/share/addond/addond-sample.tar.gz (what
# the templates run; built with scripts/build-sample-image.sh when Docker lacks it).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

profile=release
build=1
want_deb=1
want_rpm=1
lint=0
out="$repo/target/dist"
ensure_only=0

say() { echo "package: $*" >&2; }
die() { say "error: $*"; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --no-build) build=0; shift ;;
        --deb) want_rpm=0; shift ;;
        --rpm) want_deb=0; shift ;;
        --out) out="${2:?--out needs a directory}"; shift 2 ;;
        --lint) lint=1; shift ;;
        --ensure-tools) ensure_only=1; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

case "$profile" in
    release) cargo_profile=release; profile_dir=release ;;
    debug|dev) cargo_profile=dev; profile_dir=debug ;;
    *) die "--profile must be release or debug" ;;
esac

as_root() { if [[ $EUID -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

ensure_cargo_tool() { # subcommand crate version
    local sub="$1" crate="$2" version="$3"
    if cargo "$sub" --version 2>/dev/null | grep -q "$version"; then
        return
    fi
    say "installing $crate $version (cargo install --locked)"
    cargo install --locked --quiet "$crate" --version "$version"
}

apt_install() { # package…
    command -v apt-get >/dev/null || die "apt-get not found; install these by hand: $*"
    say "installing $* (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
        || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; }
}

ensure_apt() { # command package
    command -v "$1" >/dev/null && return
    apt_install "$2"
}

# What `cargo build` of addond needs besides cargo (libsystemd through pkg-config) and strip.
ensure_build_tools() {
    ensure_apt pkg-config pkg-config
    ensure_apt strip binutils
    pkg-config --exists libsystemd 2>/dev/null || apt_install libsystemd-dev
}

# What --lint runs: lintian for the .deb; rpmlint for the .rpm, which itself runs `rpm -K`
# and rpm2cpio (rpm is only a recommendation of Debian's rpmlint). rpm also serves the
# package tests' `rpm -qlp`.
ensure_lint_tools() {
    if [[ $want_deb -eq 1 ]]; then ensure_apt lintian lintian; fi
    if [[ $want_rpm -eq 1 ]]; then
        ensure_apt rpmlint rpmlint
        ensure_apt rpm rpm
        ensure_apt rpm2cpio rpm2cpio
    fi
}

ensure_build_tools
if [[ $want_deb -eq 1 ]]; then ensure_cargo_tool deb cargo-deb "$CARGO_DEB_VERSION"; fi
if [[ $want_rpm -eq 1 ]]; then ensure_cargo_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"; fi
if [[ $ensure_only -eq 1 || $lint -eq 1 ]]; then ensure_lint_tools; fi
if [[ $ensure_only -eq 1 ]]; then exit 0; fi

# 1. Build (addond and addonctl, and the dashboard when its crate is in the tree).
bins=(addond addonctl)
packages=(-p addond)
if [[ -f tui/Cargo.toml ]]; then
    bins+=(addond-tui)
    packages+=(-p addond-tui)
fi
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
if [[ $build -eq 1 ]]; then
    say "cargo build --profile $cargo_profile ${packages[*]}"
    cargo build --quiet --profile "$cargo_profile" "${packages[@]}" --bins
fi

# 2. Stage stripped copies where the metadata's `target/release/` will point.
dist="$repo/target/dist"
rm -rf "$dist/release" "$dist/extra"
mkdir -p "$dist/release" "$dist/extra/man/man1" "$dist/extra/man/man5" "$dist/extra/man/man8" \
    "$dist/extra/completions/bash" "$dist/extra/completions/zsh" "$dist/extra/completions/fish" "$out"
for b in "${bins[@]}"; do
    src="$target_dir/$profile_dir/$b"
    [[ -x "$src" ]] || die "$src is missing: build it first (or drop --no-build)"
    cp "$src" "$dist/release/$b"
    strip --strip-unneeded "$dist/release/$b"
done

# 3. Man pages, completions and the OpenAPI document, generated by the binaries themselves.
"$dist/release/addond" generate-man "$dist/extra/man/man8" --man5 "$dist/extra/man/man5" >/dev/null
"$dist/release/addonctl" generate-man "$dist/extra/man/man1" >/dev/null
# The OpenAPI document, as the packaged daemon serves it at GET /openapi.json.
"$dist/release/addond" openapi >"$dist/extra/openapi.json"
for b in "${bins[@]}"; do
    "$dist/release/$b" completions bash >"$dist/extra/completions/bash/$b" 2>/dev/null || rm -f "$dist/extra/completions/bash/$b"
    "$dist/release/$b" completions zsh >"$dist/extra/completions/zsh/_$b" 2>/dev/null || rm -f "$dist/extra/completions/zsh/_$b"
    "$dist/release/$b" completions fish >"$dist/extra/completions/fish/$b.fish" 2>/dev/null || rm -f "$dist/extra/completions/fish/$b.fish"
done
if [[ " ${bins[*]} " == *" addond-tui "* ]] && ! "$dist/release/addond-tui" generate-man "$dist/extra/man/man1" >/dev/null 2>&1; then
    # No generator in the dashboard: a page made from its --help, so the binary has one.
    help="$("$dist/release/addond-tui" --help)"
    {
        echo '.TH ADDOND-TUI 1 "" "addond '"$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"'" "addond manual"'
        echo '.SH NAME'
        echo 'addond-tui \- live terminal dashboard for addond'
        echo '.SH DESCRIPTION'
        echo '.nf'
        printf '%s\n' "$help" | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\\&'/"
        echo '.fi'
        echo '.SH SEE ALSO'
        echo 'addonctl(1), addond(8)'
    } >"$dist/extra/man/man1/addond-tui.1"
fi
find "$dist/extra/man" -type f -name '*.[158]' -exec gzip -9nf {} +

# 3b. The sample addon image as a `docker load` archive: what the templates run on a packaged
# install (addond loads it when Docker lacks templates.image; the postinst when Docker is up).
sample_image=addond-sample:latest
command -v docker >/dev/null || die "docker not found: the packages ship the sample image (scripts/ensure-docker.sh installs Docker)"
if ! docker image inspect "$sample_image" >/dev/null 2>&1; then
    say "building the sample image $sample_image (scripts/build-sample-image.sh)"
    bash "$repo/scripts/build-sample-image.sh" >/dev/null
fi
docker save "$sample_image" | gzip -9n >"$dist/extra/addond-sample.tar.gz"

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
made=()

# 4. The packages.
if [[ $want_deb -eq 1 ]]; then
    say "cargo deb"
    fast=()
    [[ $profile_dir != release ]] && fast=(--fast)
    deb="$(CARGO_TARGET_DIR="$dist" cargo deb --no-build --no-strip -p addond --output "$out" "${fast[@]}" 2>&1 | tail -n1)"
    [[ -f "$deb" ]] || die "cargo deb did not produce a package: $deb"
    made+=("$deb")
fi
if [[ $want_rpm -eq 1 ]]; then
    say "cargo generate-rpm"
    sign=()
    [[ -n "${ADDOND_RPM_SIGNING_KEY:-}" ]] && sign=(--signing-key "$ADDOND_RPM_SIGNING_KEY")
    CARGO_TARGET_DIR="$dist" cargo generate-rpm -p . --target-dir "$dist" --output "$out/" "${sign[@]}" >/dev/null
    rpm_file="$(ls -t "$out"/addond-"$version"-*.rpm | head -n1)"
    [[ -f "$rpm_file" ]] || die "cargo generate-rpm did not produce a package"
    made+=("$rpm_file")
fi

# 5. Lint: no errors allowed (warnings are printed).
if [[ $lint -eq 1 ]]; then
    status=0
    for p in "${made[@]}"; do
        case "$p" in
            *.deb)
                say "lintian $p"
                lintian --fail-on error "$p" || status=1
                ;;
            *.rpm)
                say "rpmlint $p"
                rpmlint --config "$repo/packaging/rpmlint.toml" "$p" || status=1
                ;;
        esac
    done
    [[ $status -eq 0 ]] || die "lint found errors"
fi

printf '%s\n' "${made[@]}"
