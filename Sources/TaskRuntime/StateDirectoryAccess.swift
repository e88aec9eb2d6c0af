import Glibc
import Sandbox

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

    /// Where tasks' own directories (working and temp) go: beneath the state directory when the task user can reach
    /// it, else (a state directory inside a private home, say) `/var/lib/corral/tasks/NAME` — only a root server
    /// changes the task user, and only root can make names there (unlike /tmp). Made here and checked to be ours, a
    /// real directory and 0711.
    static func taskRoot(stateDirectory: String, identity: TaskIdentity, name: String) throws(RuntimeError) -> String {
        let inside = stateDirectory + "/tasks"
        guard identity.changesUser, identity.searchRefusal(inside) != nil else { return inside }
        let root = "/var/lib/corral/tasks/" + name
        for path in ["/var/lib/corral", "/var/lib/corral/tasks", root] {
            if mkdir(path, 0o711) == 0 {
                chmod(path, 0o711)  // whatever the umask
            } else if errno != EEXIST {
                throw RuntimeError.system("mkdir \(path)", errno)
            }
        }
        var info = stat()
        guard lstat(root, &info) == 0 else { throw RuntimeError.system("lstat \(root)", errno) }
        guard info.st_mode & S_IFMT == S_IFDIR, info.st_uid == geteuid(), info.st_mode & 0o7777 == 0o711 else {
            throw RuntimeError.storage(
                "\(root) is not a directory of this server's with mode 0711 (someone else made it?); remove it, or "
                    + "use a --state-dir the task user \(identity.description) can reach")
        }
        return root
    }

    /// Creates an empty file readable by its owner only, before SQLite opens it: SQLite gives its -wal and -shm files
    /// the database's mode.
    static func createPrivateFile(_ path: String) throws(RuntimeError) {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw RuntimeError.system("open \(path)", errno) }
        close(fd)
    }
}
