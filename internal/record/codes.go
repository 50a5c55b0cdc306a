package record

// StatusCode values follow SCF's function status codes (docs/OPERATIONS.md, "Statuses, retries and dead letters").
const (
	CodeOK                 = 200 // process exited 0
	CodeRunning            = 202 // queued or running
	CodeDiskQuotaExceeded  = 405 // writable layer over its limit (SCF: the instance broke its disk contract)
	CodeEventTooLarge      = 406 // event does not fit the environment limits
	CodeConcurrencyLimit   = 432 // over the function's concurrency (retried)
	CodeTimeLimitReached   = 433 // timeout_s reached
	CodeMemoryLimitReached = 434 // OOM kill
	CodeUserProcessExited  = 439 // process exited non-zero
	CodePullImageFailed    = 444
	CodeContainerInitError = 445 // bad command, missing binary
	CodePullImageTimeOut   = 447
	CodeRequestCanceled    = 499 // terminated by a user
	CodeInternalError      = 500
	CodeNodeLost           = 503 // the worker running it was lost (jobgate's; retried per policy)
)

// CodeName returns SCF's name for a status code, used as the API error Code.
func CodeName(code int) string {
	switch code {
	case CodeOK:
		return "Success"
	case CodeRunning:
		return "Running"
	case CodeDiskQuotaExceeded:
		return "DiskQuotaExceeded"
	case CodeEventTooLarge:
		return "RequestTooLarge"
	case CodeConcurrencyLimit:
		return "ResourceLimitReached"
	case CodeTimeLimitReached:
		return "TimeLimitReached"
	case CodeMemoryLimitReached:
		return "MemoryLimitReached"
	case CodeUserProcessExited:
		return "UserProcessExitWhenRunning"
	case CodePullImageFailed:
		return "PullImageFailed"
	case CodeContainerInitError:
		return "ContainerInitError"
	case CodePullImageTimeOut:
		return "PullImageTimeOut"
	case CodeRequestCanceled:
		return "RequestCanceled"
	case CodeNodeLost:
		return "NodeLost"
	}
	return "InternalError"
}
