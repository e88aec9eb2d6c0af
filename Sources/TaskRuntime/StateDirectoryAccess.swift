import Glibc

/// The state directory holds every task's arguments, events and output: tasks (which run as another user, or as
/// the same user without capabilities) may pass through it to their own directories but read nothing else of it.
enum StateDirectoryAccess {
    /// The directory and `tasks/` become traversable but not listable (0711); the database, its journals and the
    /// lock are the server's alone (0600).
    static func closeToTasks(_ directory: String) throws(RuntimeError) {
        for path in [directory, directory + "/tasks"] where chmod(path, 0o711) != 0 {
            throw RuntimeError.system("chmod \(path)", errno)
        }
        for name in ["tasks.sqlite", "tasks.sqlite-wal", "tasks.sqlite-shm", "supervisor.lock"] {
            let path = directory + "/" + name
            if chmod(path, 0o600) != 0 && errno != ENOENT { throw RuntimeError.system("chmod \(path)", errno) }
        }
    }

    /// Creates an empty file readable by its owner only, before SQLite opens it: SQLite gives its -wal and -shm files
    /// the database's mode.
    static func createPrivateFile(_ path: String) throws(RuntimeError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError.system("open \(path)", errno) }
        close(fd)
    }
}
