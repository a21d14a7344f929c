"""Running a grid: planning and claims, device slots, tasks and their states, the runner a worker
calls, workers, backends, the mailbox and the live progress."""
