import Foundation
import Glibc
import Sandbox

/// What a task needs before its spawn that does not depend on what it runs: its id, its directories and, where tasks
/// get cgroups, its cgroup (still without limits); a spare also has its empty output files and, when the previous
/// create had a sandbox profile, a sandbox prepared for it. The supervisor makes one ahead, while nothing waits, for
/// the next create: after an idle spell the three ext4 mkdirs and the cgroup's mkdir were half a millisecond of a
/// create's answer.
struct ProvisionedTask: Sendable {
    let taskID: String
    let taskDirectory: String
    let homeDirectory: String
    /// Made with a spare (nil if that failed, or not a spare: the create makes it and reports a failure).
    let cgroup: TaskCgroup?
    /// Made with a spare for the profile the previous create asked for, in this place's own directories (nil if
    /// there was none, or its preparation failed: the create prepares its own and reports the failure).
    let sandbox: ReadySandbox?

    /// A sandbox prepared ahead (the Landlock ruleset's opens, checks and rules were a quarter of a millisecond of a
    /// create after an idle spell), and the profile it was prepared for.
    struct ReadySandbox: Sendable {
        let profile: SandboxProfile
        let prepared: PreparedSandbox

        /// Whether a task asking for `profile` in this place's own directories (no cwd of its own) can have it: a
        /// ruleset binds the files its paths named when it was made (this place's directories among them), so the
        /// paths must still name them.
        func fits(_ profile: SandboxProfile, workingDirectory: String?) -> Bool {
            self.profile == profile && workingDirectory == nil && prepared.stillBindsTheSameFiles()
        }
    }

    var temporaryDirectory: String { Self.temporaryDirectory(in: homeDirectory) }
    var defaultWorkDirectory: String { Self.workDirectory(in: homeDirectory) }
    static func temporaryDirectory(in home: String) -> String { home + "/tmp" }
    static func workDirectory(in home: String) -> String { home + "/work" }

    /// Where a supervisor puts its tasks.
    struct Layout: Sendable {
        let stateDirectory: String
        /// Where the task user's directories go (see `StateDirectoryAccess.taskRoot`).
        let taskRoot: String
        let identity: TaskIdentity
        let cgroups: CgroupHierarchy?

        func taskDirectory(_ taskID: String) -> String { stateDirectory + "/tasks/" + taskID }

        /// The task's own directory when the task user can reach the state directory, else one beside it.
        func homeDirectory(_ taskID: String) -> String {
            taskRoot == stateDirectory + "/tasks" ? taskDirectory(taskID) : taskRoot + "/" + taskID
        }

        /// Names the spare being made, before any of it exists: the next start removes what a crash left of it
        /// unless a task record claims it.
        var spareMarker: String { stateDirectory + "/spare-task" }

        /// Removes a task's directories (its output with them).
        func removeDirectories(of taskID: String) {
            try? FileManager.default.removeItem(atPath: taskDirectory(taskID))
            if homeDirectory(taskID) != taskDirectory(taskID) {
                try? FileManager.default.removeItem(atPath: homeDirectory(taskID))
            }
        }
    }

    /// Makes a new task's directories, and for a spare its cgroup too, after naming it in the layout's marker (see
    /// `Layout.spareMarker`), and its sandbox for `expectedProfile`.
    static func make(
        _ layout: Layout, spare: Bool, expectedProfile: SandboxProfile? = nil
    ) throws(RuntimeError) -> ProvisionedTask {
        let taskID = Identifiers.make()
        if spare {
            guard writeMarker(layout.spareMarker, taskID: taskID) else {
                throw RuntimeError.system("write \(layout.spareMarker)", errno)
            }
        }
        let taskDirectory = layout.taskDirectory(taskID)
        let homeDirectory = layout.homeDirectory(taskID)
        do throws(RuntimeError) {
            // Plain mkdir(2): the parents exist, and FileManager's walk costs a tenth of a spawn. Closed (0700, the
            // server's) until a create takes them (`openToTask`): a spare waits, and a task of the same user must not
            // reach its successor's home, temp or work directory to plant files in it.
            for path in Set([taskDirectory, homeDirectory]).sorted() {
                guard mkdir(path, 0o700) == 0 else { throw RuntimeError.system("mkdir \(path)", errno) }
            }
            for path in [temporaryDirectory(in: homeDirectory), workDirectory(in: homeDirectory)] {
                guard mkdir(path, 0o700) == 0 else { throw RuntimeError.system("mkdir \(path)", errno) }
                if layout.identity.changesUser && chown(path, layout.identity.uid, layout.identity.gid) != 0 {
                    throw RuntimeError.system("chown \(path)", errno)
                }
            }
            if spare { try OutputLayout.createEmptyHeads(in: taskDirectory) }
        } catch {
            layout.removeDirectories(of: taskID)
            throw error
        }
        var sandbox: ReadySandbox?
        if spare, let expectedProfile,
            let prepared = try? SandboxPreparation.prepare(
                expectedProfile, workingDirectory: workDirectory(in: homeDirectory),
                temporaryDirectory: temporaryDirectory(in: homeDirectory))
        {
            sandbox = ReadySandbox(profile: expectedProfile, prepared: prepared)
        }
        return ProvisionedTask(
            taskID: taskID, taskDirectory: taskDirectory, homeDirectory: homeDirectory,
            cgroup: spare ? try? layout.cgroups?.createTaskCgroup(named: taskID) : nil, sandbox: sandbox)
    }

    /// Lets the task user through its directories (0711: entered, not listed; its output files are the server's),
    /// once a create has taken them. chmod, not the mode of mkdir: a umask (0077 in hardened units) must not close
    /// the way.
    func openToTask() throws(RuntimeError) {
        for path in Set([taskDirectory, homeDirectory]).sorted() where chmod(path, 0o711) != 0 {
            throw RuntimeError.system("chmod \(path)", errno)
        }
    }

    /// Removes a spare no task took (at shutdown).
    func discard(_ layout: Layout) {
        sandbox?.prepared.cleanup()
        cgroup?.remove()
        layout.removeDirectories(of: taskID)
    }

    /// Removes what a crash left of the spare the marker names, unless `isStored(id)`: a create took it.
    static func removeCrashedSpare(_ layout: Layout, isStored: (String) -> Bool) {
        defer { unlink(layout.spareMarker) }
        guard let text = readSmallFile(layout.spareMarker) else { return }
        let taskID = text.trimmingCharacters(in: .whitespacesAndNewlines)
        // Only an id this code writes: the marker must never name a path to remove.
        guard taskID.utf8.count == 32, taskID.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
            !isStored(taskID)
        else { return }
        layout.removeDirectories(of: taskID)
    }

    private static func writeMarker(_ path: String, taskID: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let line = taskID + "\n"
        return line.withCString { write(fd, $0, strlen($0)) } == line.utf8.count
    }
}
