import NIOCore

/// A task executor that runs its jobs on one NIO event loop: the loop that reads and writes the server's sockets.
///
/// Hummingbird runs each connection in a child task of its server's task group; on the default executor, every
/// request then crossed threads twice (event loop → task pool for the handler, and back to write the answer), and
/// on a small machine each crossing that wakes a sleeping thread costs about as much as serving the request. With
/// this executor preferred for the whole server (children inherit it, and default actors honour it), a job enqueued
/// from the loop's own thread is appended to its queue without a wake-up. NIO 2.101 makes an event loop a serial
/// executor but not a task executor, hence this adapter.
package final class EventLoopTaskExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    package init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
