#!/usr/bin/env bash
# Installs pcibackfsd: a release binary with the Swift standard library linked statically (it
# runs where no Swift toolchain is installed; it needs only libfuse3 and the C++ runtime), its
# man pages (generated from the command line's own definitions by swift-argument-parser's
# manual generator) and the systemd unit.
#
#   PREFIX=/usr/local  where it goes: PREFIX/bin, PREFIX/share/man/man1, PREFIX/lib/systemd/system
#   DESTDIR=           a staging root for packages; the files still name PREFIX
#
# It builds in its own scratch path (.build-install), so it never waits on the lock of a test
# build running in .build.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
destdir=${DESTDIR:-}
scratch=.build-install

scripts/setup.sh
swift package --scratch-path "$scratch" generate-manual --multi-page --date "$(git log -1 --format=%cs 2>/dev/null || date +%F)" >/dev/null
swift build -c release --static-swift-stdlib --scratch-path "$scratch"

install -d "$destdir$prefix/bin" "$destdir$prefix/share/man/man1" "$destdir$prefix/lib/systemd/system"
install -m 0755 "$scratch/release/pcibackfsd" "$destdir$prefix/bin/pcibackfsd"
for page in "$scratch"/plugins/GenerateManual/outputs/pcibackfsd/*.1; do
    case "$(basename "$page")" in
        pcibackfsd.__*|pcibackfsd.help.1) continue ;;   # hidden internals and the help command
    esac
    install -m 0644 "$page" "$destdir$prefix/share/man/man1/"
done
sed "s|/usr/local/bin/pcibackfsd|$prefix/bin/pcibackfsd|" scripts/systemd/pcibackfsd.service \
    > "$destdir$prefix/lib/systemd/system/pcibackfsd.service"
chmod 0644 "$destdir$prefix/lib/systemd/system/pcibackfsd.service"
echo "installed pcibackfsd into $destdir$prefix (man pcibackfsd, systemctl enable --now pcibackfsd)"
