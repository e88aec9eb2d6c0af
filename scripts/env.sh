# Sourced by the scripts: puts a Swift toolchain on PATH where the machine keeps one outside it.
if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi
