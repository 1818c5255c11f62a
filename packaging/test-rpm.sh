#!/usr/bin/env bash
# Builds the rpm and inspects it with rpm's own tools (Debian's `rpm` package): its files,
# that the config and /etc/default/gapless are %config(noreplace) conffiles, its scriptlets
# (user created before files, unit enabled, WAL kept on removal), and a stripped binary.
# Does not install it (CI runs Debian). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v rpm >/dev/null || ! command -v cpio >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rpm cpio
    else
        echo "test-rpm.sh needs rpm and cpio (apt-get install rpm cpio)" >&2; exit 1
    fi
fi
rpmfile=$(bash packaging/build-rpm.sh | tail -n 1)
echo "== built $rpmfile"
rpm -qpi "$rpmfile" | tee /tmp/gapless-rpm-info
grep -q '^Name *: gapless' /tmp/gapless-rpm-info
rpm -qpl "$rpmfile" | tee /tmp/gapless-rpm-files
for f in /usr/bin/gapless /etc/gapless/gapless.toml /etc/default/gapless \
         /usr/lib/systemd/system/gapless.service /usr/share/man/man1/gapless.1 \
         /usr/share/bash-completion/completions/gapless /usr/share/zsh/site-functions/_gapless \
         /usr/share/fish/vendor_completions.d/gapless.fish; do
    grep -qx "$f" /tmp/gapless-rpm-files || { echo "missing $f in the rpm" >&2; exit 1; }
done
rpm -qpc "$rpmfile" | tee /tmp/gapless-rpm-config
grep -qx /etc/gapless/gapless.toml /tmp/gapless-rpm-config
grep -qx /etc/default/gapless /tmp/gapless-rpm-config
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpmfile" | grep '^/etc/gapless/gapless.toml ' | grep -q n \
    || { echo "gapless.toml is not %config(noreplace)" >&2; exit 1; }
rpm -qp --scripts "$rpmfile" | tee /tmp/gapless-rpm-scripts
grep -q 'preinstall scriptlet' /tmp/gapless-rpm-scripts
grep -q 'useradd --system' /tmp/gapless-rpm-scripts
grep -q 'systemctl enable gapless.service' /tmp/gapless-rpm-scripts
grep -q 'disable --now gapless.service' /tmp/gapless-rpm-scripts
if grep -q 'rm -rf /var/lib/gapless' /tmp/gapless-rpm-scripts; then
    echo "the rpm must keep /var/lib/gapless (the WAL) on removal" >&2; exit 1
fi
# rpm2cpio (4.18) may exit 1 on a zstd payload it wrote out whole: cpio checks the result.
rpm2cpio "$rpmfile" > /tmp/gapless-rpm.cpio || true
unpacked=$(mktemp -d)
(cd "$unpacked" && cpio -id --quiet ./usr/bin/gapless < /tmp/gapless-rpm.cpio)
[ -x "$unpacked/usr/bin/gapless" ] || { echo "usr/bin/gapless could not be unpacked from the rpm" >&2; exit 1; }
if readelf -S -W "$unpacked/usr/bin/gapless" | grep -qE '\.debug_(info|line|str|abbrev) '; then
    echo "the rpm's binary is not stripped" >&2; exit 1
fi
rm -rf "$unpacked" /tmp/gapless-rpm.cpio
echo "== rpm OK"
