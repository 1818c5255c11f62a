#!/usr/bin/env bash
# Builds target/generate-rpm/gapless-<version>-1.x86_64.rpm: the release binary, stripped
# (as in the .deb), with the files, unit, user and conffiles of agent/Cargo.toml's
# [package.metadata.generate-rpm]. Needs cargo-generate-rpm (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-generate-rpm >/dev/null || cargo install cargo-generate-rpm --locked --quiet
# The same build as packaging/test-deb.sh (with the bench receiver): the same features, so
# one build serves both packages.
cargo build --release --quiet -p gapless --bin gapless --example count_receiver
mkdir -p target/rpm-staging
objcopy --strip-debug target/release/gapless target/rpm-staging/gapless
cargo generate-rpm -p agent
ls -t target/generate-rpm/gapless-*.rpm | head -n 1
