# Sourced by the scripts: puts a Swift toolchain on PATH where the machine keeps one outside it.
if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="/opt/swift/usr/bin:$PATH"
fi

# Release builds link the Swift runtime and Foundation into the binary (--static-swift-stdlib): the server starts
# without loading a dozen shared libraries, and so does each condition watcher and task-namespace keeper it spawns
# (figures in the README's Benchmarks). Every release build must pass the same flags, or SwiftPM rebuilds it all.
#
# Where the toolchain has lld and glibc reads packed relocations (2.36+), they are linked with it and
# -z pack-relative-relocs: the binary stays position-independent (ASLR), but its ~110,000 relative relocations take
# 22 KB instead of 2.6 MB that every process read at start; --no-export-dynamic drops 2.5 MB of symbol tables that
# nothing looks up at run time. Together 3-4 MiB less resident per server and per watcher. Elsewhere (gold, older
# glibc) the default link is used.
#
# With lld, the code a server runs is also laid out together: every function in a section of its own
# (-function-sections) and the functions allcanuse-mock runs placed first, hottest first (scripts/release.order, made
# by scripts/symbol-order with callgrind), after the hot code that has no name of its own to order by
# (scripts/release-hot.ld). A page fault on code maps its 64 KB neighbourhood; with hot and cold code interleaved,
# that mapped 12.6 MiB of text for 1.5 MiB of functions run. Figures in the README's Benchmarks.
#
# SwiftPM does not recompile Swift modules when only -Xswiftc flags change, so a change of these flags starts the
# release build over (a stamp of them is kept beside it).
release_build() {
    local flags=(-c release --static-swift-stdlib)
    local lld glibc
    lld="$(dirname "$(command -v swift)")/ld.lld"
    glibc="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')"
    if [[ -x $lld ]] && printf '2.36\n%s\n' "${glibc:-0}" | sort -C -V; then
        mkdir -p .build
        printf '{"schemaVersion": "1.0", "linker": {"path": "%s"}}\n' "$lld" > .build/release-toolset.json
        flags+=(--toolset "$PWD/.build/release-toolset.json"
            -Xlinker -z -Xlinker pack-relative-relocs -Xlinker --no-export-dynamic)
        if [[ -s scripts/release.order ]]; then
            flags+=(-Xswiftc -Xfrontend -Xswiftc -function-sections -Xcc -ffunction-sections
                -Xlinker "--symbol-ordering-file=$PWD/scripts/release.order" -Xlinker --no-warn-symbol-ordering)
            if [[ -s scripts/release-hot.ld ]]; then
                flags+=(-Xlinker -T -Xlinker "$PWD/scripts/release-hot.ld")
            fi
        fi
    fi
    local stamp=.build/release-flags order
    if [[ -d .build/release ]] && [[ "$(cat "$stamp" 2>/dev/null)" != "${flags[*]}" ]]; then
        echo "release_build: the release flags changed; rebuilding the release build from scratch" >&2
        rm -rf .build/*-linux-gnu/release .build/release.yaml
    fi
    # SwiftPM does not see the ordering files either: new ones relink the executables.
    order=$(cat scripts/release.order scripts/release-hot.ld 2>/dev/null | cksum || true)
    if [[ "$(cat .build/release-order 2>/dev/null)" != "$order" ]]; then
        rm -f .build/release/corral .build/release/allcanuse-mock .build/release/allcanuse-watch
    fi
    mkdir -p .build
    printf '%s' "${flags[*]}" > "$stamp"
    printf '%s' "$order" > .build/release-order
    swift build "${flags[@]}" "$@"
}
