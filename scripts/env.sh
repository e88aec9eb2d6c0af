# Sourced by the scripts: puts a Swift toolchain on PATH where the machine keeps one outside it.
if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

# Release builds link the Swift runtime and Foundation into the binary (--static-swift-stdlib): the server starts
# without loading a dozen shared libraries, and so does each condition watcher and task-namespace keeper it spawns
# (figures in the README's Benchmarks). Every release build must pass the same flags, or SwiftPM rebuilds it all.
release_build() {
    swift build -c release --static-swift-stdlib "$@"
}
