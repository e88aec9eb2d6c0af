import MCPHTTP
import TaskRuntime

/// allcanuse-mock's HTTP requests run on the server's event loop, creates among them: it stays awake through a
/// create's spawn. (Declared here, where both modules meet: the HTTP transport knows nothing of tasks.)
extension EventLoopTaskExecutor: WakefulExecutor {}
