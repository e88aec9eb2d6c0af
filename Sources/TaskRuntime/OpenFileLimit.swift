import CCorral
import Glibc
import Logging

/// Raises the process's soft open-file limit to its hard one, once, when a supervisor starts: each task holds a
/// dozen descriptors here (its pidfd, pipes, cgroup files), so at the usual soft limit of 1024 the server runs out
/// after some tens of tasks, and libdispatch aborts a process that cannot open a file. Tasks still start with the
/// soft limit the server was given (`corral_raise_nofile_limit` keeps it for them), as Go's runtime does.
func raiseOpenFileLimit(_ logger: Logger) {
    var limit = rlimit()
    let before = corral_raise_nofile_limit()
    guard before >= 0 else {
        logger.warning("the open-file limit could not be raised: \(String(cString: strerror(errno)))")
        return
    }
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, Int64(clamping: limit.rlim_cur) != before else { return }
    logger.debug("open-file limit raised from \(before) to \(limit.rlim_cur); tasks keep \(before)")
}
