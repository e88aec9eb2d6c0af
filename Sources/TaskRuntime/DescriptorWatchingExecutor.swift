/// An executor whose thread can also wait on descriptors of ours (allcanuse-mock's stdio loop): the task supervisor
/// then has it watch the tasks' exits (`TaskSupervisor.handleExits(on:)`), so that an exit wakes the thread that
/// answers its waiters directly instead of the reactor thread, which would then wake it.
public protocol DescriptorWatchingExecutor: TaskExecutor {
    /// Calls `onReadable` on the executor's thread whenever `fd` is readable, until `unwatch(fd)`; if the executor's
    /// thread ends first, it calls `onEnd` once instead, from that thread, as its last act. False: the executor has
    /// ended already, and nothing is watched.
    func watch(
        _ fd: Int32, onReadable: @escaping @Sendable () -> Void, onEnd: @escaping @Sendable () -> Void
    ) -> Bool
    /// Stops watching `fd`: neither closure is called from now on, except one that has begun, or an `onEnd` that the
    /// executor's end took just before. The caller closes it.
    func unwatch(_ fd: Int32)
}
